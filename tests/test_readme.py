"""The README's two commands stay true: CI runs exactly them, and the main-job part works."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from stepdata import read_table

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Set-up and tests.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README has no set-up block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_setup_and_test_commands_and_ci_runs_them():
    setup_and_main, tests = readme_commands()
    setup, _, main_job = setup_and_main.partition(" && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert setup == "bash setup.sh" and setup in ci
    assert tests in ci
    assert main_job.startswith(".venv/bin/stepdata ")


def test_readme_main_job_runs(tmp_path):
    setup_and_main, _ = readme_commands()
    main_job = shlex.split(setup_and_main.partition(" && ")[2])
    # Use this interpreter's environment (the one setup.sh built, in CI) from a scratch folder.
    command = [sys.executable, str(REPO / "cli.py"), *main_job[1:]]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    out = tmp_path / main_job[main_job.index("--out") + 1]
    assert len(read_table(out, kind="problems")) == 100
