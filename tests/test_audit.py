"""The audit view: report contents, escaping of model text, notebook views, CLI, and a real browser.

The browser test opens the report in headless Chromium (Debian package
``chromium``); it is skipped when Chromium is missing, unless
STEPDATA_REQUIRE_BROWSER=1 (CI), where a missing browser fails it.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from stepdata import write_table
from stepdata.audit import PairsView, PairView, render_report, show, summarize
from stepdata.audit.report import FILTER_SCRIPT
from stepdata.audit.theme import CHOSEN_BG, REJECTED_BG
from stepdata.pairs.build import make_pair, prompt_messages_of

PWNED = "PWNED"
MALICIOUS = f"<script>document.title='{PWNED}'</script><img src=x onerror=\"document.title='{PWNED}'\">"
STEPS = [" 3 + 4 = 7.\n", "Step 2: 7 * 2 = 14.\n", "Step 3: 14 - 1 = 13.\n", "Step 4: The answer is \\boxed{13}."]
EVIL_ID = f"evil\"><script>document.title='{PWNED}'</script>"

# problem_id, kind, error_step, chosen_verified, source
SPECS = [
    ("p1", "step-dpo", 0, True, "embedded"),
    ("p1", "step-dpo", 2, False, "embedded"),
    ("p2", "scdpo", 1, None, "gsm8k"),
    ("p3", "dpo", None, True, None),
    ("p3", "step-dpo", 1, True, "embedded"),
    (EVIL_ID, "step-dpo", 1, None, MALICIOUS),
]


def _row(problem_id: str, kind: str, error_step: int | None, verified: bool | None, source: str | None) -> dict:
    evil = problem_id == EVIL_ID
    question = "Tom has 3 apples and buys 4, then doubles them and eats one. How many?"
    if evil:
        question += " " + MALICIOUS
    messages = prompt_messages_of([{"role": "user", "content": question},
                                   {"role": "assistant", "content": "Let's think step by step.\nStep 1:"}])
    k = 0 if error_step is None else error_step
    prefix = [] if kind == "dpo" else STEPS[:k]
    wrong = MALICIOUS if evil else (f"Step {k + 1}: 7 * 2 = 15.\n" if k else " 3 + 4 = 8.\n")
    right = STEPS[k] if kind == "step-dpo" else "".join(STEPS[k:])
    return make_pair(
        problem_id=problem_id, question=question, answer="13", prompt_messages=messages, prefix_steps=prefix,
        chosen=right, rejected=wrong if kind == "step-dpo" else wrong + "Step 9: so 42.",
        chosen_rest="".join(STEPS[k + 1:]) if kind == "step-dpo" else "",
        rejected_rest="Step 9: so 42." if kind == "step-dpo" else "",
        kind=kind, error_step=error_step, source=source, chosen_verified=verified,
        model=MALICIOUS if evil else "tiny-llama", sampling={"temperature": 0.8}, localizer="rules",
    )


@pytest.fixture
def rows() -> list[dict]:
    return [_row(*spec) for spec in SPECS]


@pytest.fixture
def pairs(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _articles(page: str) -> list[str]:
    return re.findall(r'<article class="sd-pair".*?</article>', page, flags=re.DOTALL)


# ---------------------------------------------------------------- unit tests


def test_model_text_is_escaped_never_markup(pairs):
    page = render_report(pairs, title="audit <b>x</b>")
    # The only script on the page is our own filter; nothing from the data became markup.
    assert page.count("<script") == 1 and f"<script>{FILTER_SCRIPT}</script>" in page
    assert "<img" not in page and 'onerror="' not in page and "<b>x</b>" not in page
    assert html.escape(MALICIOUS) in page  # shown as text, in the question, rejected step, source, model
    assert f'data-pair-id="{html.escape(pairs.pair_id.iloc[-1])}"' in page  # attribute breakout escaped too
    assert "<title>audit &lt;b&gt;x&lt;/b&gt;</title>" in page
    for view in (show(pairs), show(pairs.iloc[-1])):
        out = view._repr_html_()
        assert "<script" not in out and "<img" not in out and html.escape(MALICIOUS) in out


def test_summary_numbers_match_the_data(pairs, rows):
    summary = summarize(pairs)
    assert summary.pairs == len(rows) == 6
    assert summary.problems == len({r["problem_id"] for r in rows}) == 4
    assert summary.by_kind == dict(Counter(r["kind"] for r in rows)) == {"step-dpo": 4, "scdpo": 1, "dpo": 1}
    assert summary.by_source == {"embedded": 3, "(unknown)": 1, "gsm8k": 1, MALICIOUS: 1}
    verified = Counter(r["chosen_verified"] for r in rows)
    checks = (summary.verified, summary.failed_check, summary.unchecked)
    assert checks == (verified[True], verified[False], verified[None])
    assert summary.verified_share == pytest.approx(3 / 6)
    # Error steps are shown from 1: data 0, 1, 1, 1, 2 and one unknown.
    assert summary.error_steps.labels == ["Step 1", "Step 2", "Step 3", "unknown"]
    assert summary.error_steps.series["pairs"] == [1, 3, 1, 1]
    per_problem = summary.pairs_per_problem
    assert dict(zip(per_problem.labels, per_problem.series["problems"], strict=True)) == {"1": 2, "2": 2}
    assert sum(summary.lengths.series["chosen"]) == sum(summary.lengths.series["rejected"]) == 6
    assert summary.median_chosen_chars == pd.Series([len(r["chosen"]) for r in rows]).median()

    page = render_report(pairs)

    def stat(key: str) -> str:
        return re.search(rf'data-stat="{key}"><span class="sd-num">([^<]*)<', page).group(1)

    assert (stat("pairs"), stat("problems"), stat("verified_share")) == ("6", "4", "50.0%")
    assert (stat("failed_check"), stat("unchecked")) == ("1", "2")
    assert page.count("<svg") == 3 and 'data-plot="lengths"' in page


def test_every_pair_is_rendered_with_its_id_and_step_from_one(pairs):
    page = render_report(pairs)
    blocks = _articles(page)
    assert len(blocks) == len(pairs)
    for block, pair_id in zip(blocks, pairs.pair_id, strict=True):
        assert html.escape(pair_id) in block
    first = blocks[1]  # p1, error_step 2: shown as Step 3, prefix = steps 0 and 1
    assert "error at Step 3" in first and "Rejected step (Step 3)" in first and "Chosen step (Step 3)" in first
    assert "Let&#x27;s think step by step.\nStep 1:" in first and html.escape(STEPS[1]) in first
    assert 'class="sd-side sd-rejected"' in first and 'data-verified="false"' in first
    assert "error at unknown" in blocks[3] and "Rejected solution" in blocks[3]


def test_max_pairs_caps_and_says_so(pairs):
    page = render_report(pairs, max_pairs=2)
    assert len(_articles(page)) == 2
    assert "Showing the first 2 of 6 pairs; 4 left out (max_pairs=2)" in page
    assert 'data-stat="pairs"><span class="sd-num">6<' in page  # counts still cover the whole table
    assert "left out" not in render_report(pairs) and len(_articles(render_report(pairs, max_pairs=0))) == 0
    view = PairsView(pairs, max_pairs=5)._repr_html_()
    assert len(_articles(view)) == 5 and "1 left out" in view
    with pytest.raises(ValueError):
        render_report(pairs, max_pairs=-1)


def test_table_and_single_pair_display_the_same_block(pairs, rows):
    table_html = show(pairs)._repr_html_()
    report = render_report(pairs)
    for i, row in enumerate(rows):
        block = PairView(pairs.iloc[i]).block_html()
        assert block.startswith('<article class="sd-pair"')
        assert block in table_html and block in report  # same HTML in the table view, the report...
        assert block in PairView(pairs.iloc[i])._repr_html_()  # ...and alone
        assert PairView(row).block_html() == block  # a dict renders like a Series
    assert isinstance(pairs.stepdata.show(), PairsView) and isinstance(pairs.iloc[0].stepdata.show(), PairView)
    assert pairs.stepdata.show()._repr_html_() == table_html
    assert isinstance(show(pairs.iloc[0].to_dict()), PairView)
    with pytest.raises(ValueError, match="missing"):
        show(pairs.drop(columns=["chosen"]))


def test_tolerates_nulls_numpy_and_partial_frames(pairs):
    odd = pairs.copy()
    odd["error_step"] = odd["error_step"].astype(float)  # what pandas makes of an int column with nulls
    odd["prefix_steps"] = [np.array(s, dtype=object) for s in odd["prefix_steps"]]
    odd.loc[0, "prompt_messages"] = "{not json"
    page = render_report(odd)
    assert len(_articles(page)) == 6 and "error at Step 3" in page
    assert "error at nan" not in page and "error_step = nan" not in page
    assert html.escape(STEPS[0]) in _articles(page)[1]  # numpy prefix steps shown like lists
    minimal = pairs[["pair_id", "question", "chosen", "rejected"]]
    assert len(_articles(render_report(minimal))) == 6
    empty = render_report(pairs.iloc[0:0])
    assert "0 pairs from 0 problems" in empty and empty.count("no data") == 3 and not _articles(empty)


# ---------------------------------------------------------------- CLI


def test_cli_audit(tmp_path, pairs):
    runner = CliRunner()
    table = write_table(pairs, tmp_path / "pairs.parquet", "pairs")
    out = tmp_path / "report.html"
    result = runner.invoke(main, ["audit", str(table), "--out", str(out), "--max-pairs", "4", "--title", "Run 7"])
    assert result.exit_code == 0, result.output
    assert "6 pairs (4 rendered; 2 left out" in result.output
    page = out.read_text(encoding="utf-8")
    assert "<title>Run 7</title>" in page and len(_articles(page)) == 4 and "2 left out" in page
    assert "Table metadata (schema version" in page  # the file's metadata travels into the report

    missing = runner.invoke(main, ["audit", str(tmp_path / "nope.parquet"), "--out", str(out)])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    write_table(pd.DataFrame({"problem_id": ["a"], "question": ["q"], "answer": ["1"], "solution": [None],
                              "source": ["x"], "meta": [None]}), tmp_path / "problems.parquet", "problems")
    wrong = runner.invoke(main, ["audit", str(tmp_path / "problems.parquet"), "--out", str(out)])
    assert wrong.exit_code != 0 and "expected a pairs, localized or rollouts table, found a problems table" in wrong.output
    (tmp_path / "text.parquet").write_text("not parquet")
    garbage = runner.invoke(main, ["audit", str(tmp_path / "text.parquet"), "--out", str(out)])
    assert garbage.exit_code != 0 and "cannot read it as a Parquet table" in garbage.output


# ---------------------------------------------------------------- a real browser


def _chromium() -> str:
    found = os.environ.get("STEPDATA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        reason = "chromium not installed (apt-get install -y chromium): headless-browser check of the report skipped"
        if os.environ.get("STEPDATA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _browser(chromium: str, profile: Path, *args: str) -> str:
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG decoder (8-bit grey/RGB/RGBA, not interlaced): enough for a screenshot, no PIL needed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    assert depth == 8 and interlace == 0, f"unsupported PNG (depth {depth}, interlace {interlace})"
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + prev) % 256
        else:  # Average and Paeth depend on the byte just decoded: one at a time
            vals, up = line.tolist(), prev.tolist()
            for i in range(stride):
                left = vals[i - channels] if i >= channels else 0
                upper_left = up[i - channels] if i >= channels else 0
                pred = (left + up[i]) // 2 if kind == 3 else _paeth(left, up[i], upper_left)
                vals[i] = (vals[i] + pred) % 256
            row = np.array(vals, dtype=np.int64)
        out[y] = row
        prev = row
    return out.reshape(height, width, channels)


def _near(pixels: np.ndarray, colour: str, tolerance: int = 4) -> int:
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3].astype(int) - target).max(axis=-1) <= tolerance).sum())


def test_report_in_headless_chromium(tmp_path, pairs):
    chromium = _chromium()
    report = tmp_path / "report.html"
    report.write_text(render_report(pairs, title="Audit in a browser"), encoding="utf-8")
    url = report.resolve().as_uri()

    shot = tmp_path / "report.png"
    _browser(chromium, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1280,1400", url)
    assert shot.exists() and 5_000 < shot.stat().st_size < 20_000_000
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (1400, 1280)
    colours = Counter(map(tuple, pixels[::4, ::4, :3].reshape(-1, 3).tolist()))
    assert len(colours) > 50, "screenshot is (nearly) a single colour"
    assert colours.most_common(1)[0][1] < 0.97 * sum(colours.values())
    assert _near(pixels, REJECTED_BG) > 1000 and _near(pixels, CHOSEN_BG) > 1000  # red and green highlights drawn

    dom = _browser(chromium, tmp_path / "profile2", "--dump-dom", url)
    head_title = re.search(r"<head>.*?<title>(.*?)</title>", dom, flags=re.DOTALL).group(1)
    assert head_title == "Audit in a browser" and PWNED not in head_title
    assert 'data-audit-script="ready"' in dom  # scripts did run: ours, and only ours
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom  # the payload is text...
    assert "&lt;img src=x onerror=\"document.title='PWNED'\"&gt;" in dom
    assert "<img" not in dom  # ...and no element was made of it

    # Control: the same payload unescaped does run in this browser, so the checks above can fail.
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><head><title>safe</title></head><body>{MALICIOUS}</body></html>")
    control_dom = _browser(chromium, tmp_path / "profile3", "--dump-dom", control.resolve().as_uri())
    assert re.search(r"<title>(.*?)</title>", control_dom).group(1) == PWNED
