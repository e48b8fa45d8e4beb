"""The example notebooks run headlessly, show what they promise, and render in a real browser.

They read the quickstart's output (runs/quickstart, which CI makes before the tests); without it, a
small run folder of the same shape is built here (tests/audit_data.py: real tables, no model). Each
notebook is executed with nbclient in a fresh python3 kernel (ipykernel) and must not raise; its
HTML outputs are checked; one executed notebook is rendered with nbconvert and screenshotted in
headless Chromium (skipped without Chromium, failed without it under STEPDATA_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from audit_data import build_run
from conftest import REQUIRE_ENGINES
from test_audit import _browser, _chromium, _near, decode_png

from stepdata.audit.theme import REJECTED_BG

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# CI (STEPDATA_REQUIRE_ENGINES=1) installs the test extra: there a missing nbclient or ipykernel fails instead
pytestmark = pytest.mark.skipif(not REQUIRE_ENGINES and any(importlib.util.find_spec(m) is None for m in
                                                            ("nbclient", "ipykernel", "nbconvert")),
                                reason="needs the test extra's nbclient, ipykernel and nbconvert")


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", EXAMPLES / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, dict]:
    """Every example notebook, executed against the quickstart's output (or a small run built here)."""
    quickstart = REPO / "runs" / "quickstart"
    run = quickstart if (quickstart / "quickstart.json").exists() else build_run(tmp_path_factory.mktemp("run"))
    out = tmp_path_factory.mktemp("notebooks")
    runner = _runner()
    done = {}
    for name in runner.NOTEBOOKS:
        path = runner.execute(EXAMPLES / name, run, out, timeout=300)
        done[name] = {"path": path, "notebook": json.loads(path.read_text(encoding="utf-8")), "out": out}
    return done


def _html_outputs(notebook: dict) -> list[str]:
    return ["".join(o["data"]["text/html"]) if isinstance(o["data"]["text/html"], list) else o["data"]["text/html"]
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for o in cell.get("outputs", []) if "text/html" in o.get("data", {})]


def test_notebooks_declare_python3_and_store_no_outputs():
    for name in _runner().NOTEBOOKS:
        notebook = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        assert all(not cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code"), name


@pytest.mark.slow
def test_notebooks_run_and_show_their_views(executed, tmp_path):
    for name, done in executed.items():
        errors = [o for cell in done["notebook"]["cells"] for o in cell.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, (name, errors)
        for output in _html_outputs(done["notebook"]):
            assert "<script" not in output and "<img" not in output  # notebook outputs carry no script
    localized = "".join(_html_outputs(executed["audit_localized.ipynb"]["notebook"]))
    assert 'data-kind="localized"' in localized and 'data-kind="rollouts"' in localized
    assert '<li class="sd-step sd-wrong"' in localized and 'data-evidence="' in localized
    compare = "".join(_html_outputs(executed["compare_localizers.ipynb"]["notebook"]))
    assert 'data-matrix="step"' in compare and compare.count("<svg") >= 3 and "last-step" in compare
    pairs = "".join(_html_outputs(executed["audit_pairs.ipynb"]["notebook"]))
    assert '<article class="sd-pair"' in pairs
    out = executed["audit_pairs.ipynb"]["out"]
    for page in ("localized.html", "compare.html", "pairs.html"):  # the pages the notebooks write
        text = (out / page).read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and text.count("<script") == 1

    # one executed notebook as HTML (nbconvert), in a real browser
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed["audit_localized.ipynb"]["path"], as_version=4))
    assert re.search(r'<li class="sd-step sd-wrong"', body)
    page = tmp_path / "audit_localized.html"
    page.write_text(body, encoding="utf-8")
    chromium = _chromium()
    shot = tmp_path / "notebook.png"
    _browser(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", page.resolve().as_uri())
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (2400, 1280)
    colours = Counter(map(tuple, pixels[::4, ::4, :3].reshape(-1, 3).tolist()))
    assert len(colours) > 50 and colours.most_common(1)[0][1] < 0.97 * sum(colours.values())
    assert _near(pixels, REJECTED_BG) > 1000  # the first wrong steps are drawn highlighted
