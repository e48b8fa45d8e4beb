"""The answer checker against real gold data (../shared/data): GSM8K, MATH-500, Math-Verify's cases."""

import json
import math

import pytest

from stepdata import check_answer, extract_answer, load_problems
from stepdata.answers import AnswerCheckConfig, check_answers, parse_plain_number


@pytest.mark.parametrize("split", ["gsm8k:train", "gsm8k:test"])
def test_every_gsm8k_gold_answer_extracts_and_matches(shared_data, split):
    df = load_problems(split, data_dir=shared_data)
    assert len(df) == {"gsm8k:train": 7473, "gsm8k:test": 1319}[split]
    failures = []
    for row in df.itertuples():
        extracted = extract_answer(row.solution)
        number = parse_plain_number(row.answer)
        numeric = None if number is None else str(number.value)
        checks = [
            extracted == row.answer,
            check_answer(row.answer, extracted).match,
            numeric is not None and check_answer(row.answer, numeric).match,
            # and a wrong number is rejected
            numeric is not None and not check_answer(row.answer, str(number.value + 1)).match,
        ]
        if not all(checks):
            failures.append((row.problem_id, row.answer, extracted, numeric, checks))
    assert failures == []


def test_every_math500_gold_matches_its_own_boxed_answer(shared_data):
    df = load_problems("math500", data_dir=shared_data)
    assert len(df) == 500
    config = AnswerCheckConfig(timeout=10.0)
    boxed = [extract_answer(s) for s in df.solution]
    # gold against the extracted \boxed{} content ...
    by_box = check_answers(list(zip(df.answer, boxed)), config)
    # ... and against the whole solution text, which Math-Verify must parse itself.
    by_text = check_answers(list(zip(df.answer, df.solution)), config)
    failures = [
        (pid, gold, box, a.status, b.status)
        for pid, gold, box, a, b in zip(df.problem_id, df.answer, boxed, by_box, by_text)
        if not (a.match and b.match)
    ]
    assert failures == [], f"{len(failures)} MATH-500 answers not matched: {failures[:10]}"


# Rows whose gold/pred in the upstream test file are Python expressions, not literal text:
# rendered here exactly as the upstream test renders them.
RENDERED = {
    ("test_float_precision", 922): (f"{math.sqrt(17):.15f}", "$\\sqrt{17}$"),
}


def test_agreement_with_every_math_verify_case(shared_data):
    rows = [json.loads(line) for line in (shared_data / "mathverify" / "cases.jsonl").open()]
    assert len(rows) == 196
    disagreements = []
    for row in rows:
        settings = row["settings"]
        config = AnswerCheckConfig(
            match_types=tuple(settings["match_types"]),
            precision=settings["precision"],
            strict=settings["strict"],
            allow_set_relation_comp=settings["allow_set_relation_comp"],
            timeout=10.0,
        )
        gold, pred = RENDERED.get((row["test"], row["line"]), (row["gold"], row["pred"]))
        verdict = check_answer(gold, pred, config)
        if verdict.match != row["expected"]:
            disagreements.append((row["test"], row["line"], gold[:60], pred[:60], row["expected"], verdict))
    assert disagreements == []
