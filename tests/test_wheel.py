"""The toolkit installs from a built wheel into a clean virtual environment and works there."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)], check=True)
    wheels = list(dist.glob("stepdata-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels[0])], check=True)

    def run(*args: str) -> str:
        # Run outside the repository so nothing is imported from the source tree.
        done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "make-problems" in run(str(env_dir / "bin" / "stepdata"), "--help")
    listed = run(str(env_dir / "bin" / "stepdata"), "prompts")
    assert "step_by_step" in listed and str(env_dir) in listed
    out = run(
        str(python),
        "-c",
        "import stepdata, sys;"
        "assert 'torch' not in sys.modules and 'vllm' not in sys.modules;"
        "print(stepdata.load_prompt('step_by_step').render(question='2+2?')[-1]['content']);"
        "print(stepdata.answers_match('\\\\frac{1}{2}', '0.5'), stepdata.answers_match('\\\\sqrt{4}', '2'));"
        "df = stepdata.make_problems(3); stepdata.write_table(df, 'p.parquet', 'problems');"
        "print(len(stepdata.read_table('p.parquet')))",
    )
    assert out.splitlines() == ["Let's think step by step.", "Step 1:", "True True", "3"]
