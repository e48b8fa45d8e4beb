"""Calculator decoding: what the calculator computes and writes, and the decoding loop on real backends.

The tiny random model never does arithmetic, so its requests end their partial answer with an
expression and "=" (the calculator writes the result before the model goes on); the OpenAI path
runs against the local fake server with a scripted model that writes whole solutions with wrong
results and goes on after whatever result the calculator wrote, so a row needs several rounds.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

import pandas as pd
import pytest
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer, end_like_an_engine
from generation_checks import chat

from stepdata.generation import GenerationRequest, SamplingConfig, make_generator
from stepdata.generation.calculator import format_number, result_before, review
from stepdata.generation.openai_backend import OpenAIGenerator
from stepdata.localize.rules import claims_in

BIG = "9" * 210 + " * " + "9" * 210  # a product of 420 digits: more than the safe evaluator computes


def written_after(text: str) -> str | None:
    """What the calculator writes after the last "=" of ``text`` when the model wrote no number (None: nothing)."""
    result = result_before(text, text.rindex("="))
    return None if result is None else result.written


@pytest.mark.parametrize("text, expected", [
    ("Step 1: 3 + 4 =", " 7"),
    ("Step 1: 3 + 4 * 2 =", " 11"),  # a chain: precedence as written
    ("(3 + 4) * 2 =", " 14"),
    ("3+4=", "7"),  # no space before "=": none after it
    ("1.5 + 2.25 =", " 3.75"),
    ("1,000 + 250 =", " 1250"),
    ("$3 + $4 =", " 7"),
    ("3 x 4 =", " 12"),
    ("6 ÷ 4 =", " 1.5"),
    ("7 - 10 =", " -3"),
    ("10 / 3 =", " 3.3333"),  # does not terminate: 4 places
    ("2 / 3 =", " 0.6667"),
    ("1 / 1024 =", " 0.0009765625"),  # terminates in 10 places: exact
    ("He has 12 + 5 = 17, so 17 - 2 =", " 15"),
    ("3 + 4 = 7 + 1 =", " 8"),  # the next link of a chain
    ("So <<48/2=", "24>>"),  # GSM8K's note: the calculator closes it
    ("x = 5, so x =", None),  # no operator
    ("half of 50 =", None),
    ("x + 3 =", None),  # the tail of an expression with a variable
    ("3 \\times 4 =", None),
    ("2 ** 3 =", None),
    ("1 / 0 + 2 =", None),  # the evaluator refuses: left to the model
    (BIG + " =", None),  # too large for the evaluator: left to the model
    ("a <= 3 + 4 <=", None),
])
def test_what_the_calculator_writes(text, expected):
    assert written_after(text) == expected


def test_numbers_are_written_exactly_or_rounded_to_four_places():
    assert [format_number(Fraction(n, d)) for n, d in [(14, 1), (-3, 1), (15, 4), (-1, 8), (1, 3), (-2, 3),
                                                        (200003, 100000), (3, 2**20), (1, 30000)]] == [
        "14", "-3", "3.75", "-0.125", "0.3333", "-0.6667", "2.00003", "0.0000", "0.0000"]
    assert format_number(Fraction(2000002, 666667)) == "3.0000"  # a rounding still says it is one
    assert format_number(Fraction(-1, 30000)) == "0.0000"


def test_the_models_own_result_stands_when_its_value_is_right():
    result = result_before("3 + 4 =", 6)
    assert [review(result, after).agrees for after in (" 7.", " 7.00 apples", "7", " $7", " 1,200")] == [
        True, True, True, True, False]
    assert review(result, " 8 apples") == review(result, " 8").__class__(False, keep=1, write="7")
    assert review(result, " $75").keep == 2  # its spacing and dollar sign stand, the number is replaced
    assert review(result, " seven").write == " 7" and review(result, "").write == " 7"
    assert not review(result, " 7.5").agrees and not review(result, " 72").agrees
    third = result_before("10 / 3 =", 7)
    assert review(third, " 3.3333").agrees and not review(third, " 3.33").agrees
    note = result_before("<<48/2=", 6)
    assert review(note, "24>>24").agrees and review(note, "25>>").write == "24>>"


# -- transformers: a real tiny model --------------------------------------------------------------------

PARTIALS = {  # request id -> (partial answer, what the calculator writes first: None = nothing)
    "chain": ("Step 1: 3 + 4 * 2 =", "11"),
    "decimal": ("Step 1: 1.5 + 2.25 =", "3.75"),
    "third": ("Step 1: 10 / 3 =", "3.3333"),
    "note": ("Step 1: So <<48/2=", "24>>"),
    "prose": ("Step 1: Let x =", None),
    "big": ("Step 1: " + BIG + " =", None),
}


def requests():
    return [chat(key, "Ada has 3 bags of 4 marbles and 2 more. How many marbles?", partial)
            for key, (partial, _) in PARTIALS.items()]


def starts_with_result(text: str, result: str) -> bool:
    if result.endswith(">>"):
        return text.startswith(result)
    return re.match(r"[ \t]{0,3}\$?" + re.escape(result) + r"(?!\d|\.\d)", text) is not None


def check_calculator_rows(plain, calculated, max_tokens):
    """Each row: the exact result first (or, with nothing to compute, the plain row itself), every claim the
    rules can read in the text true, and its tokens counted."""
    for request, before, after in zip(requests(), plain, calculated):
        partial, result = PARTIALS[request.request_id]
        assert before.ok and after.ok
        for free, fixed in zip(before.completions, after.completions):
            if result is None:
                assert (fixed.text, fixed.calculator_calls, fixed.calculator_changed) == (free.text, 0, 0)
                assert fixed.token_ids == free.token_ids
                continue
            assert starts_with_result(fixed.text, result), (request.request_id, fixed.text)
            assert fixed.calculator_calls >= 1 and fixed.calculator_changed <= fixed.calculator_calls
            if fixed.calculator_changed:  # what the model wrote itself (same seed) did not say it
                assert not starts_with_result(free.text, result) and fixed.text != free.text
            else:
                assert fixed.text == free.text
            assert all(claim.holds for claim in claims_in(partial + fixed.text)), fixed.text
            # every token generated counts (a discarded tail too); the kept text stays within the budget
            assert free.completion_tokens <= fixed.completion_tokens <= max_tokens * (1 + fixed.calculator_changed)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with make_generator("hf", str(tiny_model_dir), batch_size=8) as generator:
        yield generator


@requires_torch
def test_hf_every_result_is_the_calculators(tiny):
    sampling = SamplingConfig(n=2, temperature=0.8, max_tokens=24, seed=3)
    plain = tiny.generate(requests(), sampling, progress=False)
    calculated = tiny.generate(requests(), dataclasses.replace(sampling, calculator=True), progress=False)
    check_calculator_rows(plain, calculated, 24)
    assert any(c.calculator_changed for r in calculated for c in r.completions)
    assert "calculator:" in " ".join(tiny.last_stats.notes)
    # samples are the same whether a row is generated in the batch or alone (continuations included)
    alone = [tiny.generate([request], SamplingConfig(n=2, temperature=0.8, max_tokens=24, seed=3, calculator=True),
                           progress=False)[0] for request in requests()[:4]]
    for together, single in zip(calculated, alone):
        assert [(c.text, c.calculator_calls, c.calculator_changed, c.completion_tokens) for c in together.completions] \
            == [(c.text, c.calculator_calls, c.calculator_changed, c.completion_tokens) for c in single.completions]


@requires_torch
def test_hf_an_answered_chat_is_continued_as_a_partial_answer(tiny):
    """A raw prompt ending in "3 + 4 =" and a chat the model answers (its own "=" gets results too)."""
    raw = tiny.generate([GenerationRequest.raw("r", "Ada: 3 + 4 =")],
                        SamplingConfig(temperature=0, max_tokens=12, calculator=True), progress=False)[0]
    assert starts_with_result(raw.completions[0].text, "7") and raw.completions[0].calculator_calls == 1
    answered = tiny.generate([chat("a", "What is 3 + 4?")], SamplingConfig(temperature=0, max_tokens=12,
                                                                           calculator=True), progress=False)[0]
    plain = tiny.generate([chat("a", "What is 3 + 4?")], SamplingConfig(temperature=0, max_tokens=12),
                          progress=False)[0]
    assert answered.ok and answered.completions[0].calculator_calls == 0  # nothing to compute: as plain decoding
    assert answered.completions[0].text == plain.completions[0].text


def test_logprobs_and_stops_at_a_result_with_the_calculator_are_refused():
    with pytest.raises(ValueError, match="logprobs with the calculator"):
        SamplingConfig(logprobs=True, calculator=True)
    for stop in ("=", "4 =", "x = "):
        with pytest.raises(ValueError, match="may not contain '='"):
            SamplingConfig(stop=(stop,), calculator=True)
    assert SamplingConfig(stop=("\nStep",), calculator=True).stop == ("\nStep",)


# -- OpenAI-compatible path: several rounds per row -----------------------------------------------------

PARTIAL = "Let's think step by step.\nStep 1:"
WRONG = (" 3 + 4 * 2 = 14.\nStep 2: 14 - 3 = 12.\nStep 3: 12 / 8 = 1.\nStep 4: 10 / 3 = 3.33, so <<48/2=20>>20 "
         "are left and x = 7.\nStep 5: " + BIG + " = 5.\nThe answer is 11.")
FIXED = (" 3 + 4 * 2 = 11.\nStep 2: 14 - 3 = 11.\nStep 3: 12 / 8 = 1.5.\nStep 4: 10 / 3 = 3.3333, so <<48/2=24>>20 "
         "are left and x = 7.\nStep 5: " + BIG + " = 5.\nThe answer is 11.")
RIGHT = (" 3 + 4 * 2 = 11.\nStep 2: 1.5 + 2.25 = 3.75 and 10 / 4 = 2.50.\nStep 3: <<48/2=24>>24 left; "
         "1,000 + 200 = 1,200.\nThe answer is 24.")


NUMBER_WRITTEN = re.compile(r"[ \t]*\$?-?[\d,.]*\d(?:>>)?")


def scripted_model(scripts: dict[str, str]):
    """A model that writes its script for the question, and goes on with it from any text it is given: after
    its k-th "=" the script goes on after the number it has there, whatever number the text has instead."""
    def reply(body: dict, index: int) -> dict:
        messages = body["messages"]
        script = scripts[messages[-2]["content"]]
        written = messages[-1]["content"][len(PARTIAL):]
        rest = script
        if "=" in written:
            equals = [m.start() for m in re.finditer("=", script)][written.count("=") - 1]
            rest, tail = script[equals + 1:], written[written.rindex("=") + 1:]
            if tail:  # a result (the model's or the calculator's) and maybe more of the line: the script goes on
                rest = rest[NUMBER_WRITTEN.match(rest).end():]
                more = tail[NUMBER_WRITTEN.match(tail).end():]
                assert rest.startswith(more), (rest, more)
                rest = rest[len(more):]
        elif written:
            assert script.startswith(written), (script, written)
            rest = script[len(written):]
        text, finish_reason, stop_reason = end_like_an_engine(rest, body)
        return {"text": text, "finish_reason": finish_reason, "stop_reason": stop_reason}

    return reply


def ask(question: str):
    return chat(question, question, PARTIAL)


def test_openai_rows_are_fixed_over_several_rounds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    model = scripted_model({"wrong": WRONG, "right": RIGHT, "short": WRONG, "stepwise": WRONG})
    with FaultyOpenAIServer(reply_body=model, send_stop_reason=True, tokens_per_choice=5) as server:
        generator = OpenAIGenerator("m", base_url=server.base_url, max_concurrency=4)
        wrong, right = generator.generate([ask("wrong"), ask("right")],
                                          SamplingConfig(temperature=0.5, max_tokens=200, seed=1, calculator=True),
                                          progress=False)
        served = {key: sum(1 for s in server.served if s["key"] == key) for key in ("wrong", "right")}
        (fixed,) = wrong.completions
        assert fixed.text == FIXED  # every result the calculator's; prose and the too-large product left as written
        assert (fixed.calculator_calls, fixed.calculator_changed) == (5, 5)
        assert (fixed.finish_reason, fixed.stop_reason) == ("stop", "eos")
        # a segment up to each "=" after an expression, and one more per fix (what the model wrote after a wrong
        # result, up to its next "=", is thrown away): 12 requests, five tokens each
        assert served == {"wrong": 12, "right": 6}
        assert fixed.completion_tokens == 5 * 12 == wrong.usage_completion_tokens
        (kept,) = right.completions  # all right: the model's text as it wrote it ("2.50", "1,200")
        assert (kept.text, kept.calculator_calls, kept.calculator_changed) == (RIGHT, 5, 0)
        seeds = [s["seed"] for s in server.served if s["key"] == "wrong"]
        assert len(set(seeds)) == 12  # each continuation has a seed of its own

        # the budget is the row's: cut at max_tokens (a word is a token here), the row ends as "length"
        (short,) = generator.generate([ask("short")], SamplingConfig(max_tokens=10, seed=1, calculator=True),
                                      progress=False)[0].completions
        assert short.text.startswith(" 3 + 4 * 2 = 11.") and short.finish_reason == "length"
        assert short.stop_reason == "length" and short.calculator_changed >= 1
        # a stop string ends the row where the model's continuation reaches it
        (step,) = generator.generate([ask("stepwise")], SamplingConfig(max_tokens=50, seed=1, stop=("\nStep",),
                                                                        calculator=True), progress=False)[0].completions
        assert (step.text, step.stop_reason, step.calculator_changed) == (" 3 + 4 * 2 = 11.", "\nStep", 1)


def test_openai_a_failed_continuation_fails_the_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    sampling = SamplingConfig(max_tokens=200, calculator=True)
    with FaultyOpenAIServer(reply_body=scripted_model({"wrong": WRONG}), script={"wrong": ["ok", "400"]},
                            send_stop_reason=True) as server:
        (result,) = OpenAIGenerator("m", base_url=server.base_url).generate([ask("wrong")], sampling, progress=False)
    assert not result.ok and result.completions == [] and "calculator continuation wrong#calc0.1" in result.error
    # a server that does not say which stop ended a text: a stop at "=" cannot be told from the end
    with FaultyOpenAIServer(reply_body=scripted_model({"wrong": WRONG})) as server:
        (result,) = OpenAIGenerator("m", base_url=server.base_url).generate([ask("wrong")], sampling, progress=False)
    assert not result.ok and "does not say which stop ended the text" in result.error


# -- the stages: settings, recorded config, columns and summaries -----------------------------------------

def run_stage(block, table, out):
    from stepdata.pipeline.executor import LocalExecutor, RunOptions

    return LocalExecutor(RunOptions(out=str(out), batch_size=4, progress=False), echo=lambda line: None,
                         environ={}).run(block, table)


@pytest.fixture(scope="module")
def expression_template(tmp_path_factory):
    """A template whose partial answer ends with an expression and "=", so every sample gets a result."""
    path = tmp_path_factory.mktemp("templates") / "expression.txt"
    path.write_text("[user]\n{{question}}\n[assistant]\nLet's think step by step.\nStep 1: 3 + 4 * 2 =")
    return str(path)


@requires_torch
def test_sample_and_eval_record_the_calculator(tiny, tmp_path, expression_template):
    import json

    from stepdata import make_problems, read_table
    from stepdata.evaluate import evaluate_model, write_results
    from stepdata.pipeline import SampleConfig, SampleStage
    from stepdata.pipeline.run import ConfigChanged

    problems = make_problems(3, seed=0)
    config = SampleConfig(template=expression_template, n=2, max_tokens=8, calculator=True)
    result = run_stage(SampleStage(tiny, config), problems, tmp_path / "rollouts.parquet")
    rollouts = read_table(tmp_path / "rollouts.parquet")
    assert rollouts["calculator_calls"].ge(1).all() and (rollouts["calculator_changed"] <= rollouts["calculator_calls"]).all()
    assert all(starts_with_result(text, "11") for text in rollouts["completion"])
    assert result.stats["calculator"] == {"calls": int(rollouts["calculator_calls"].sum()),
                                          "changed": int(rollouts["calculator_changed"].sum()),
                                          "rows_changed": int(rollouts["calculator_changed"].gt(0).sum()), "rows": 6}
    assert rollouts.attrs["stepdata"]["config"]["calculator"] is True
    with pytest.raises(ConfigChanged, match=r"calculator: true -> \(not set\)"):  # a resume without it is refused
        run_stage(SampleStage(tiny, SampleConfig(template=expression_template, n=2, max_tokens=8)), problems,
                  tmp_path / "rollouts.parquet")
    run_stage(SampleStage(tiny, SampleConfig(template=expression_template, n=2, max_tokens=8)), problems,
              tmp_path / "plain.parquet")
    plain = read_table(tmp_path / "plain.parquet")
    assert "calculator" not in plain.attrs["stepdata"]["config"]  # off: recorded as before there was a calculator
    assert plain["calculator_calls"].isna().all()

    scored = evaluate_model(tiny, problems, template=expression_template,
                            sampling=SamplingConfig(temperature=0, max_tokens=8, calculator=True))
    assert scored.calculator_calls == int(scored.rows["calculator_calls"].sum()) >= 3
    report = json.loads(write_results([scored], tmp_path / "eval").read_text())
    assert report["results"][0]["calculator_calls"] == scored.calculator_calls
    assert report["results"][0]["calculator_changed"] == int(scored.rows["calculator_changed"].sum())


@requires_torch
def test_pair_stages_and_solve_count_the_calculator(tiny, tmp_path, expression_template):
    import json

    from stepdata import make_problems, read_table
    from stepdata.localize import Solution, make_localizer
    from stepdata.pipeline.rectify import RectifyConfig, RectifyStage
    from stepdata.pipeline.synthesize import SynthesizeConfig, SynthesizeStage
    from stepdata.solve import SolveConfig, SolveStage

    problems = make_problems(2, seed=0)
    localized = pd.DataFrame([{"rollout_id": f"{p.problem_id}:0", "problem_id": p.problem_id, "completion": p.solution,
                           "steps": [p.solution], "error_step": 0, "status": "error", "method": "exact",
                           "correct": False, "error": None, "prompt": None} for p in problems.itertuples()])
    rectify = RectifyStage(tiny, problems, RectifyConfig(template=expression_template, n=2, max_tokens=6,
                                                         verify="none", calculator=True))
    run_stage(rectify, localized, tmp_path / "stepdpo.parquet")
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet")
    assert attempts["calculator_calls"].ge(2).all()  # each continuation starts after "3 + 4 * 2 ="
    synthesize = SynthesizeStage(tiny, problems, SynthesizeConfig(rounds=1, cuts=1, max_step_tokens=6, verify="none",
                                                                   calculator=True))
    run_stage(synthesize, problems, tmp_path / "scdpo.parquet")
    units = read_table(tmp_path / "scdpo.attempts.parquet")
    assert units["calculator_calls"].notna().all() and units["calculator_calls"].ge(0).all()

    rollouts = make_localizer("rollouts", generator=tiny, rollouts=2, max_tokens=6, template=expression_template,
                              calculator=True)
    (found,) = rollouts.locate([Solution("s", "p", "How many?", ["Step 1: 5 apples.\n", "Step 2: 5."], answer="9")])
    assert found.evidence["calculator_calls"] >= 2 and "calculator:" in found.note  # from prefix 0: after "="

    solve = SolveStage(tiny, SolveConfig(strategy="greedy", verifier="none", template=expression_template,
                                         max_tokens=6, calculator=True))
    result = run_stage(solve, problems, tmp_path / "solved.parquet")
    solved = read_table(tmp_path / "solved.parquet")
    assert solved["calculator_calls"].ge(1).all()
    assert [json.loads(a)[0]["calculator_calls"] for a in solved["attempts"]] == solved["calculator_calls"].tolist()
    assert result.stats["calculator"]["calls"] == int(solved["calculator_calls"].sum())


def test_the_calculator_is_refused_where_nothing_samples_from_the_policy():
    from stepdata.pipeline.localize import LocalizeConfig, LocalizeStage

    with pytest.raises(ValueError, match="--calculator is for a localizer that samples from the policy"):
        LocalizeStage(config=LocalizeConfig(method="rules", calculator=True))
    assert LocalizeConfig(method="rollouts", calculator=True).recorded()["calculator"] is True
    assert "calculator" not in LocalizeConfig(method="rollouts").recorded()


@pytest.mark.parametrize("command", ["sample", "localize", "rectify", "synthesize", "solve", "eval", "generate"])
def test_every_command_that_generates_has_the_calculator_flag(command):
    from click.testing import CliRunner

    from cli import main

    shown = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert shown.exit_code == 0 and "--calculator" in shown.output and "calculator writes the exact" in " ".join(
        shown.output.split())


def test_a_recipe_step_takes_the_calculator_setting():
    from stepdata.pipeline.rectify import RectifyConfig
    from stepdata.settings import config_from_mapping

    assert config_from_mapping(RectifyConfig, {"calculator": "yes"}).calculator is True
