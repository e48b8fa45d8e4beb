import json

import pandas as pd
import pytest

from stepdata import BadRowError, load_problems, write_table
from stepdata.loaders import KNOWN_SETS, problem_id_for


@pytest.mark.parametrize(
    "name, rows, source",
    [
        ("gsm8k", 1319, "gsm8k-test"),
        ("math500", 500, "math500"),
        ("svamp", 1000, "svamp"),
        ("multiarith", 600, "multiarith"),
        ("processbench:gsm8k", 400, "processbench-gsm8k"),
        ("processbench:math", 1000, "processbench-math"),
    ],
)
def test_known_sets_load_completely(shared_data, tmp_path, name, rows, source):
    df = load_problems(name, data_dir=shared_data)
    assert len(df) == rows
    assert df.problem_id.is_unique
    assert (df.source == source).all()
    assert df.question.str.len().min() > 0
    if not name.startswith("processbench"):
        assert df.answer.notna().all()
    # every table we load is a valid problems table
    write_table(df, tmp_path / "p.parquet", "problems")


def test_format_details(shared_data):
    gsm = load_problems("gsm8k", data_dir=shared_data, limit=1).iloc[0]
    assert gsm.answer == "18" and "<<16-3-4=9>>" in gsm.solution
    math = load_problems("math500", data_dir=shared_data, limit=1).iloc[0]
    assert math.problem_id == "test/precalculus/807.json"
    assert json.loads(math.meta)["subject"] == "Precalculus"
    svamp = load_problems("svamp", data_dir=shared_data, limit=1).iloc[0]
    assert svamp.answer == "51" and svamp.question.endswith("How much do you have to pay to buy each pack?")
    multi = load_problems("multiarith", data_dir=shared_data, limit=1).iloc[0]
    assert multi.answer == "39" and multi.problem_id == "0"
    pb = load_problems("processbench:gsm8k", data_dir=shared_data, limit=1).iloc[0]
    meta = json.loads(pb.meta)
    assert pb.answer is None and isinstance(meta["steps"], list) and meta["label"] >= -1


def test_format_is_detected_from_a_plain_path(shared_data):
    df = load_problems(shared_data / "gsm8k" / "test.jsonl", limit=3)
    assert df.answer.tolist() == load_problems("gsm8k", data_dir=shared_data, limit=3).answer.tolist()
    assert (df.source == "test").all()


def test_hashed_ids_are_stable_and_duplicates_are_kept(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": "What is 2+2?", "answer": 4}, {"question": "What is 2+2?", "answer": 4}, {"q": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    df = load_problems(path)
    assert df.problem_id.tolist() == [problem_id_for("What is 2+2?"), problem_id_for("What is 2+2?") + "-2"]
    assert json.loads(df.meta[1])["duplicate_of"] == problem_id_for("What is 2+2?")
    assert df.answer.tolist() == ["4", "4"]


def test_malformed_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"question": "a?", "answer": "1"}\n'
        '{"question": "b?", "answer": \n'
        '{"question": "", "answer": "2"}\n'
        '{"question": "c?"}\n'
        '{"question": "d?", "answer": "4"}\n'
    )
    with pytest.raises(BadRowError, match=r"bad\.jsonl, line 2: invalid JSON"):
        load_problems(path)
    df = load_problems(path, skip_bad_rows=True)
    assert df.question.tolist() == ["a?", "d?"]
    bad = df.attrs["bad_rows"]
    assert [(b["line"], b["field"]) for b in bad] == [(2, None), (3, "question"), (4, "answer")]
    assert all(b["file"] == str(path) for b in bad)


def test_gsm8k_record_without_final_answer(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "no marker\n#### 5"}) + "\n"
                    + json.dumps({"question": "q2", "answer": "forgot the marker"}) + "\n")
    with pytest.raises(BadRowError, match=r"line 2, field 'answer'.*####"):
        load_problems(path, format="gsm8k")


