"""What a resumable run guarantees (issue 12), each driven through the real CLI and failing on the code before:

1. resume matches parts to the input's units by id and content, never by position: a changed input
   is refused (``--redo-changed-units`` redoes only the changed units); a changed problems table is
   a named config change;
4. one writer per output shard: a second one is refused naming the first, a stale lock of a killed
   run is taken over;
6. a part or manifest that does not read is named and recovered (the part's batch redone, the
   manifest rebuilt from the parts' own records); leftover ``.tmp`` files of a killed write go;
7. a full disk is a clear error saying where space ran out, and the same command then resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from fake_openai_server import FaultyOpenAIServer
from test_new_user import invoke, scripted

from stepdata import read_metadata, read_table, write_table
from stepdata.embedded import make_problems

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "cli.py")]
PROBLEMS = make_problems(4, seed=11, min_steps=3, max_steps=4)  # the scripted policy's problems


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")


def arithmetic_reply(key: str, seed: int | None, index: int) -> str:
    """A wrong solution whose first step is wrong for some seeds (the rules localizer finds it)."""
    slip = ((seed or 0) + index) % 2
    return f"Step 1: 3 + 4 = {7 + slip}.\nStep 2: 2 * 5 = 10.\nStep 3: The answer is 12345."


def problems_file(path: Path, problems: pd.DataFrame) -> Path:
    write_table(problems, path, "problems")
    return path


def engine_args(server) -> list[str]:
    return ["--backend", "openai", "--model", "m", "--base-url", server.base_url]


def cli(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=kwargs.pop("timeout", 180),
                          **kwargs)


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def parts_of(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


# --- 1. the input and the problems are part of what a resume checks ---------------------------------------


def test_localize_refuses_rollouts_resampled_with_another_seed_and_can_redo_them(runner, tmp_path):
    problems = problems_file(tmp_path / "problems.parquet", make_problems(8, seed=21))
    rollouts, localized, fresh = (tmp_path / f"{n}.parquet" for n in ("rollouts", "localized", "fresh"))
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        sample = ["sample", problems, *engine_args(server), "--n", "2", "--batch-size", "4", "--out", rollouts]
        assert invoke(runner, [*sample, "--seed", "0"]).exit_code == 0
        localize = ["localize", rollouts, "--method", "rules", "--batch-size", "5", "--out", localized]
        assert invoke(runner, localize).exit_code == 0
        assert invoke(runner, [*sample, "--seed", "1", "--overwrite"]).exit_code == 0
    resampled = read_table(rollouts)

    refused = invoke(runner, localize)
    assert refused.exit_code != 0, refused.output
    message = refused.output
    assert "input" in message and "changed" in message and "--redo-changed-units" in message
    assert "16 changed" in message and resampled.rollout_id[0] in message  # how many, and an example by id

    redone = invoke(runner, [*localize, "--redo-changed-units"])
    assert redone.exit_code == 0, redone.output
    table = read_table(localized)
    assert table.completion.tolist() == resampled.completion.tolist()  # every row from the new rollouts
    assert invoke(runner, ["localize", rollouts, "--method", "rules", "--batch-size", "5", "--out", fresh]).exit_code == 0
    same_rows(table, read_table(fresh))


def test_localize_on_an_input_that_grew_at_the_front_redoes_only_the_new_units(runner, tmp_path):
    old, front = make_problems(8, seed=21), make_problems(3, seed=77)
    assert not set(old.problem_id) & set(front.problem_id)
    rollouts, localized, fresh = (tmp_path / f"{n}.parquet" for n in ("rollouts", "localized", "fresh"))
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        def sample(problems: pd.DataFrame, *extra):
            path = problems_file(tmp_path / "problems.parquet", problems)
            args = ["sample", path, *engine_args(server), "--n", "2", "--batch-size", "4", "--out", rollouts, *extra]
            assert invoke(runner, args).exit_code == 0

        sample(old)
        localize = ["localize", rollouts, "--method", "rules", "--batch-size", "5", "--out", localized]
        assert invoke(runner, localize).exit_code == 0
        before = read_table(localized)
        sample(pd.concat([front, old], ignore_index=True), "--overwrite")  # 6 rows more, at the front
    grown = read_table(rollouts)

    refused = invoke(runner, localize)  # the problems table it reads (the lineage's) grew too: a named change
    assert refused.exit_code != 0, refused.output
    assert "problems_table.rows: 8 -> 11" in refused.output and "--redo-changed-units" in refused.output
    localize.append("--allow-config-change")
    refused = invoke(runner, localize)
    assert refused.exit_code != 0, refused.output
    assert "6 new" in refused.output and "--redo-changed-units" in refused.output

    redone = invoke(runner, [*localize, "--redo-changed-units"])
    assert redone.exit_code == 0, redone.output
    table = read_table(localized)
    assert table.rollout_id.tolist() == grown.rollout_id.tolist()  # none doubled, none missing, in order
    summary = json.loads((tmp_path / "localized.parquet.summary.json").read_text())
    assert summary["units_reused"] == len(before) and summary["units"] == len(grown)
    assert invoke(runner, ["localize", rollouts, "--method", "rules", "--batch-size", "5", "--out", fresh]).exit_code == 0
    same_rows(table, read_table(fresh))


def test_a_changed_problems_table_is_a_named_config_change(runner, tmp_path):
    problems = problems_file(tmp_path / "problems.parquet", PROBLEMS)
    rollouts, localized, pairs = (tmp_path / f"{n}.parquet" for n in ("rollouts", "localized", "pairs"))
    with FaultyOpenAIServer(reply_body=scripted({0})) as server:
        assert invoke(runner, ["sample", problems, *engine_args(server), "--n", "2", "--out", rollouts]).exit_code == 0
        localize = ["localize", rollouts, "--method", "exact", "--out", localized]  # problems: the lineage's
        assert invoke(runner, localize).exit_code == 0
        rectify = ["rectify", localized, "--backend", "openai", "--base-url", server.base_url, "--n", "2",
                   "--out", pairs]
        assert invoke(runner, rectify).exit_code == 0
        edited = PROBLEMS.copy()
        edited.loc[0, "answer"] = "999999"  # the gold answer of one problem was corrected
        problems_file(problems, edited)
        for command in (localize, rectify):
            refused = invoke(runner, command)
            assert refused.exit_code != 0, refused.output
            assert "problems_table.fingerprint:" in refused.output and "another config" in refused.output
        # told to keep the old batches and redo what changed: only the units of the edited problem are redone
        served = len(server.served)
        redone = invoke(runner, [*rectify, "--allow-config-change", "--redo-changed-units"])
        assert redone.exit_code == 0, redone.output
    attempts = read_table(tmp_path / "pairs.attempts.parquet")
    edited_units = int((attempts.problem_id == PROBLEMS.problem_id[0]).sum())
    assert 0 < edited_units < len(attempts)
    summary = json.loads((tmp_path / "pairs.attempts.parquet.summary.json").read_text())
    assert summary["units_reused"] == len(attempts) - edited_units
    assert 0 < len(server.served) - served <= edited_units  # requests for the edited problem's units only


# --- 4. one writer per output ------------------------------------------------------------------------------


class Slowed:
    """A reply function that waits ``delay`` seconds before answering once ``delay`` is set, and while ``gate``
    is set, until it is cleared (a run held mid-batch for as long as a test needs, however loaded the machine)."""

    def __init__(self, reply):
        self.reply, self.delay, self.calls = reply, 0.0, 0
        self.gate = threading.Event()

    def __call__(self, body, index):
        if self.delay or self.gate.is_set():
            self.calls += 1
            time.sleep(self.delay)
            deadline = time.monotonic() + 300
            while self.gate.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.reply(body, index)


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_second_writer_on_the_same_out_is_refused_naming_the_first(runner, tmp_path):
    problems = problems_file(tmp_path / "problems.parquet", PROBLEMS)
    rollouts, localized, pairs = (tmp_path / f"{n}.parquet" for n in ("rollouts", "localized", "pairs"))
    policy = Slowed(scripted({0}))
    with FaultyOpenAIServer(reply_body=policy) as server:
        assert invoke(runner, ["sample", problems, *engine_args(server), "--n", "2", "--out", rollouts]).exit_code == 0
        assert invoke(runner, ["localize", rollouts, "--method", "exact", "--out", localized]).exit_code == 0
        policy.gate.set()  # the first run's requests wait until the second run has been refused
        rectify = ["rectify", localized, *engine_args(server), "--n", "2", "--out", pairs]
        first = subprocess.Popen([*CLI, *map(str, rectify), "--seed", "0"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: policy.calls > 0, seconds=180)  # the first run is generating its first batch
            second = cli([*rectify, "--seed", "1"])
        finally:
            policy.gate.clear()
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert second.returncode != 0, second.stderr
    assert "Traceback" not in second.stderr
    assert f"pid {first.pid}" in second.stderr and "being written" in second.stderr
    attempts = tmp_path / "pairs.attempts.parquet"
    assert read_metadata(attempts)["config"]["seed"] == 0
    for part in parts_of(attempts).glob("part-*.parquet"):
        assert read_metadata(part)["config"]["seed"] == 0


def test_a_stale_lock_of_a_killed_run_is_taken_over_and_the_rows_are_the_same(runner, tmp_path):
    problems = problems_file(tmp_path / "problems.parquet", make_problems(8, seed=21))
    reference, out = tmp_path / "reference.parquet", tmp_path / "rollouts.parquet"
    policy = Slowed(lambda body, index: arithmetic_reply("", body.get("seed"), index))
    with FaultyOpenAIServer(reply_body=policy) as server:
        sample = ["sample", problems, *engine_args(server), "--n", "2", "--batch-size", "2"]
        assert invoke(runner, [*sample, "--out", reference]).exit_code == 0
        policy.delay = 0.5
        killed = subprocess.Popen([*CLI, *map(str, sample), "--out", str(out)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_for(lambda: len(list(parts_of(out).glob("part-*.parquet"))) >= 1)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        policy.delay = 0.0
        again = cli([*sample, "--out", out])
    assert again.returncode == 0, again.stderr
    assert "stale lock" in again.stderr and f"pid {killed.pid}" in again.stderr
    same_rows(read_table(out), read_table(reference))
    assert not list(parts_of(out).glob("lock-*"))  # released at the end


def test_shards_of_one_out_run_at_the_same_time(tmp_path):
    problems = problems_file(tmp_path / "problems.parquet", make_problems(8, seed=21))
    out = tmp_path / "rollouts.parquet"
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args = [*CLI, "sample", str(problems), *engine_args(server), "--n", "2", "--batch-size", "2", "--out", str(out)]
        running = [subprocess.Popen([*args, "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for i in range(2)]
        results = [(p.communicate(timeout=180), p.returncode) for p in running]
    for (_, err), code in results:
        assert code == 0, err


# --- 6. parts and manifests that do not read ------------------------------------------------------------------


def finished_sample(runner, tmp_path, server) -> tuple[list[str], Path, pd.DataFrame]:
    problems = problems_file(tmp_path / "problems.parquet", make_problems(8, seed=21))
    out = tmp_path / "rollouts.parquet"
    args = ["sample", problems, *engine_args(server), "--n", "2", "--batch-size", "2", "--out", out]
    assert invoke(runner, args).exit_code == 0
    reference = read_table(out)
    out.unlink()  # as if the run was killed before it assembled the table
    return args, out, reference


def test_a_truncated_part_is_named_and_its_batch_redone(runner, tmp_path):
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args, out, reference = finished_sample(runner, tmp_path, server)
        part = parts_of(out) / "part-00000-of-00001-000002.parquet"
        data = part.read_bytes()
        part.write_bytes(data[: len(data) // 2])
        served = len(server.served)
        again = cli(args)
    assert again.returncode == 0, again.stderr
    assert part.name in again.stderr and "does not read" in again.stderr and "redo" in again.stderr
    assert len(server.served) == served + 2  # the two problems of that batch, nothing else
    same_rows(read_table(out), reference)


def test_a_garbled_part_is_named_too(runner, tmp_path):
    """Bytes changed inside a part whose footer survived: pyarrow raises OSError there, not ArrowInvalid."""
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args, out, reference = finished_sample(runner, tmp_path, server)
        part = parts_of(out) / "part-00000-of-00001-000001.parquet"
        data = bytearray(part.read_bytes())
        data[8 : len(data) // 2] = b"\x55" * (len(data) // 2 - 8)
        part.write_bytes(bytes(data))
        again = cli(args)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and part.name in again.stderr
    same_rows(read_table(out), reference)


@pytest.mark.parametrize("garble", ["truncated", "not a mapping"])
def test_a_garbled_manifest_is_rebuilt_from_the_parts(runner, tmp_path, garble):
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args, out, reference = finished_sample(runner, tmp_path, server)
        manifest = parts_of(out) / "manifest-00000-of-00001.json"
        text = manifest.read_text()
        manifest.write_text(text[: len(text) // 2] if garble == "truncated" else "[]")
        served = len(server.served)
        again = cli(args)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert manifest.name in again.stderr and "rebuilt" in again.stderr and "4 part" in again.stderr
    assert len(server.served) == served  # every part was good: nothing generated again
    same_rows(read_table(out), reference)
    assert json.loads(manifest.read_text())["batches"]  # readable again


def test_leftover_tmp_files_of_a_killed_write_are_removed(runner, tmp_path):
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args, out, reference = finished_sample(runner, tmp_path, server)
        dead = 2**22 + 12345  # above pid_max's default: no such process
        leftovers = [parts_of(out) / f".part-00000-of-00001-000001.parquet.{dead}.0123abcd.tmp",
                     parts_of(out) / f".manifest-00000-of-00001.json.{dead}.0123abcd.tmp",
                     tmp_path / f".rollouts.parquet.{dead}.0123abcd.tmp"]
        for path in leftovers:
            path.write_bytes(b"PAR1 half a table")
        again = cli(args)
    assert again.returncode == 0, again.stderr
    assert not [path for path in leftovers if path.exists()]
    same_rows(read_table(out), reference)


# --- 7. a full disk --------------------------------------------------------------------------------------------


def can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unshare and a tmpfs mount in a user namespace")
def test_a_full_disk_says_where_and_the_same_command_resumes(runner, tmp_path):
    """The output on a real 256 KiB tmpfs that a filler file leaves ~24 KiB of, in a private mount namespace."""
    problems = problems_file(tmp_path / "problems.parquet", make_problems(8, seed=21))
    disk, report = tmp_path / "disk", tmp_path / "report"
    disk.mkdir(), report.mkdir()
    with FaultyOpenAIServer(reply_text=arithmetic_reply) as server:
        args = ["sample", problems, *engine_args(server), "--n", "2", "--batch-size", "2"]
        assert invoke(runner, [*args, "--out", tmp_path / "reference.parquet"]).exit_code == 0
        command = " ".join(map(str, [*CLI, *args, "--out", disk / "rollouts.parquet"]))
        script = textwrap.dedent(f"""\
            mount -t tmpfs -o size=256k tmpfs {disk}
            {sys.executable} -c "import os; s = os.statvfs('{disk}'); \\
            open('{disk}/filler', 'wb').write(bytes(s.f_bavail * s.f_frsize - 24 * 1024))"
            {command} > {report}/first.out 2> {report}/first.err; echo $? > {report}/first.rc
            rm {disk}/filler
            {command} > {report}/second.out 2> {report}/second.err; echo $? > {report}/second.rc
            cp -r {disk}/. {report}/disk/
        """)
        done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first_err = (report / "first.err").read_text()
    assert (report / "first.rc").read_text().strip() == "1", first_err
    assert "Traceback" not in first_err
    assert "no space left" in first_err.lower() and str(disk) in first_err and "same command" in first_err
    second_err = (report / "second.err").read_text()
    assert (report / "second.rc").read_text().strip() == "0", second_err
    same_rows(read_table(report / "disk" / "rollouts.parquet"), read_table(tmp_path / "reference.parquet"))
    assert not list((report / "disk").rglob("*.tmp"))
