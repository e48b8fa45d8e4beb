"""People as localizers: the labels file, the human localizer through the localize stage, Label Studio's
task and export formats, corrected steps as out-of-distribution pairs, and the annotation page in a real browser.

The run is built like the quickstart's tables, without a model: embedded problems, rollouts written as
a sample stage writes them (one with model text that is an XSS payload, one cut at max_tokens), and the
localized table made from them by the real localize stage (``--method exact``). The browser test drives
the system Chromium through Playwright (never a downloaded browser); it is skipped when either is
missing, unless STEPDATA_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from stepdata import write_table
from stepdata.annotate import (
    Label,
    LabelsError,
    load_items,
    read_labels,
    steps_sha256,
    write_labels_jsonl,
)
from stepdata.embedded import make_problems
from stepdata.io import read_table
from stepdata.localize.human import human_evidence
from stepdata.pairs.corrections import fit_to_step
from stepdata.pairs.export import read_pairs
from stepdata.pairs.stats import pairs_stats
from stepdata.prompts import load_prompt
from stepdata.steps import join_steps, split_steps, step_body, strip_partial_overlap

PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
EVIL_ID = 'evil"><script>window.__pwned=3</script>'


def _off_by_one(step: str, value: int) -> str:
    head, sep, tail = step.rpartition(f"= {value}")
    assert sep, f"no result {value} in {step!r}"
    return f"{head}= {value + 1}{tail}"


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """problems.parquet, rollouts.parquet (with lineage, as sample writes it) and localized.parquet (exact)."""
    folder = tmp_path_factory.mktemp("annotate-run")
    problems = make_problems(4, seed=5, min_steps=3, max_steps=3)
    write_table(problems, folder / "problems.parquet", "problems")
    partial = load_prompt("step_by_step").render(question="")[-1]["content"]
    base = {"completion_tokens": 20, "prompt_tokens": 30, "model": "policy", "error": None,
            "sampling": {"n": 2, "temperature": 0.8, "top_p": 0.95, "max_tokens": 64, "seed": 0}}
    rows, gold = [], {}
    for i, p in enumerate(problems.itertuples(index=False)):
        steps = split_steps(strip_partial_overlap(partial, p.solution))
        values = [s["value"] for s in json.loads(p.meta)["steps"]]
        gold[p.problem_id] = steps
        prompt = json.dumps(load_prompt("step_by_step").render(question=p.question))
        wrong = list(steps)
        k = i % len(steps)
        wrong[k] = _off_by_one(wrong[k], values[k])
        rows.append(base | {"problem_id": p.problem_id, "rollout_id": f"{p.problem_id}:0", "prompt": prompt,
                            "steps": steps, "completion": join_steps(steps), "pred_answer": str(values[-1]),
                            "correct": True, "finish_reason": "stop"})
        rows.append(base | {"problem_id": p.problem_id, "rollout_id": f"{p.problem_id}:1", "prompt": prompt,
                            "steps": wrong, "completion": join_steps(wrong), "pred_answer": str(values[-1] + 1),
                            "correct": False, "finish_reason": "stop"})
        if i == 0:
            evil = [f" {PAYLOAD}{steps[0]}", *steps[1:]]
            rows.append(base | {"problem_id": p.problem_id, "rollout_id": EVIL_ID, "prompt": prompt, "steps": evil,
                                "completion": join_steps(evil), "pred_answer": PAYLOAD, "correct": False,
                                "finish_reason": "stop"})
            cut = steps[:2]
            rows.append(base | {"problem_id": p.problem_id, "rollout_id": f"{p.problem_id}:cut", "prompt": prompt,
                                "steps": cut, "completion": join_steps(cut), "pred_answer": None, "correct": False,
                                "finish_reason": "length"})
    lineage = {"problems": str(folder / "problems.parquet"), "template": "step_by_step", "model": "policy"}
    write_table(pd.DataFrame(rows), folder / "rollouts.parquet", "rollouts",
                config={"stage": "sample", "lineage": lineage})
    done = _invoke("localize", folder / "rollouts.parquet", "--method", "exact", "--out", folder / "localized.parquet")
    assert done.exit_code == 0, done.output
    ids = [p for p in problems.problem_id]
    return SimpleNamespace(folder=folder, problems=problems, gold=gold, ids=ids, rollouts=folder / "rollouts.parquet",
                           localized=folder / "localized.parquet")


@pytest.fixture(scope="module")
def labelled(run):
    """A labels file as the page saves it and the localized table `localize --method human` made from it."""
    annotation = load_items(run.localized, run.problems)
    items = {item.solution_id: item for item in annotation.items}

    def label(solution_id: str, kind: str, step: int | None = None, corrected: str | None = None) -> Label:
        item = items[solution_id]
        return Label(solution_id, item.problem_id, kind, annotation.fingerprint, item.steps_sha256, step=step,
                     corrected_step=corrected, annotator="ada", time="2026-11-22T10:00:00Z")

    p0, p1, p2, p3 = run.ids
    correction = step_body(run.gold[p1][1])  # what the wrong step should say, typed without its marker
    labels = [
        label(f"{p1}:1", "step", 2, correction),
        label(f"{p2}:1", "no_error"),
        label(f"{p3}:1", "cant_tell"),
        label(f"{p0}:cut", "no_error"),
        label(EVIL_ID, "step", 1, "2 + 2 = 5."),
        Label("ghost:9", p0, "no_error", annotation.fingerprint, steps_sha256(["x"])),
    ]
    path = write_labels_jsonl(labels, run.folder / "labels.jsonl")
    out = run.folder / "localized_human.parquet"
    done = _invoke("localize", run.localized, "--method", "human", "--labels", path, "--out", out)
    assert done.exit_code == 0, done.output
    return SimpleNamespace(path=path, out=out, output=done.output, correction=correction, annotation=annotation)


# ----------------------------------------------------------------------------- the labels file


def test_labels_file_round_trip_and_every_bad_line_named(tmp_path):
    good = Label("r1", "p1", "step", "f" * 16, "a" * 64, step=2, corrected_step="2 + 2 = 4.", annotator="ada",
                 time="2026-11-22T10:00:00.000Z", source_table="localized.parquet")
    others = [Label("r2", "p1", "no_error", "f" * 16, "b" * 64), Label("r3", "p2", "cant_tell", "f" * 16, "c" * 64)]
    path = write_labels_jsonl([good, *others], tmp_path / "labels.jsonl")
    back = read_labels(path)
    assert back.format == "jsonl" and [lab.record() for lab in back.labels] == [good.record()] + [o.record() for o in others]
    assert back.by_solution["r1"].error_step == 1 and back.by_solution["r2"].error_step is None  # step 2 is index 1
    assert back.by_solution["r3"].where == f"{path} line 3"

    first = json.dumps(good.record())
    bad = {
        "not json {": "line 2: not JSON",
        json.dumps(good.record() | {"solution_id": "x", "label": "maybe"}): "line 2: field 'label' must be one of",
        json.dumps(good.record() | {"solution_id": "x", "step": 0}): "line 2: field 'step' must be",
        json.dumps(good.record() | {"solution_id": "x", "step": "2"}): "line 2: field 'step' must be",
        json.dumps({k: v for k, v in good.record().items() if k != "solution_id"}): "line 2: field 'solution_id' is missing",
        json.dumps(good.record() | {"solution_id": "x", "corrected": "y"}): "line 2: unknown field(s) ['corrected']",
        json.dumps(others[0].record() | {"solution_id": "x", "corrected_step": "y"}): "line 2: field 'corrected_step' is given",
        json.dumps(others[0].record() | {"solution_id": "x", "step": 3}): "line 2: field 'step' is 3 but the label is",
        json.dumps(good.record() | {"solution_id": "x", "time": "yesterday"}): "line 2: field 'time' must be an ISO 8601",
        json.dumps(good.record() | {"solution_id": "x", "table_fingerprint": 7}): "line 2: field 'table_fingerprint' must",
        json.dumps(good.record()): "solution 'r1' is labelled twice",
        "[1, 2]": "line 2: a label is a JSON object, not list",
    }
    for line, message in bad.items():
        (tmp_path / "bad.jsonl").write_text(f"{first}\n{line}\n", encoding="utf-8")
        with pytest.raises(LabelsError) as refused:
            read_labels(tmp_path / "bad.jsonl", "jsonl")
        assert message in str(refused.value) and str(tmp_path / "bad.jsonl") in str(refused.value), line
    (tmp_path / "bad.jsonl").write_bytes(first.encode() + b"\n" + '{"solution_id": "caf\u00e9"}'.encode("latin-1") + b"\n")
    with pytest.raises(LabelsError, match="bad.jsonl line 2: not UTF-8 text"):
        read_labels(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(LabelsError, match="holds no labels"):
        read_labels(tmp_path / "empty.jsonl")


# ----------------------------------------------------------------------------- the human localizer


def test_human_localizer_through_the_localize_stage_on_the_localized_and_the_rollouts_table(run, labelled, tmp_path):
    p0, p1, p2, p3 = run.ids
    assert load_items(run.rollouts).fingerprint == labelled.annotation.fingerprint  # the same wrong solutions
    assert "labels: 5 of 6 used (2 with a corrected step); 1 for solutions not in SOURCE: ghost:9" in labelled.output
    rows = read_table(labelled.out, kind="localized").set_index("rollout_id")
    assert len(rows) == 6 and set(rows.method) == {"human"}
    assert rows.status.to_dict() == {f"{p0}:1": "unknown", EVIL_ID: "error", f"{p0}:cut": "unfinished",
                                     f"{p1}:1": "error", f"{p2}:1": "no_error", f"{p3}:1": "unknown"}
    assert rows.error_step[f"{p1}:1"] == 1 and rows.error_step[EVIL_ID] == 0 and rows.error_step[f"{p2}:1"] == -1
    evidence = human_evidence(rows.rationale[f"{p1}:1"])
    assert evidence["step"] == 2 and evidence["annotator"] == "ada" and evidence["corrected_step"] == labelled.correction
    assert evidence["time"] == "2026-11-22T10:00:00Z" and evidence["labels"] == f"{labelled.path} line 1"
    assert rows.rationale[f"{p0}:1"] == f"no label for this solution in {labelled.path}"  # kept, not dropped
    summary = json.loads(Path(f"{labelled.out}.summary.json").read_text())["stage_stats"]
    assert summary["labels"]["not_in_table"] == 1 and summary["labels"]["not_in_table_ids"] == ["ghost:9"]
    assert summary["labels"]["same_table"] is True and summary["unknown"] == 2

    # the rollouts table the localized one came from gives the same rows
    from_rollouts = tmp_path / "from_rollouts.parquet"
    done = _invoke("localize", run.rollouts, "--method", "human", "--labels", labelled.path, "--out", from_rollouts)
    assert done.exit_code == 0, done.output
    again = read_table(from_rollouts, kind="localized").set_index("rollout_id")
    columns = ["status", "error_step", "rationale", "steps"]
    pd.testing.assert_frame_equal(again.loc[rows.index, columns], rows[columns])

    # the labels are part of the run's config: the same labels resume, other labels are a changed config
    assert "already finished" in _invoke("localize", run.rollouts, "--method", "human", "--labels", labelled.path,
                                         "--out", from_rollouts).output
    changed = tmp_path / "changed.jsonl"
    changed.write_text(labelled.path.read_text(encoding="utf-8").replace('"cant_tell"', '"no_error"'), encoding="utf-8")
    refused = _invoke("localize", run.rollouts, "--method", "human", "--labels", changed, "--out", from_rollouts)
    assert refused.exit_code != 0 and "labels" in refused.output and "config" in refused.output


def test_labels_for_other_text_are_refused_naming_the_mismatch(run, labelled, tmp_path):
    records = [json.loads(line) for line in labelled.path.read_text(encoding="utf-8").splitlines()]
    resampled = [r | ({"steps_sha256": steps_sha256(["other"])} if r["label"] == "cant_tell" else {}) for r in records]
    (tmp_path / "resampled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in resampled), encoding="utf-8")
    done = _invoke("localize", run.rollouts, "--method", "human", "--labels", tmp_path / "resampled.jsonl",
                   "--out", tmp_path / "x.parquet")
    assert done.exit_code != 0 and f"'{run.ids[3]}:1'" in done.output and "other steps" in done.output
    assert f"table {labelled.annotation.fingerprint}" in done.output and "this input has fingerprint" in done.output
    assert not (tmp_path / "x.parquet").exists()

    foreign = [r | {"solution_id": f"other-run:{i}"} for i, r in enumerate(records)]
    (tmp_path / "foreign.jsonl").write_text("".join(json.dumps(r) + "\n" for r in foreign), encoding="utf-8")
    done = _invoke("localize", run.localized, "--method", "human", "--labels", tmp_path / "foreign.jsonl",
                   "--out", tmp_path / "y.parquet")
    assert done.exit_code != 0 and "none of its 6 labelled solutions is in this input" in done.output

    too_far = [r | ({"step": 9} if r["label"] == "step" else {}) for r in records]
    (tmp_path / "far.jsonl").write_text("".join(json.dumps(r) + "\n" for r in too_far), encoding="utf-8")
    done = _invoke("localize", run.localized, "--method", "human", "--labels", tmp_path / "far.jsonl",
                   "--out", tmp_path / "z.parquet")
    assert done.exit_code != 0 and "line 1: field 'step' is 9 but solution" in done.output

    missing = _invoke("localize", run.localized, "--method", "human", "--out", tmp_path / "w.parquet")
    assert missing.exit_code == 2 and "--method human needs --labels FILE" in missing.output


# ----------------------------------------------------------------------------- Label Studio


def _result(name: str, kind: str, value: dict) -> dict:
    return {"id": f"r-{name}", "from_name": name, "to_name": "solution", "type": kind, "value": value,
            "origin": "manual"}


def _annotation(number: int, results: list[dict], *, by=7, at="2026-11-22T10:00:00.000000Z", cancelled=False) -> dict:
    return {"id": number, "result": results, "was_cancelled": cancelled, "ground_truth": False, "created_at": at,
            "updated_at": at, "lead_time": 12.5, "result_count": 0, "task": number, "completed_by": by}


def test_label_studio_tasks_out_and_its_json_export_in(run, tmp_path):
    tasks_path = tmp_path / "tasks.json"
    done = _invoke("annotate", run.localized, "--format", "label-studio", "--out", tasks_path)
    assert done.exit_code == 0, done.output
    config = ET.fromstring((tmp_path / "tasks.label_config.xml").read_text(encoding="utf-8"))
    controls = {el.get("name"): el.tag for el in config.iter() if el.get("toName")}
    assert controls == {"verdict": "Choices", "first_wrong_step": "Number", "corrected_step": "TextArea"}
    assert [c.get("alias") for c in config.iter("Choice")] == ["step", "no_error", "cant_tell"]
    assert {el.get("value") for el in config.iter("Text")} == {"$question", "$answers", "$solution"}
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    assert len(tasks) == 6 and all(set(t) == {"data"} for t in tasks)
    by_id = {t["data"]["solution_id"]: t for t in tasks}
    p0, p1, p2, p3 = run.ids
    statuses = read_table(run.localized, kind="localized").set_index("rollout_id").status
    chosen = _invoke("annotate", run.localized, "--format", "label-studio", "--status", "error", "--out",
                     tmp_path / "errors.json")
    assert chosen.exit_code == 0 and f"{int(statuses.eq('error').sum())} of 6 wrong solutions" in chosen.output
    some = json.loads((tmp_path / "errors.json").read_text())
    assert {t["data"]["solution_id"] for t in some} == set(statuses.index[statuses.eq("error")])
    # part of the table, the same fingerprint: the whole table's wrong solutions (the rollouts table's too)
    assert {t["data"]["table_fingerprint"] for t in some} == {load_items(run.rollouts).fingerprint}
    refused = _invoke("annotate", run.rollouts, "--status", "error", "--out", tmp_path / "x.html")
    assert refused.exit_code != 0 and "needs a localized table" in refused.output
    first = by_id[f"{p1}:1"]["data"]
    assert first["solution"].startswith("Step 1: ") and "\nStep 2: " in first["solution"] and first["n_steps"] == 3
    assert first["steps_sha256"] == steps_sha256(first["steps"]) and first["question"].endswith("?")

    # Label Studio's JSON export of the project: tasks as imported, with ids and annotations
    export = []
    for number, task in enumerate(tasks, start=1):
        export.append({"id": number, "data": task["data"], "annotations": [], "predictions": [], "project": 3})
    by_number = {t["data"]["solution_id"]: t for t in export}
    by_number[f"{p1}:1"]["annotations"] = [_annotation(1, [
        _result("verdict", "choices", {"choices": ["step"]}), _result("first_wrong_step", "number", {"number": 2}),
        _result("corrected_step", "textarea", {"text": ["Adding them gives 49."]})])]
    by_number[f"{p2}:1"]["annotations"] = [  # the most recent annotation is the task's label; shown text works too
        _annotation(2, [_result("verdict", "choices", {"choices": ["step"]}),
                        _result("first_wrong_step", "number", {"number": 1})], at="2026-11-21T09:00:00Z"),
        _annotation(3, [_result("verdict", "choices", {"choices": ["No error"]})], at="2026-11-22T09:00:00Z")]
    by_number[f"{p3}:1"]["annotations"] = [_annotation(4, [_result("verdict", "choices", {"choices": ["step"]}),
                                                           _result("first_wrong_step", "number", {"number": 3})],
                                                       cancelled=True)]
    by_number[f"{p0}:1"]["annotations"] = [_annotation(5, [_result("verdict", "choices", {"choices": ["cant_tell"]})],
                                                       by={"id": 3, "email": "bo@example.org"})]
    (tmp_path / "export.json").write_text(json.dumps(export), encoding="utf-8")
    out = tmp_path / "ls.parquet"
    done = _invoke("localize", run.localized, "--method", "human", "--labels", tmp_path / "export.json", "--out", out)
    assert done.exit_code == 0, done.output
    rows = read_table(out, kind="localized").set_index("rollout_id")
    assert rows.status.to_dict() == {f"{p0}:1": "unknown", EVIL_ID: "unknown", f"{p0}:cut": "unknown",
                                     f"{p1}:1": "error", f"{p2}:1": "no_error", f"{p3}:1": "unknown"}
    assert rows.error_step[f"{p1}:1"] == 1
    evidence = human_evidence(rows.rationale[f"{p1}:1"])
    assert evidence["annotator"] == "label-studio user 7" and evidence["corrected_step"] == "Adding them gives 49."
    assert human_evidence(rows.rationale[f"{p0}:1"])["annotator"] == "bo@example.org"
    assert rows.rationale[f"{p3}:1"].startswith("no label")  # its only annotation was cancelled
    labels = json.loads(Path(f"{out}.summary.json").read_text())["stage_stats"]["labels"]
    assert labels["format"] == "label-studio" and labels["labels"] == 3
    assert labels["skipped"] == {"tasks_without_annotation": 3, "cancelled_annotations": 1, "older_annotations": 1}

    broken = json.loads(json.dumps(export))
    broken[0]["annotations"] = [_annotation(9, [_result("first_wrong_step", "number", {"number": 1})])]
    (tmp_path / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(LabelsError, match=r"task 1 \(item 1\), annotation 9: result 'verdict' must hold one choice"):
        read_labels(tmp_path / "broken.json")
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, **tasks[0]["data"], "verdict": "step"}]), encoding="utf-8")
    with pytest.raises(LabelsError, match="export the project from Label Studio as JSON"):
        read_labels(tmp_path / "min.json", "label-studio")


# ----------------------------------------------------------------------------- corrected steps as pairs


def test_a_corrected_step_becomes_a_pair_marked_out_of_distribution(run, labelled, tmp_path):
    assert fit_to_step("Step 7: 3 + 4 = 7.", "Step 2: 3 + 4 = 8.\n") == "Step 2: 3 + 4 = 7.\n"
    assert fit_to_step("3 + 4 = 7.", " 3 + 4 = 8.\n") == " 3 + 4 = 7.\n"
    out = tmp_path / "pairs_human.parquet"
    done = _invoke("pairs", "from-corrections", labelled.out, "--out", out)
    assert done.exit_code == 0, done.output
    pairs = read_pairs(out)  # a pairs table as the trainers and export read it
    assert len(pairs) == 2 and set(pairs.kind) == {"step-dpo"} and set(pairs.chosen_source) == {"human"}
    p1 = run.ids[1]
    wrong = read_table(run.localized, kind="localized").set_index("rollout_id").steps[f"{p1}:1"]
    pair = pairs.set_index("problem_id").loc[p1]
    assert pair.chosen == run.gold[p1][1] and pair.chosen.startswith("Step 2: ")  # the person's text, in the frame
    assert pair.rejected == wrong[1] and list(pair.prefix_steps) == list(wrong[:1]) and pair.error_step == 1
    assert pair.rejected_full.endswith(join_steps(wrong[1:])) and pair.chosen_full.endswith(pair.chosen)
    assert not pair.chosen_ends_solution  # a middle step: nothing written after it, and no EOS
    assert pair.chosen_verified == True and pair.provenance["localizer"] == "human"  # noqa: E712 (numpy bool)
    assert json.loads(pair.provenance["sampling"])["chosen"]["annotator"] == "ada"
    messages = json.loads(pair.prompt_messages)
    assert messages[-1]["content"].endswith("Step 1:") and messages[0]["content"] == run.problems.set_index(
        "problem_id").question[p1]
    evil = pairs.set_index("problem_id").loc[run.ids[0]]
    assert evil.chosen == " 2 + 2 = 5.\n" and evil.chosen_verified == False  # noqa: E712 people make mistakes too
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["outcomes"] == {"pair": 2, "no_error_step": 4} and summary["chosen_verified"]["false"] == 1
    assert sorted(summary["no_pair_ids"]["no_error_step"]) == sorted(
        [f"{run.ids[0]}:1", f"{run.ids[0]}:cut", f"{run.ids[2]}:1", f"{run.ids[3]}:1"])
    assert pairs_stats(pairs)["by_chosen_source"] == {"human": 2}
    exported = tmp_path / "sdpo.jsonl"
    done = _invoke("export", out, "--out", exported, "--format", "step-dpo", "--with-column", "chosen_source")
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert [r["chosen_source"] for r in rows] == ["human"]  # the failed correction is left out, as any failed check


# ----------------------------------------------------------------------------- the page in a real browser


def _chromium() -> str:
    reason = None
    found = os.environ.get("STEPDATA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        reason = "chromium not installed (apt-get install -y chromium): the annotation page's browser test is skipped"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright not installed (pip install 'stepdata[test]'; no browser download needed)"
    if reason:
        if os.environ.get("STEPDATA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_annotation_page_in_a_real_browser_round_trips_labels_and_never_runs_model_text(run, tmp_path):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    page_path = tmp_path / "labels.html"
    done = _invoke("annotate", run.localized, "--out", page_path)
    assert done.exit_code == 0, done.output
    html = page_path.read_text(encoding="utf-8")
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and PAYLOAD not in html
    p0, p1, p2, _ = run.ids
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            page.goto(page_path.resolve().as_uri())
            assert page.get_attribute("html", "data-annotate-script") == "ready"  # our script ran...
            assert page.evaluate("window.__pwned") is None  # ...and nothing of the model's did
            assert page.locator("img").count() == 0 and page.locator("script").count() == 1

            def solution(solution_id: str):
                return page.locator("article.sd-solution").filter(has=page.locator(".sd-id", has_text=solution_id))

            evil = solution(EVIL_ID)
            assert evil.count() == 1 and "<script>window.__pwned=1</script>" in evil.locator(".sd-step").first.inner_text()
            page.fill("#sd-annotator", "cy")
            solution(f"{p1}:1").locator('li.sd-step[data-step="2"]').click()
            solution(f"{p1}:1").locator("textarea.sd-correction").fill("Adding them gives 49.")
            evil.locator('li.sd-step[data-step="1"]').click()
            solution(f"{p2}:1").locator('button[data-verdict="no_error"]').click()
            assert page.inner_text("#sd-progress") == "3 of 6 solutions labelled"
            with page.expect_download() as download:
                page.click("#sd-save")
            saved = tmp_path / "saved.jsonl"
            download.value.save_as(saved)
            page.reload()  # progress is kept in the browser
            assert page.inner_text("#sd-progress") == "3 of 6 solutions labelled"
            assert solution(f"{p1}:1").get_attribute("data-label") == "step"
            assert page.evaluate("window.__pwned") is None

            control = context.new_page()  # the same payload, unescaped, does run here: the checks above can fail
            control.set_content(f"<!DOCTYPE html><html><body>{PAYLOAD}</body></html>")
            control.wait_for_function("window.__pwned !== undefined")
        finally:
            browser.close()

    labels = read_labels(saved)
    assert {lab.solution_id: (lab.label, lab.step) for lab in labels.labels} == {
        f"{p1}:1": ("step", 2), EVIL_ID: ("step", 1), f"{p2}:1": ("no_error", None)}
    assert {lab.annotator for lab in labels.labels} == {"cy"}
    assert labels.fingerprints == [load_items(run.rollouts).fingerprint]
    out = tmp_path / "from_page.parquet"
    done = _invoke("localize", run.rollouts, "--method", "human", "--labels", saved, "--out", out)
    assert done.exit_code == 0, done.output
    rows = read_table(out, kind="localized").set_index("rollout_id")
    assert rows.error_step[f"{p1}:1"] == 1 and rows.error_step[EVIL_ID] == 0 and rows.status[f"{p2}:1"] == "no_error"
    assert human_evidence(rows.rationale[f"{p1}:1"])["corrected_step"] == "Adding them gives 49."
    assert rows.status[f"{p0}:1"] == "unknown" and rows.status[f"{p0}:cut"] == "unknown"