def test_csv_and_parquet_with_column_mapping(tmp_path):
    frame = pd.DataFrame({"prompt_text": ["What is 3*3?", "Half of 9?"], "target": [9, 4.5], "uid": ["a", "b"]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    mapping = {"question": "prompt_text", "answer": "target", "problem_id": "uid"}
    from_csv = load_problems(tmp_path / "p.csv", columns=mapping)
    from_parquet = load_problems(tmp_path / "p.parquet", columns=mapping)
    assert from_parquet.answer.tolist() == ["9", "4.5"]  # numbers written the way people write them
    assert from_csv.answer.tolist() == ["9.0", "4.5"]  # text is kept as the file spells it
    assert from_csv.problem_id.tolist() == ["a", "b"]
    with pytest.raises(BadRowError, match=r"p\.csv, line 2, field 'question'"):
        load_problems(tmp_path / "p.csv")


def test_names_need_a_data_dir_and_unknown_inputs_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("STEPDATA_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="STEPDATA_DATA_DIR"):
        load_problems("gsm8k")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_problems("gsm8k", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        load_problems(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown file type"):
        (tmp_path / "x.txt").write_text("hi")
        load_problems(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="unknown format"):
        load_problems(tmp_path / "x.txt", format="nope")
    assert set(KNOWN_SETS) >= {"gsm8k", "math500", "svamp", "multiarith"}


def test_embedded_by_name():
    df = load_problems("embedded:7", seed=3)
    assert len(df) == 7 and (df.source == "embedded").all()


# -- ASDiv ----------------------------------------------------------------------------------------------

ASDIV_RECORD = """<Problem ID="{id}" Grade="2" Source="test">
  <Body>{body}</Body><Question>{question}</Question><Solution-Type>Addition</Solution-Type>
  {answer}<Formula>3+4=7</Formula></Problem>"""


def write_asdiv(folder, records, folds=None):
    """An ASDiv-layout XML file (and fold files beside it) from (id, body, question, answer element) tuples."""
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n".join(ASDIV_RECORD.format(id=i, body=b, question=q, answer=a) for i, b, q, a in records)
    (folder / "ASDiv.xml").write_text(f'<?xml version="1.0" encoding="UTF-8" ?>\n<Corpus><ProblemSet>\n{body}\n'
                                      "</ProblemSet></Corpus>\n")
    for k, ids in enumerate(folds or []):
        (folder / "folds-asdiv-a").mkdir(exist_ok=True)
        (folder / "folds-asdiv-a" / f"fold{k}.txt").write_text("".join(f"{i}\n" for i in ids))
    return folder / "ASDiv.xml"


@pytest.fixture(scope="module")
def asdiv_dir(shared_data):
    if not (shared_data / "asdiv" / "ASDiv.xml").exists():
        pytest.skip(f"ASDiv not found under {shared_data}")
    return shared_data


def test_asdiv_and_its_arithmetic_subset_load_completely(asdiv_dir, tmp_path):
    from stepdata.answers import parse_plain_number
    from stepdata.evaluate import load_eval_problems

    full = load_problems("asdiv", data_dir=asdiv_dir)
    assert len(full) == 2305 and full.problem_id.is_unique and (full.source == "asdiv").all()
    first = full.iloc[0]
    assert (first.problem_id, first.answer, first.solution) == ("nluds-0001", "9", "7+2=9")
    assert first.question == ("Seven red apples and two green apples are in the basket. "
                              "How many apples are in the basket?")
    assert json.loads(first.meta)["unit"] == "apples"  # "9 (apples)": the gold is the number, the unit in meta
    several = full[full.answer.str.contains(";")].iloc[0]  # "5 (years old); 15 (years old); 20 (years old)"
    assert several.answer == "5; 15; 20" and json.loads(several.meta)["unit"] == ["years old"] * 3
    arithmetic, label = load_eval_problems("asdiv-a", data_dir=asdiv_dir)  # what `stepdata eval --data asdiv-a` reads
    assert label == "asdiv-a" and len(arithmetic) == 1218 and (arithmetic.source == "asdiv-a").all()
    listed = {line.strip() for path in (asdiv_dir / "asdiv" / "folds-asdiv-a").glob("fold*.txt")
              for line in path.read_text().splitlines() if line.strip()}
    assert set(arithmetic.problem_id) == listed
    assert arithmetic.problem_id.tolist() == [p for p in full.problem_id if p in listed]  # the file's order
    assert {json.loads(m)["fold"] for m in arithmetic.meta} == {0, 1, 2, 3, 4}
    assert all(parse_plain_number(a) is not None for a in arithmetic.answer)  # "14  (seats)" -> "14"
    write_table(arithmetic, tmp_path / "p.parquet", "problems")


def test_asdiv_bad_records_name_the_record_id_and_field(tmp_path):
    good = ("a-1", "Ann has 3 pens and buys 4.", "How many pens?", "<Answer>7 (pens)</Answer>")
    path = write_asdiv(tmp_path / "asdiv", [good, ("a-2", "Bo has 2.", "How many?", ""),
                                            ("a-3", "Cy has 2.", "How many?", "<Answer>(cats)</Answer>")])
    with pytest.raises(BadRowError, match=r"ASDiv\.xml, item 1, field 'Answer': missing \(record id 'a-2'\)"):
        load_problems(path)
    df = load_problems(path, skip_bad_rows=True)
    assert df.problem_id.tolist() == ["a-1"] and df.answer.tolist() == ["7"]
    assert [(b["item"], b["field"]) for b in df.attrs["bad_rows"]] == [(1, "Answer"), (2, "Answer")]
    assert "no value" in df.attrs["bad_rows"][1]["error"] and "'a-3'" in df.attrs["bad_rows"][1]["error"]
    broken = tmp_path / "broken.xml"
    broken.write_text("<Corpus>\n<Problem ID='x'><Body>a</Body>\n</Corpus>\n")
    with pytest.raises(BadRowError, match=r"broken\.xml, line 3: invalid XML"):
        load_problems(broken)


def test_asdiv_a_refuses_a_fold_id_the_file_lacks(tmp_path):
    records = [(f"a-{i}", "Ann has 3 pens and buys 4.", "How many pens?", "<Answer>7 (pens)</Answer>") for i in range(3)]
    write_asdiv(tmp_path / "asdiv", records, folds=[["a-2"], ["a-0"]])
    df = load_problems("asdiv-a", data_dir=tmp_path)
    assert df.problem_id.tolist() == ["a-0", "a-2"] and [json.loads(m)["fold"] for m in df.meta] == [1, 0]
    write_asdiv(tmp_path / "asdiv", records, folds=[["a-2"], ["a-0", "a-9"]])
    with pytest.raises(BadRowError, match=r"fold1\.txt, line 2: id 'a-9' is not in"):
        load_problems("asdiv-a", data_dir=tmp_path)
