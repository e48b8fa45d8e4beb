"""Pair datasets: filters with reasons, split by problem, TRL / Step-DPO / JSONL export, stats, CLI."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli import main
from stepdata import read_metadata, read_table, write_table
from stepdata.pairs.build import make_pair, prompt_messages_of
from stepdata.pairs.export import (
    STEP_DPO_COLUMNS,
    ExportError,
    read_dropped,
    step_dpo_table,
    trl_table,
)
from stepdata.pairs.filters import (
    DROP_COLUMNS,
    FilterConfig,
    apply_filters,
    drop_near_duplicates,
    drop_too_long,
    normalize_text,
)
from stepdata.pairs.split import split_by_problem
from stepdata.pairs.stats import pairs_stats, render_stats

PARTIAL = "Let's think step by step.\nStep 1:"


def chat(question: str, partial: str | None = PARTIAL) -> str:
    messages = [{"role": "user", "content": question}]
    if partial is not None:
        messages.append({"role": "assistant", "content": partial})
    return prompt_messages_of(messages)


def pair(problem_id="p1", chosen="Step 2: 7 * 2 = 14.\n", rejected="Step 2: 7 * 2 = 15.\n", *,
         prefix=(" 3 + 4 = 7.\n",), kind="step-dpo", error_step=1, question=None, **kwargs):
    question = question or f"Question {problem_id}: Ada has 3 and 4 more, doubled?"
    kwargs.setdefault("prompt_messages", chat(question))
    return make_pair(problem_id=problem_id, question=question, answer="14", prefix_steps=list(prefix),
                     chosen=chosen, rejected=rejected, kind=kind, error_step=error_step, **kwargs)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template, "the tiny model must have a chat template for these tests"
    return tok


# --- export -----------------------------------------------------------------------------------------


def test_trl_prompt_plus_chosen_is_the_rendered_chat_continued(tokenizer):
    rows = [
        pair("p1", prefix=(" 3 + 4 = 7.\n", "Step 2: 7 * 2 = 14.\n"), chosen="Step 3: 14 - 1 = 13.\n",
             rejected="Step 3: 14 - 1 = 12.\n", error_step=2, chosen_rest="Step 4: The answer is 13.",
             rejected_rest="Step 4: The answer is 12."),
        pair("p2", prefix=(), chosen=" 5 + 5 = 10.\nThe answer is 10.", rejected=" 5 + 5 = 11.\nThe answer is 11.",
             kind="dpo", error_step=0),
        # no partial answer: the chat ends with the user and the prompt is the generation prompt
        pair("p3", prefix=(), chosen="It is 4.", rejected="It is 5.", kind="dpo", error_step=0,
             prompt_messages=chat("What is 2 + 2?", partial=None)),
    ]
    df = pd.DataFrame(rows)
    out = trl_table(df, tokenizer, extra_columns=["chosen_ends_solution"]).to_pandas()
    assert list(out.columns) == ["prompt", "chosen", "rejected", "chosen_ends_solution"]
    rests = ["Step 4: The answer is 13.", "", ""]
    for row, rest, exported in zip(rows, rests, out.itertuples()):
        user_only = [m for m in json.loads(row["prompt_messages"]) if m["role"] == "user"]
        # independent of pair_prompt_text: the template's generation prompt, then the assistant text verbatim
        head = tokenizer.apply_chat_template(user_only, tokenize=False, add_generation_prompt=True)
        assert exported.prompt + exported.chosen + rest == head + row["chosen_full"]
        assert exported.rejected == row["rejected"] and exported.chosen == row["chosen"]
    # the prefix's trailing newline survives the template (templates strip message content)
    assert out.prompt[0].endswith("Step 2: 7 * 2 = 14.\n")
    assert out.prompt[0].startswith("<|im_start|>user\n") and "<|im_end|>" not in out.prompt[0].split("assistant\n")[1]
    assert out.prompt[2].endswith("<|im_start|>assistant\n")
    assert out.chosen_ends_solution.tolist() == [False, True, True]
    # no EOS is added to any text
    assert not any(tokenizer.eos_token in t for t in [*out.chosen, *out.rejected])


def test_step_dpo_columns_are_exact_and_mean_what_step_dpo_means():
    rows = [pair("p1", chosen_rest="Step 3: The answer is 14.", source="embedded"),
            pair("p2", prefix=(), chosen=" 2 + 2 = 4.\n", rejected=" 2 + 2 = 5.\n", error_step=0)]
    out = step_dpo_table(pd.DataFrame(rows)).to_pylist()
    assert list(out[0]) == ["dataset", "prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen",
                            "full_rejected", "answer"] == list(STEP_DPO_COLUMNS)
    first = out[0]
    assert first["dataset"] == "embedded" and out[1]["dataset"] is None
    assert first["prompt"] == rows[0]["question"]  # the bare question: Step-DPO's train.py adds its template
    assert first["initial_reason_steps"] == PARTIAL + " 3 + 4 = 7.\n"
    assert first["chosen"] == "Step 2: 7 * 2 = 14.\n" and first["rejected"] == "Step 2: 7 * 2 = 15.\n"
    assert first["full_chosen"] == "Step 2: 7 * 2 = 14.\nStep 3: The answer is 14."
    assert first["initial_reason_steps"] + first["full_chosen"] == rows[0]["chosen_full"]
    assert first["initial_reason_steps"] + first["full_rejected"] == rows[0]["rejected_full"]
    assert out[1]["initial_reason_steps"] == PARTIAL and first["answer"] == "14"


def test_step_dpo_refuses_a_row_whose_full_text_does_not_extend_its_prefix():
    row = pair("p1")
    row["chosen_full"] = "something else entirely"
    with pytest.raises(ExportError, match=r"pair 'p1:step-dpo:[0-9a-f]+' \(input row 0\): field 'chosen_full'"):
        step_dpo_table(pd.DataFrame([row]))


# --- filters ----------------------------------------------------------------------------------------


def test_normalisation_never_merges_different_numbers():
    assert normalize_text("Step 2: 7 * 2 = 14.\n") == normalize_text("step 2:  7*2 = 14")
    assert normalize_text("So x = 1.5, done.") != normalize_text("So x = 15, done.")
    assert normalize_text("1 2") != normalize_text("12")
    assert normalize_text("3 - 1 = 2") != normalize_text("3 + 1 = 2")
    base = pair("p1", chosen="Step 2: So the total is 7 * 2 = 14 apples.\n",
                rejected="Step 2: So the total is 7 * 2 = 15 apples.\n")
    only_number_differs = pair("p1", chosen="Step 2: So the total is 7 * 2 = 16 apples.\n",
                               rejected="Step 2: So the total is 7 * 2 = 15 apples.\n")
    kept, dropped = drop_near_duplicates(pd.DataFrame([base, only_number_differs]), threshold=0.5)
    assert len(kept) == 2 and dropped.empty


def test_every_filter_records_why_and_keeps_the_first():
    base = pair("p1", chosen="Step 2: So the total is 7 * 2 = 14 apples.\n",
                rejected="Step 2: So the total is 7 * 2 = 15 apples.\n")
    rows = [
        base,
        pair("p1", chosen="  \n", rejected="Step 2: x"),                                   # 1 empty
        pair("p1", chosen="Step 2: 9 = 9.\n", rejected="Step 2:  9 = 9.\n"),              # 2 identical
        pair("p1", chosen="Step 2: " + "7 " * 200, rejected="Step 2: 8.\n"),              # 3 length
        dict(base),                                                                        # 4 exact dup
        pair("p1", chosen="step 2: so the total is 7*2 = 14 apples\n",
             rejected="Step 2: So, the total is 7 * 2 = 15 apples!\n"),                   # 5 near (normalised)
        pair("p1", chosen="Step 2: So the total is 7 * 2 = 14 apples in all.\n",
             rejected="Step 2: So the total is 7 * 2 = 15 apples.\n"),                    # 6 near (jaccard)
        pair("p2", chosen="Step 2: So the total is 7 * 2 = 14 apples.\n",
             rejected="Step 2: So the total is 7 * 2 = 15 apples.\n"),                    # other problem: kept
        pair("p1", prefix=(" 3 + 4 = 7!\n",), chosen=base["chosen"], rejected=base["rejected"]),  # other prefix
    ]
    df = pd.DataFrame(rows)
    kept, dropped = apply_filters(df, FilterConfig(max_chars=300, near_dup_threshold=0.8))
    assert kept.index.tolist() == [0, 7, 8]
    assert list(dropped.columns) == [*df.columns, *DROP_COLUMNS]
    why = dropped.set_index("input_row")
    assert why.loc[1, "drop_filter"] == "empty" and why.loc[1, "drop_reason"] == "chosen is empty"
    assert why.loc[2, "drop_filter"] == "identical"
    assert why.loc[3, "drop_filter"] == "length" and why.loc[3, "drop_reason"] == "chosen over 300 chars"
    assert "chosen has 408 chars (max 300)" in why.loc[3, "drop_detail"]
    assert why.loc[4, "drop_filter"] == "exact-dup" and why.loc[4, "duplicate_of"] == base["pair_id"]
    assert why.loc[5, "drop_filter"] == "near-dup" and why.loc[5, "drop_reason"] == "near duplicate: normalised text equal"
    assert why.loc[6, "drop_reason"] == "near duplicate: 3-gram jaccard >= 0.8"
    assert why.loc[6, "duplicate_of"] == base["pair_id"] and "input row 0" in why.loc[6, "drop_detail"]
    # without the threshold the Jaccard near duplicate stays; without dedup both duplicates stay
    assert 6 in apply_filters(df, FilterConfig(max_chars=300))[0].index
    assert {4, 5, 6} <= set(apply_filters(df, FilterConfig(max_chars=300, dedup=False))[0].index)


def test_token_length_limit_uses_the_models_tokenizer(tokenizer):
    long_side = "Step 2: " + " ".join(str(n) for n in range(40)) + "\n"
    df = pd.DataFrame([pair("p1"), pair("p2", rejected=long_side)])
    limit = len(tokenizer(long_side, add_special_tokens=False)["input_ids"]) - 1
    kept, dropped = drop_too_long(df, max_tokens=limit, tokenizer=tokenizer)
    assert kept.index.tolist() == [0]
    assert dropped.iloc[0]["drop_reason"] == f"rejected over {limit} tokens"
    with pytest.raises(ValueError, match="needs a tokenizer"):
        drop_too_long(df, max_tokens=5)


# --- split ------------------------------------------------------------------------------------------


def test_split_by_problem_is_disjoint_deterministic_and_stable_as_data_grows():
    rows = [pair(f"prob-{i}", chosen=f"Step 2: {i} * 2 = {2 * i}.\n", rejected=f"Step 2: {i} * 2 = {2 * i + 1}.\n",
                 prefix=(f" step {j}.\n",)) for i in range(80) for j in range(1 + i % 3)]
    df = pd.DataFrame(rows)
    train, test = split_by_problem(df, 0.25, seed=7)
    assert set(train.problem_id).isdisjoint(test.problem_id)
    assert len(train) + len(test) == len(df) and set(train.problem_id) | set(test.problem_id) == set(df.problem_id)
    assert 8 <= test.problem_id.nunique() <= 32  # about a quarter of 80 problems
    _, again_test = split_by_problem(df.sample(frac=1, random_state=1), 0.25, seed=7)
    assert set(again_test.problem_id) == set(test.problem_id)  # order does not matter
    grown = pd.concat([df, pd.DataFrame([pair(f"new-{i}") for i in range(40)])])
    _, grown_test = split_by_problem(grown, 0.25, seed=7)
    assert set(grown_test.problem_id) & set(df.problem_id) == set(test.problem_id)
    _, other_seed = split_by_problem(df, 0.25, seed=8)
    assert set(other_seed.problem_id) != set(test.problem_id)
    assert split_by_problem(df, 0.0)[1].empty


# --- stats ------------------------------------------------------------------------------------------


def test_stats_counts_and_histograms():
    rows = [
        pair("p1", error_step=0, source="gsm8k", chosen_verified=True),
        pair("p1", chosen="Step 2: a.\n", error_step=0, source="gsm8k", chosen_verified=False),
        pair("p1", chosen="Step 2: b.\n", error_step=1, source="embedded", chosen_verified=True),
        pair("p2", error_step=3, kind="scdpo", source="embedded"),
        pair("p3", chosen="x" * 40, error_step=None, kind="dpo", source="embedded"),
    ]
    df = pd.DataFrame(rows)
    dropped = apply_filters(pd.DataFrame([*rows, rows[0], pair("p4", chosen=" ")]))[1]
    stats = pairs_stats(df, dropped)
    assert stats["pairs"] == 5 and stats["problems"] == 3
    assert stats["by_kind"] == {"step-dpo": 3, "dpo": 1, "scdpo": 1}
    assert stats["by_source"] == {"embedded": 3, "gsm8k": 2}
    assert stats["error_step_histogram"] == {"0": 2, "1": 1, "3": 1, "null": 1}
    assert stats["pairs_per_problem"]["histogram"] == {"1": 2, "3": 1}
    assert stats["pairs_per_problem"]["max"] == 3 and stats["pairs_per_problem"]["median"] == 1.0
    assert stats["chosen_chars"]["max"] == 40 and stats["chosen_chars"]["min"] == 11
    assert stats["chosen_verified"]["counts"] == {"true": 2, "false": 1, "null": 2}
    assert stats["chosen_verified"]["shares"]["true"] == 0.4
    # the pair whose chosen step failed its check is left out first, by the "unverified" filter
    assert stats["dropped"] == {"total": 3, "by_filter": {"unverified": 1, "empty": 1, "exact-dup": 1},
                                "by_reason": {"unverified": {"chosen failed its check": 1},
                                              "empty": {"chosen is empty": 1}, "exact-dup": {"exact duplicate": 1}}}
    text = render_stats(stats)
    assert "Step 1 (error_step=0)" in text and "2 (40.0%)" in text.split("Step 1 (error_step=0)")[1].splitlines()[0]
    assert "unknown" in text and "exact duplicate" in text
    json.dumps(stats)


# --- CLI --------------------------------------------------------------------------------------------


def write_pairs(path, rows):
    write_table(pd.DataFrame(rows), path, "pairs", config={"test": True})
    return path


def dataset_rows():
    rows = []
    for i in range(30):
        rows.append(pair(f"q{i}", chosen=f"Step 2: {i} * 2 = {2 * i}.\n", rejected=f"Step 2: {i} * 2 = {2 * i + 1}.\n",
                         chosen_rest="Step 3: Done.", source="embedded" if i % 2 else "gsm8k"))
        rows.append(pair(f"q{i}", chosen=f"step 2: {i}*2 = {2 * i}\n", rejected=f"Step 2: {i} * 2 = {2 * i + 1}.\n",
                         chosen_rest="Step 3: Done.", source="embedded" if i % 2 else "gsm8k"))  # near dup
    return rows


def test_cli_export_trl_split_dropped_and_summary(runner, tmp_path, tiny_model_dir, tokenizer):
    src = write_pairs(tmp_path / "pairs.parquet", dataset_rows())
    out = tmp_path / "out" / "trl.parquet"
    result = runner.invoke(main, ["export", str(src), "--out", str(out), "--format", "trl", "--model",
                                  str(tiny_model_dir), "--test-fraction", "0.3", "--seed", "3",
                                  "--with-column", "pair_id", "--with-column", "chosen_ends_solution"])
    assert result.exit_code == 0, result.output
    train = pq.read_table(tmp_path / "out" / "trl.train.parquet").to_pandas()
    test = pq.read_table(tmp_path / "out" / "trl.test.parquet").to_pandas()
    assert list(train.columns) == ["prompt", "chosen", "rejected", "pair_id", "chosen_ends_solution"]
    assert len(train) + len(test) == 30 and len(test) > 0
    def problems(table):
        return {pid.split(":")[0] for pid in table.pair_id}

    assert problems(train).isdisjoint(problems(test))
    assert read_metadata(tmp_path / "out" / "trl.test.parquet")["kind"] == "export:trl"
    by_id = {r["pair_id"]: r for r in dataset_rows()}
    for row in train.itertuples():
        assert row.prompt.endswith(PARTIAL + " 3 + 4 = 7.\n") and row.prompt + row.chosen + "Step 3: Done." == (
            tokenizer.apply_chat_template([{"role": "user", "content": by_id[row.pair_id]["question"]}],
                                          tokenize=False, add_generation_prompt=True) + by_id[row.pair_id]["chosen_full"])
    dropped = read_dropped(tmp_path / "out" / "trl.dropped.parquet")
    assert len(dropped) == 30 and set(dropped.drop_filter) == {"near-dup"}
    summary = json.loads((tmp_path / "out" / "trl.summary.json").read_text())
    assert summary["kept"] == 30 and summary["dropped"] == 30
    assert summary["split"]["train"]["pairs"] == len(train) and summary["split"]["test"]["pairs"] == len(test)
    assert summary["stats"]["dropped"]["by_filter"] == {"near-dup": 30}
    assert "near duplicate: normalised text equal" in result.output


def test_cli_export_step_dpo_jsonl_and_pairs_formats(runner, tmp_path):
    rows = dataset_rows()[:4]
    src = write_pairs(tmp_path / "pairs.parquet", rows)
    out = tmp_path / "sd.jsonl"
    result = runner.invoke(main, ["export", str(src), "-o", str(out), "--format", "step-dpo"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(list(r) == list(STEP_DPO_COLUMNS) for r in records)
    assert records[0]["full_chosen"] == "Step 2: 0 * 2 = 0.\nStep 3: Done."
    assert [json.loads(line)["drop_filter"] for line in (tmp_path / "sd.dropped.jsonl").read_text().splitlines()] == [
        "near-dup", "near-dup"]

    jsonl = tmp_path / "rows.jsonl"
    assert runner.invoke(main, ["export", str(src), "-o", str(jsonl), "--format", "jsonl", "--no-dedup"]).exit_code == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 4 and lines[0]["prefix_steps"] == [" 3 + 4 = 7.\n"] and lines[0]["error_step"] == 1
    assert set(lines[0]["provenance"]) == {"model", "sampling", "localizer"}
    assert (tmp_path / "rows.dropped.jsonl").read_text() == ""

    parquet = tmp_path / "clean.parquet"
    assert runner.invoke(main, ["export", str(src), "-o", str(parquet)]).exit_code == 0
    clean = read_table(parquet, kind="pairs")
    assert clean.pair_id.tolist() == [rows[0]["pair_id"], rows[2]["pair_id"]]
    assert read_metadata(parquet)["config"]["dedup"] is True


def test_cli_stats_prints_table_and_json(runner, tmp_path):
    src = write_pairs(tmp_path / "pairs.parquet", dataset_rows()[:6])
    assert runner.invoke(main, ["export", str(src), "-o", str(tmp_path / "e.parquet")]).exit_code == 0
    stats_json = tmp_path / "stats.json"
    result = runner.invoke(main, ["stats", str(tmp_path / "e.parquet"), "--dropped",
                                  str(tmp_path / "e.dropped.parquet"), "--json", str(stats_json)])
    assert result.exit_code == 0, result.output
    stats = json.loads(stats_json.read_text())
    assert stats["pairs"] == 3 and stats["dropped"]["by_filter"] == {"near-dup": 3}
    assert stats["by_source"] == {"gsm8k": 2, "embedded": 1}
    assert "near-dup" in result.output and "Step 2 (error_step=1)" in result.output


def test_cli_errors_are_clear(runner, tmp_path, tiny_model_dir):
    missing = runner.invoke(main, ["stats", str(tmp_path / "nope.parquet")])
    assert missing.exit_code != 0 and "does not exist" in missing.output

    problems = tmp_path / "problems.parquet"
    assert runner.invoke(main, ["make-problems", "--n", "3", "--out", str(problems)]).exit_code == 0
    wrong = runner.invoke(main, ["export", str(problems), "-o", str(tmp_path / "x.parquet")])
    assert wrong.exit_code != 0 and "expected a pairs table, found a problems table" in wrong.output

    rows = dataset_rows()[:4]
    rows[2] = {**rows[2], "prompt_messages": None}
    src = write_pairs(tmp_path / "pairs.parquet", rows)
    out = tmp_path / "t.parquet"
    no_model = runner.invoke(main, ["export", str(src), "-o", str(out), "--format", "trl"])
    assert no_model.exit_code != 0 and "--model" in no_model.output
    bad = runner.invoke(main, ["export", str(src), "-o", str(out), "--format", "trl", "--model", str(tiny_model_dir)])
    assert bad.exit_code != 0
    assert f"pair {rows[2]['pair_id']!r} (input row 2): field 'prompt_messages' is empty" in bad.output
    assert not out.exists() and not (tmp_path / "t.dropped.parquet").exists()  # nothing half-written

    suffix = runner.invoke(main, ["export", str(src), "-o", str(tmp_path / "t.csv"), "--format", "step-dpo"])
    assert suffix.exit_code != 0 and ".parquet or .jsonl" in suffix.output
