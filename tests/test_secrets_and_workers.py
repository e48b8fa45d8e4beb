"""Secrets and stray processes (issue 12, items 2, 3 and 5): each CLI test fails on the code before the fix.

- 2: only real secrets are redacted from a run's config; counts such as ``max_tokens`` (and the
  ``tokenizer``) are recorded and hashed, so a rectify restarted with another ``--max-tokens`` is
  refused, naming the key;
- 3: an API key that a server echoes in its error text ("Incorrect API key provided: sk-...")
  reaches no table, part, summary, manifest or log line;
- 5: answer-check workers die with the process that started them, even when it is killed with
  SIGKILL in the middle of a check.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from fake_openai_server import FaultyOpenAIServer

import stepdata
from stepdata import read_metadata, read_table, write_table
from stepdata.embedded import make_problems

REPO = Path(stepdata.__file__).resolve().parents[1]  # the checkout whose stepdata is imported
CLI = str(REPO / "cli.py")
PROBLEMS = make_problems(2, seed=5, min_steps=2, max_steps=2)
# A wrong first step ("1 + 1 = 3" is false, so the rules localize it) and a stated answer.
WRONG_SOLUTION = " 1 + 1 = 3.\nStep 2: So the answer is 3."
SK_KEY = "sk-proj-Zq8XyW3vT5uR1sQ0pO9nM7lK6jH4gF2dS"
PLAIN_KEY = "plain-secret-0042-horse-battery"  # not shaped like a key: only its being in $OPENAI_API_KEY gives it away


def invoke(args: list) -> object:
    result = CliRunner().invoke(__import__("cli").main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def cli(args: list, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in a subprocess (its own logging set-up, as a user runs it)."""
    return subprocess.run([sys.executable, CLI, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env | extra


@pytest.fixture
def problems(tmp_path) -> Path:
    path = tmp_path / "problems.parquet"
    write_table(PROBLEMS, path, "problems")
    return path


# --- 2. counts are not secrets ----------------------------------------------------------------------


def test_rectify_restarted_with_another_max_tokens_is_refused_naming_it(tmp_path, monkeypatch, problems):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(reply_body=lambda body, index: WRONG_SOLUTION) as server:
        engine = ["--backend", "openai", "--model", "policy", "--base-url", server.base_url]
        rollouts, localized, out = tmp_path / "r.parquet", tmp_path / "l.parquet", tmp_path / "stepdpo.parquet"
        assert invoke(["sample", problems, *engine, "--n", "1", "--out", rollouts]).exit_code == 0
        assert invoke(["localize", rollouts, "--method", "rules", "--out", localized]).exit_code == 0
        assert (read_table(localized).status == "error").all()
        args = ["rectify", localized, *engine, "--n", "2", "--out", out]
        first = invoke([*args, "--max-tokens", "32"])
        assert first.exit_code == 0, first.output
        served = len(server.served)

        again = invoke([*args, "--max-tokens", "4"])
        assert again.exit_code != 0, again.output  # it was accepted as "already finished" before the fix
        assert "max_tokens: 32 -> 4" in again.output and "--overwrite" in again.output
        assert len(server.served) == served  # refused before any request

    config = read_metadata(out)["config"]
    assert config["max_tokens"] == 32
    manifest = json.loads(next((tmp_path / "stepdpo.attempts.parquet.parts").glob("manifest-*.json")).read_text())
    assert manifest["config"]["max_tokens"] == 32


def test_only_real_secrets_are_redacted():
    from stepdata.io import redact_secrets
    from stepdata.pipeline.run import config_diff, config_hash

    config = {
        "max_tokens": 32, "max_step_tokens": 160, "judge_max_tokens": 1024, "tokenizer": "/models/tok",
        "tokens": [1], "prompt_tokens": 11, "eos_token": "</s>", "api_key_env": "OPENAI_API_KEY",
        "api_key": "k1", "openai_api_key": "k2", "hf_token": "k3", "access_token": "k4", "auth_token": "k5",
        "bearer_token": "k6", "api_token": "k7", "token": "k8", "password": "k9", "db_password": "k10",
        "client_secret": "k11", "Authorization": "Bearer k12", "headers": {"authorization": "k13", "X-Api-Key": "k14"},
        "engine_options": ["dtype=float32", "api_key=k15", "hf_token=k16", "max_tokens=9"],
    }
    cleaned = redact_secrets(config)
    for key in ("max_tokens", "max_step_tokens", "judge_max_tokens", "tokenizer", "tokens", "prompt_tokens",
                "eos_token", "api_key_env"):
        assert cleaned[key] == config[key], key
    assert "k1" not in json.dumps(cleaned) and "k16" not in json.dumps(cleaned)  # every k<i> is gone
    assert all(f'"k{i}"' not in json.dumps(cleaned) for i in range(1, 17))
    assert cleaned["engine_options"] == ["dtype=float32", "api_key=<redacted>", "hf_token=<redacted>", "max_tokens=9"]
    assert config_hash(config) != config_hash(config | {"max_tokens": 4})
    assert config_hash(config) == config_hash(config | {"api_key": "another"})
    assert config_diff(config, config | {"judge_max_tokens": 8, "hf_token": "other"}) == ["judge_max_tokens: 1024 -> 8"]


def test_the_tokenizer_that_renders_prompts_is_recorded(tiny_model_dir, monkeypatch):
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.pipeline.run import config_diff

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    chat = EngineConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    rendered = EngineConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", tokenizer=str(tiny_model_dir))
    assert chat.describe() == {"backend": "openai", "model": "m", "dtype": None}
    assert rendered.describe() == chat.describe() | {"endpoint": "completions", "tokenizer": str(tiny_model_dir)}
    with rendered.build() as generator:  # what a loaded engine says is what its settings said
        assert generator.describe() == rendered.describe()
    assert config_diff({"engine": chat.describe()}, {"engine": rendered.describe()}) == [
        'engine.endpoint: (not set) -> "completions"', f'engine.tokenizer: (not set) -> "{tiny_model_dir}"']


# --- 3. keys in server error text -------------------------------------------------------------------


def files_holding(root: Path, secret: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes())


def test_a_key_echoed_by_the_server_reaches_no_table_part_summary_or_log(tmp_path, problems):
    """The key comes from $OPENAI_API_KEY and does not look like one: the env value itself is scrubbed."""
    env = cli_env(OPENAI_API_KEY=PLAIN_KEY)
    with FaultyOpenAIServer(reply_body=lambda body, index: WRONG_SOLUTION, echo_key=True) as server:
        engine = ["--backend", "openai", "--model", "policy", "--base-url", server.base_url,
                  "--engine-option", "backoff_base=0.01"]
        logs = []
        for args in (["sample", problems, *engine, "--n", "1", "--out", "rollouts.parquet"],
                     ["localize", "rollouts.parquet", "--method", "rules", "--out", "localized.parquet"]):
            done = cli(["-v", *args], env, tmp_path)
            assert done.returncode == 0, done.stderr
            logs.append(done.stderr + done.stdout)
        server.attempts.clear()
        server.default = ["500", "401"] * 4  # from now on: a retried 500, then a 401, both echoing the key
        for args in (["rectify", "localized.parquet", *engine, "--n", "2", "--batch-size", "1", "--out", "stepdpo.parquet"],
                     ["sample", problems, *engine, "--n", "1", "--out", "failed.parquet"]):
            done = cli(["-v", *args], env, tmp_path)
            assert done.returncode == 0, done.stderr
            logs.append(done.stderr + done.stdout)

    failed = read_table(tmp_path / "failed.parquet")
    assert failed.error.notna().all() and failed.error.str.contains("Incorrect API key provided").all()
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet")
    assert attempts.error.notna().all() and attempts.error.str.contains("HTTP 401").all()
    assert any("retry 1/" in log for log in logs)  # the 500 was retried and logged (with -v)
    assert files_holding(tmp_path, PLAIN_KEY) == []
    assert all(PLAIN_KEY not in log for log in logs)
    assert "<redacted>" in failed.error[0]


def test_a_key_shaped_value_is_scrubbed_whatever_variable_holds_it(tmp_path, problems):
    """The key sits in a variable whose name says nothing (``api_key_env``): its sk-... shape gives it away."""
    env = cli_env(MY_SERVER_CREDENTIAL=SK_KEY)
    with FaultyOpenAIServer(default=["500", "401"], echo_key=True) as server:
        done = cli(["-v", "sample", problems, "--backend", "openai", "--model", "policy", "--base-url", server.base_url,
                    "--engine-option", "backoff_base=0.01", "--engine-option", "api_key_env=MY_SERVER_CREDENTIAL",
                    "--n", "2", "--batch-size", "1", "--out", "rollouts.parquet"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    rollouts = read_table(tmp_path / "rollouts.parquet")
    assert rollouts.error.str.contains("Incorrect API key provided").all()
    assert files_holding(tmp_path, SK_KEY) == [] and SK_KEY not in done.stderr + done.stdout
    assert "retry 1/" in done.stderr and SK_KEY[:12] not in done.stderr


def test_scrub_hides_env_secrets_and_key_shapes_only():
    from stepdata.secrets import scrub_secrets

    env = {"OPENAI_API_KEY": PLAIN_KEY, "HF_TOKEN": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "VLLM_API_KEY": "x",
           "PATH": "/usr/bin"}
    text = (f"key {PLAIN_KEY}; hub hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789; {SK_KEY}; "
            "Authorization: Bearer abc.def-ghi_jkl; api_key=zzz999yyy; x; /usr/bin; max_tokens=4; sk-learn")
    scrubbed = scrub_secrets(text, environ=env)
    for secret in (PLAIN_KEY, "hf_AbCdEf", SK_KEY, "abc.def-ghi_jkl", "zzz999yyy"):
        assert secret not in scrubbed, secret
    assert "/usr/bin" in scrubbed and "max_tokens=4" in scrubbed and "sk-learn" in scrubbed and "; x;" in scrubbed
    assert scrub_secrets(None) is None


def test_table_writes_and_logs_are_a_last_line_of_defence(tmp_path, monkeypatch, caplog):
    from stepdata.secrets import SecretFilter

    monkeypatch.setenv("VLLM_API_KEY", PLAIN_KEY)
    row = {"problem_id": "p", "rollout_id": "p:0", "prompt": "q", "completion": None, "steps": None,
           "pred_answer": None, "correct": None, "finish_reason": None, "model": f"m {SK_KEY}",
           "sampling": None, "prompt_tokens": None, "completion_tokens": None,
           "error": f"generation: refused {PLAIN_KEY} and {SK_KEY}"}
    ok = row | {"rollout_id": "p:1", "error": None, "completion": "a text about sk-learn", "model": "m"}
    path = write_table(pd.DataFrame([row, ok]), tmp_path / "r.parquet", "rollouts", config={"note": SK_KEY})
    assert files_holding(tmp_path, PLAIN_KEY) == [] and files_holding(tmp_path, SK_KEY) == []
    back = read_table(path)
    assert back.error[0].startswith("generation: refused <redacted>") and back.completion[1] == ok["completion"]

    logger = logging.getLogger("stepdata.test_secrets")
    handler = logging.StreamHandler(open(tmp_path / "log.txt", "w"))  # noqa: SIM115 - closed below
    handler.addFilter(SecretFilter())
    logger.addHandler(handler)
    try:
        logger.warning("server said %s", f"no: {PLAIN_KEY}")
        try:
            raise RuntimeError(f"Incorrect API key provided: {SK_KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.stream.close()
    text = (tmp_path / "log.txt").read_text()
    assert "server said no: <redacted>" in text and "Incorrect API key provided: <redacted>" in text
    assert PLAIN_KEY not in text and SK_KEY not in text


# --- 5. no orphaned answer-check workers ------------------------------------------------------------

HANGING_ANSWER = " 1 + 1 = 2.\nStep 2: So the answer is \\boxed{9^{9^{9^{9^{9}}}}}."  # Math-Verify never ends


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _bytes_written(pid: int) -> int:
    try:
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(io.get("wchar", 0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_answer_check_workers_die_with_a_killed_stage(tmp_path, problems):
    server = FaultyOpenAIServer(reply_body=lambda body, index: HANGING_ANSWER)
    env = cli_env(OPENAI_API_KEY="x", STEPDATA_CHECK_WORKERS="2")
    workers: list[int] = []
    with server:
        main = subprocess.Popen([sys.executable, CLI, "sample", str(problems), "--backend", "openai", "--model", "policy",
                                 "--base-url", server.base_url, "--n", "2", "--answer-timeout", "600",
                                 "--out", "rollouts.parquet"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until both workers have said "ready" and are checking
                workers = [p for p in _children(main.pid) if "stepdata.answers.worker_main" in _cmdline(p)]
                if len(workers) == 2 and all(_bytes_written(p) > 0 for p in workers):
                    break
                assert main.poll() is None, "the stage ended before its answer checks started"
                time.sleep(0.1)
            else:
                pytest.fail(f"the answer-check workers did not start (found {workers})")
            time.sleep(1.0)  # the calls are under way: the workers are busy in Math-Verify
            assert all(_alive(p) for p in workers)
            main.send_signal(signal.SIGKILL)
            main.wait(timeout=10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_alive(p) for p in workers):
                time.sleep(0.1)
            left = [p for p in workers if _alive(p)]
            assert left == [], f"workers {left} outlived their killed parent {main.pid}"
        finally:
            if main.poll() is None:
                main.kill()
            for pid in workers:  # never leave a spinning orphan behind (the code before the fix did)
                if _alive(pid) and "stepdata.answers.worker_main" in _cmdline(pid):
                    os.kill(pid, signal.SIGKILL)


def test_a_worker_exits_when_the_pipe_from_its_parent_closes(tmp_path):
    """The guard that works without prctl: a thread waiting on the parent's pipe ends the process."""
    theirs, ours = os.pipe()
    code = ("import sys, threading, time; from stepdata.answers.worker_main import _exit_when_closed; "
            f"threading.Thread(target=_exit_when_closed, args=({theirs},), daemon=True).start(); "
            "print('up', flush=True); deadline = time.monotonic() + 60\n"
            "while time.monotonic() < deadline: sum(range(10000))\nsys.exit(3)")
    child = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs,), stdout=subprocess.PIPE,
                             env=cli_env(), cwd=tmp_path)
    os.close(theirs)
    try:
        assert child.stdout.readline() == b"up\n"
        time.sleep(0.5)
        assert child.poll() is None  # busy, as a worker in a long check is
        os.close(ours)  # what the kernel does when the parent dies
        assert child.wait(timeout=5) == 1
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


def test_pooled_workers_outlive_the_threads_that_started_them(monkeypatch):
    """A parent-death signal fires when the *thread* that started a worker ends: the pool must not lose
    its idle workers when a check_answers thread pool shuts down."""
    import stepdata.answers.verify as verify
    from stepdata.answers import AnswerCheckConfig
    from stepdata.answers.bounded import BoundedPool

    config = AnswerCheckConfig(timeout=30)
    pool = BoundedPool(max_workers=2, preload=(verify.WORKER_MODULE,))
    monkeypatch.setattr(verify, "shared_pool", lambda preload: pool)
    try:
        pairs = [("\\frac{1}{2}", "0.5\\cdot 1"), ("x+1", "1+x")]
        assert [v.match for v in verify.check_answers(pairs, config, threads=2)] == [True, True]
        time.sleep(0.5)  # the executor's threads are gone now
        idle = [w.process.pid for w in pool._idle]
        assert idle and all(_alive(p) for p in idle)
        assert [v.match for v in verify.check_answers(pairs, config, threads=2)] == [True, True]
        assert pool.restarts == 0 and sorted(w.process.pid for w in pool._idle) == sorted(idle)
    finally:
        pool.close()


def test_the_working_directory_is_not_a_secret(monkeypatch, tmp_path):
    """$PWD names the working directory (every path under it would vanish from tables and logs); DB_PWD is a password."""
    from stepdata.secrets import is_secret_name, scrub_secrets

    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("DB_PWD", "hunter2-hunter2")
    assert not is_secret_name("PWD") and not is_secret_name("OLDPWD") and is_secret_name("DB_PWD")
    assert scrub_secrets(f"{tmp_path}/rollouts.parquet with hunter2-hunter2") == f"{tmp_path}/rollouts.parquet with <redacted>"
