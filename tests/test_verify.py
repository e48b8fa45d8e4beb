"""Answer equivalence: fast path, Math-Verify path, hard time bounds, and no eval of model text."""

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stepdata import answers_match, check_answer
from stepdata.answers import AnswerCheckConfig, check_answers, parse_plain_number
from stepdata.answers.bounded import BoundedPool
from stepdata.answers.verify import WORKER_MODULE, as_math_verify_text

FAST = AnswerCheckConfig(timeout=3.0)


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("18", "18", True),
        ("18", "$18.00", True),
        ("18", "18 dollars", True),
        ("1,000", "1000", True),
        ("1000", "1,000.0", True),
        ("-5", "-5.0", True),
        ("0.5", "\\frac{1}{2}", True),
        ("3/4", "0.75", True),
        ("1/3", "0.333333", True),  # a decimal against a fraction is rounded
        ("18", "18.0000001", False),  # a decimal against an integer must be exact
        ("28%", "0.28", True),
        ("28", "28%", True),
        ("0.28", "28", False),
        ("18", "17", False),
        ("18", "180", False),
    ],
)
def test_fast_path_verdicts(gold, pred, expected):
    verdict = check_answer(gold, pred, FAST)
    assert verdict.match is expected
    assert verdict.path in ("fast", "exact")


@pytest.mark.parametrize("text", ["1,22", "0,111", "1 000", "1e5", "x", "2 pi", "12 and 13", "5 x", "(1, 2)", ""])
def test_ambiguous_spellings_are_not_plain_numbers(text):
    assert parse_plain_number(text) is None


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("[0,1)", "(0,1)", False),
        ("\\text{Evelyn}", "Evelyn", True),
        ("y", "x", False),
        ("\\pi", "pi", False),
        ("x = 2", "2", True),
        ("2", "x = 2", True),
    ],
)
def test_math_verify_path(gold, pred, expected):
    verdict = check_answer(gold, pred, FAST)
    assert verdict.path == "math-verify"
    assert verdict.match is expected, verdict


def test_gold_first_asymmetry_is_preserved():
    # Math-Verify reads a gold interval loosely only against a set-like prediction.
    assert check_answer("(1, 2)", "1 < x < 2", AnswerCheckConfig(timeout=3, allow_set_relation_comp=False)).match is False


def test_missing_answers_are_verdicts_not_errors():
    assert check_answer("5", None).status == "no_answer"
    assert check_answer(None, "5").status == "bad_gold"
    assert check_answer("5", "   ").status == "no_answer"
    assert check_answer(float("nan"), "5").status == "bad_gold"  # pandas' missing value is missing
    assert check_answer("5", float("nan")).status == "no_answer"
    assert check_answer("5", "unparseable %%% text", FAST).match is False


def test_wrapping_for_math_verify():
    assert as_math_verify_text("\\frac{1}{2}") == "$\\frac{1}{2}$"
    assert as_math_verify_text("\\$32,\\!348") == "$\\$32,\\!348$"
    assert as_math_verify_text("18 dollars") == "18 dollars"
    assert as_math_verify_text("$5$") == "$5$"


PATHOLOGICAL = [
    "\\boxed{9^{9^{9^{9}}}}",
    "9^{9^{9^{9^{9}}}}",
    "1" * 100_000,
    "\\frac{" * 2000 + "1",
    "{" * 10_000,
]


@pytest.mark.parametrize("pred", PATHOLOGICAL, ids=["tower", "tower5", "100kB", "unbalanced-frac", "braces"])
def test_pathological_input_returns_within_the_bound(pred):
    config = AnswerCheckConfig(timeout=2.0, max_chars=200_000)
    start = time.monotonic()
    verdict = check_answer("9", pred, config)
    elapsed = time.monotonic() - start
    assert verdict.match is False
    assert elapsed < config.timeout + 3.0, f"took {elapsed:.1f}s ({verdict})"


def test_too_long_answers_are_refused_quickly():
    verdict = check_answer("1", "1" * 30_000)
    assert verdict.status == "too_long"


def test_timeout_is_a_recorded_verdict_and_the_pool_recovers():
    pool = BoundedPool(max_workers=1, preload=[WORKER_MODULE])
    try:
        config = AnswerCheckConfig(timeout=1.5)
        slow = check_answer("9", "9^{9^{9^{9^{9}}}}", config, pool=pool)
        assert slow.status == "timeout"
        assert pool.timeouts == 1
        after = check_answer("\\sqrt{4}", "2", config, pool=pool)
        assert after.match and after.path == "math-verify"
    finally:
        pool.close()


def test_bound_holds_in_threads():
    config = AnswerCheckConfig(timeout=2.0)
    pairs = [("9", "9^{9^{9^{9}}}"), ("\\frac{1}{2}", "0.5\\cdot 1"), ("x+1", "1+x"), ("3", "\\sqrt{9}")] * 2
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as executor:
        verdicts = list(executor.map(lambda gp: check_answer(gp[0], gp[1], config), pairs))
    assert time.monotonic() - start < 30
    assert [v.match for v in verdicts] == [False, True, True, True] * 2
    assert threading.current_thread() is threading.main_thread()


def _check_in_child(pred: str) -> tuple[bool, str]:
    verdict = check_answer("9", pred, AnswerCheckConfig(timeout=2.0))
    return verdict.match, verdict.status


def test_bound_holds_in_daemonic_worker_processes():
    # multiprocessing.Pool workers are daemonic and may not use multiprocessing children.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_check_in_child, ["9^{9^{9^{9}}}", "\\sqrt{81}"], chunksize=1)
    assert results[0] == (False, "timeout")
    assert results[1] == (True, "match")


def test_model_text_is_never_evaluated(tmp_path: Path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"1 + __import__('os').system('touch {marker}')",
        f"$\\boxed{{__import__('os').system('touch {marker}')}}$",
        f"The answer is (lambda: __import__('os').system('touch {marker}'))()",
    ]
    for payload in payloads:
        for config in (AnswerCheckConfig(timeout=3), AnswerCheckConfig(timeout=3, match_types=("expr",))):
            check_answer("0", payload, config)
            check_answer(payload, "0", config)
    assert not marker.exists()


def test_check_answers_batch_matches_single_checks():
    pairs = [("1/2", "0.5"), ("\\sqrt{2}", "2^{1/2}"), ("7", "8"), ("x", "y")]
    assert [v.match for v in check_answers(pairs, FAST)] == [True, True, False, False]
    assert answers_match("12", "12 apples")
