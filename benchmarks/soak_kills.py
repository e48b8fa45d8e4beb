"""Soak test of resume: every stage killed (SIGKILL) at random points many times, restarted with the same command.

A scripted policy behind a local OpenAI-compatible server (tests/fake_openai_server.py)
answers every stage: it writes embedded problems' gold steps, right for sample 0 and
wrong from a step that depends on the sample index otherwise, so each stage has real
work (wrong rollouts to localize and rectify, correct ones to synthesize from). Stages,
each through the CLI in a subprocess (``python cli.py ...``):

    sample, localize --method rules, localize --method rollouts, rectify, synthesize

For each stage the same command is run uninterrupted into ``ref/`` and, into ``soak/``,
started again and again and SIGKILLed (with the answer-check workers it started) at a
random moment: in start-up (1 kill in 5), or once it holds the output's lock, after 0 or 1
more batches are recorded and part of the way into the next one (mid-request, while a
part or the manifest is written, ...), until a run completes. Along the way:

- twice per stage, two copies of the command start at once on the same --out: the one
  without the lock must be refused with the lock message (or find the other's work
  finished), and the holder is then killed mid-work;
- in the stages that ask the server, requests about every third question fail (HTTP 400)
  until the stage has completed once, so it completes with error rows; then the failures
  are lifted, replies slowed down, and the runs that retry the failed rows are killed as
  well ("retrying"), until a run completes with no error row left (``ref/`` likewise:
  one run with the failures, then runs without until no error row is left).

Then each final table (and each pairs table) is compared with the uninterrupted one by
its key: rows lost, rows doubled, rows differing (all must be 0), and no error row may be
left. Exit status 1 if any is not 0 or a run failed in an unexpected way.

    python benchmarks/soak_kills.py [--kills 7] [--retry-kills 2] [--seed 0] [--problems 8] [--keep DIR]

It prints one line per table (stage, kills, rows lost / doubled / differing, error rows left)
and took 7 minutes on 2 cores shared with other work (load average 5), 35 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CLI = [sys.executable, str(REPO / "cli.py")]
KEYS = {"rollouts": "rollout_id", "localized": "rollout_id", "attempts": "unit_id", "pairs": "pair_id"}


# -- the scripted policy -------------------------------------------------------------------------------------


def scripted_policy(problems, delay: dict[str, float]):
    """Replies to every stage's requests; sample i > 0 goes wrong at step (i - 1) mod steps, continuations of
    index 0 from a right prefix are right, all others wrong at their first step. Each reply takes
    ``delay["seconds"]`` (changed while it serves)."""
    from stepdata.localize.exact import check_step
    from stepdata.prompts import load_prompt
    from stepdata.steps import join_steps, split_steps, strip_partial_overlap

    partial = load_prompt("step_by_step").render(question="")[-1]["content"]
    by_question = problems.set_index("question")

    def wrong(step: str, value: int) -> str:
        return step.replace(f"= {value} ", f"= {value + 1} ").replace(f"answer is {value}.", f"answer is {value + 1}.")

    def reply(body: dict, index: int) -> str:
        if delay["seconds"]:
            time.sleep(delay["seconds"])
        question, content = body["messages"][-2]["content"], body["messages"][-1]["content"]
        problem = by_question.loc[question]
        values = [s["value"] for s in json.loads(problem.meta)["steps"]]
        gold = split_steps(strip_partial_overlap(partial, problem.solution))
        so_far = content[len(partial):]
        if so_far.endswith("\nStep"):
            so_far = so_far[: -len("Step")]
        complete = [s for s in (split_steps(so_far) if so_far else []) if s.endswith("\n")]
        right_so_far = all(check_step(s, i, values).right for i, s in enumerate(complete))
        start = len(complete)
        if not complete and not body.get("stop") and content == partial:  # a whole solution (stage 1)
            first_wrong = None if index == 0 else (index - 1) % len(gold)
        else:
            first_wrong = None if (right_so_far and index == 0) else start
        steps = [g if first_wrong is None or j < first_wrong else wrong(g, values[min(j, len(values) - 1)])
                 for j, g in enumerate(gold[start:], start=start)] or [gold[-1]]
        text = steps[0]
        if content.endswith("\nStep"):  # stage 4 sent the marker the model had started
            text = text[len("Step"):]
        if body.get("stop"):  # one step at a time
            return text.rstrip("\n")
        return text + join_steps(steps[1:])

    return reply


# -- running commands -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    stage: str
    runs: int = 0
    kills: int = 0
    startup_kills: int = 0  # of the kills, those before the run held the lock
    retry_kills: int = 0
    concurrent: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def error_rows(path: Path) -> int | None:
    from stepdata import read_table

    if not path.exists():
        return None
    try:
        return int(read_table(path)["error"].notna().sum())
    except Exception:  # noqa: BLE001 - a table being replaced: ask again later
        return None


def start(args: list[str]) -> subprocess.Popen:
    """The command in its own process group, its output to a file (a pipe nobody reads could fill and stall it)."""
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([*CLI, *map(str, args)], stdout=log, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    process.log = log  # type: ignore[attr-defined]
    return process


def output_of(process: subprocess.Popen) -> str:
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    text = log.read()
    log.close()
    return text


def finish(process: subprocess.Popen, tally: Tally, timeout: float = 300) -> int:
    process.wait(timeout=timeout)
    out = output_of(process)
    tally.runs += 1
    if process.returncode == 1 and "being written by another run" in out:
        tally.refused += 1
    elif process.returncode != 0:
        tally.failures.append(f"exit {process.returncode}: {out.strip()[-600:]}")
    return process.returncode


def recorded_batches(table: Path) -> int:
    manifests = list(table.with_name(table.name + ".parts").glob("manifest-*.json"))
    try:
        return len(json.loads(manifests[0].read_text())["batches"]) if manifests else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def lock_holder(table: Path) -> int | None:
    """The pid the shard's lock file names (None: no lock file, or one being written)."""
    try:
        return json.loads((table.with_name(table.name + ".parts") / "lock-00000-of-00001").read_text())["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_until(condition, process: subprocess.Popen, seconds: float = 120) -> bool:
    """Poll ``condition`` while ``process`` runs; False when it ended first."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@dataclass
class Pace:
    """How long an uninterrupted run of the stage takes: start-up, per batch, a retried request."""

    startup: float
    per_batch: float
    retry: float


class Soak:
    """Runs one stage's command again and again, killing it at random moments, until it ends clean."""

    def __init__(self, args: list[str], table: Path, tally: Tally, pace: Pace, rng: random.Random,
                 requests: Callable[[], int]) -> None:
        self.args, self.table, self.tally, self.pace, self.rng = args, table, tally, pace, rng
        self.requests = requests  # requests the server has had so far

    def _kill(self, process: subprocess.Popen, retrying: bool, startup: bool = False) -> None:
        if process.poll() is not None:
            return self._end(process)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the run and the answer-check workers it started
        except ProcessLookupError:
            return self._end(process)
        process.wait()
        if process.returncode != -signal.SIGKILL:  # it ended on its own just before
            return self._end(process)
        output_of(process)
        self.tally.runs += 1
        self.tally.kills += 1
        self.tally.retry_kills += retrying
        self.tally.startup_kills += startup

    def _working(self, process: subprocess.Popen) -> bool:
        """Wait until ``process`` holds the lock (its start-up is over); False when it ended first."""
        return wait_until(lambda: lock_holder(self.table) == process.pid, process)

    def kill_somewhere(self, process: subprocess.Popen, retrying: bool = False) -> None:
        """SIGKILL ``process`` at a random moment: in start-up (1 in 5), else while it makes (or retries) batches:
        after 0 or 1 more batches are recorded, part of the way into the next one."""
        rng, pace = self.rng, self.pace
        if rng.random() < 0.2:
            if process.poll() is None and not wait_until(lambda: False, process, rng.uniform(0.1, 1.0) * pace.startup):
                return self._kill(process, retrying, startup=lock_holder(self.table) != process.pid)
            return self._end(process)
        if not self._working(process):
            return self._end(process)
        if retrying:  # once the retried units' requests are out: mid-request, or while the part is rewritten
            before = self.requests()
            if not wait_until(lambda: self.requests() > before, process):
                return self._end(process)
            wait_until(lambda: False, process, rng.uniform(0.0, 1.2) * pace.retry)
        else:
            target = recorded_batches(self.table) + (0 if rng.random() < 0.6 else 1)
            if not wait_until(lambda: recorded_batches(self.table) >= target, process):
                return self._end(process)
            wait_until(lambda: False, process, rng.uniform(0.0, 1.2) * pace.per_batch)
        if process.poll() is None:
            return self._kill(process, retrying)
        return self._end(process)

    def _end(self, process: subprocess.Popen) -> None:
        finish(process, self.tally)

    def two_at_once(self) -> None:
        """Two copies on one --out: the one without the lock must be refused; the holder is killed mid-work."""
        self.tally.concurrent += 1
        pair = [start(self.args), start(self.args)]
        holder = None
        deadline = time.monotonic() + 120
        while holder is None and time.monotonic() < deadline and any(p.poll() is None for p in pair):
            holder = next((p for p in pair if lock_holder(self.table) == p.pid), None)
            time.sleep(0.01)
        for process in pair:
            if process is not holder:
                finish(process, self.tally)  # refused (or it found the other's work finished)
        if holder is not None:
            self.kill_somewhere(holder)

    def until_complete(self, kills: int, doubles: int = 0) -> None:
        """At least ``kills`` kills (and ``doubles`` double starts), then the command until it completes."""
        at = {max(1, (i + 1) * kills // (doubles + 1)) for i in range(doubles)}
        for _ in range(60):
            if self.tally.kills >= kills and not at and self.complete():
                return
            if self.tally.kills in at:
                at.discard(self.tally.kills)
                self.two_at_once()
            elif self.tally.kills < kills:
                self.kill_somewhere(start(self.args))
            else:
                finish(start(self.args), self.tally)
        self.tally.failures.append(f"{self.table.name}: not complete after 60 runs")

    def retries(self, kills: int) -> None:
        """Runs that retry the error rows, killed ``kills`` times while retrying, then until none is left."""
        for _ in range(40):
            errors = error_rows(self.table)
            if errors == 0:
                return
            if self.tally.retry_kills < kills:
                self.kill_somewhere(start(self.args), retrying=True)
            else:
                finish(start(self.args), self.tally)
        self.tally.failures.append(f"{self.table.name}: error rows left after 40 runs")

    def complete(self) -> bool:
        summary = self.table.with_name(self.table.name + ".summary.json")
        return self.table.exists() and summary.exists()


# -- comparing ------------------------------------------------------------------------------------------------


def compare(reference: Path, soaked: Path) -> dict[str, int]:
    from stepdata import read_table

    ref, got = read_table(reference), read_table(soaked)
    key = KEYS[ref.attrs["stepdata"]["kind"]]

    def rows(df):
        return {k: json.dumps(r, sort_keys=True, default=str) for k, r in
                zip(df[key], df.drop(columns=[key]).to_dict("records"))}

    want, have = rows(ref), rows(got)
    return {"rows": len(ref), "lost": len(set(want) - set(have)), "doubled": int(got[key].duplicated().sum()),
            "differing": sum(want[k] != have[k] for k in set(want) & set(have)),
            "errors": int(got["error"].notna().sum()) if "error" in got else 0,
            "order": int(ref[key].tolist() != got[key].tolist())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=7, help="kills per stage at least (5 stages)")
    parser.add_argument("--retry-kills", type=int, default=2,
                        help="of those, kills while failed rows are retried (stages with a server)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the server takes per reply")
    parser.add_argument("--retry-delay", type=float, default=0.3, help="the same while failed rows are retried")
    parser.add_argument("--keep", help="keep the runs in this folder (default: a temporary one, removed)")
    options = parser.parse_args()

    from fake_openai_server import FaultyOpenAIServer

    from stepdata import write_table
    from stepdata.embedded import make_problems

    rng = random.Random(options.seed)
    root = Path(options.keep or tempfile.mkdtemp(prefix="soak-"))
    if options.keep:
        shutil.rmtree(root, ignore_errors=True)
    (root / "ref").mkdir(parents=True)
    (root / "soak").mkdir()
    problems = make_problems(options.problems, seed=11, min_steps=3, max_steps=4)
    problems_path = root / "problems.parquet"
    write_table(problems, problems_path, "problems")
    doomed = list(problems.question[::3])  # every third problem's requests fail at first
    os.environ["OPENAI_API_KEY"] = "soak"

    def stages(url: str, folder: Path) -> list[tuple[str, list, Path, list[Path]]]:
        engine = ["--backend", "openai", "--base-url", url]
        f = {name: folder / f"{name}.parquet" for name in ("rollouts", "rules", "mc", "stepdpo", "scdpo")}
        return [
            ("sample", ["sample", problems_path, *engine, "--model", "policy", "--n", "4", "--batch-size", "2",
                        "--out", f["rollouts"]], f["rollouts"], []),
            ("localize rules", ["localize", f["rollouts"], "--method", "rules", "--batch-size", "1",
                                "--out", f["rules"]], f["rules"], []),
            ("localize rollouts", ["localize", f["rollouts"], "--method", "rollouts", *engine, "--model", "policy",
                                   "--rollouts", "2", "--batch-size", "3", "--out", f["mc"]], f["mc"], []),
            ("rectify", ["rectify", f["rules"], *engine, "--n", "2", "--batch-size", "2", "--out", f["stepdpo"]],
             folder / "stepdpo.attempts.parquet", [f["stepdpo"]]),
            ("synthesize", ["synthesize", f["rollouts"], *engine, "--rounds", "2", "--batch-size", "2",
                            "--dpo-pairs", "--out", f["scdpo"]], folder / "scdpo.attempts.parquet", [f["scdpo"]]),
        ]

    began = time.monotonic()
    tallies: list[Tally] = []
    results: list[tuple[str, str, dict[str, int]]] = []
    delay = {"seconds": options.delay}
    policy = scripted_policy(problems, delay)
    always = {q: ["400"] * 100000 for q in doomed}  # a request about these questions fails, until lifted
    with FaultyOpenAIServer(reply_body=policy) as ref_server, FaultyOpenAIServer(reply_body=policy) as soak_server:
        for server in (ref_server, soak_server):
            server.httpd.handle_error = lambda *args: None  # a killed client's broken pipe is expected
        for (name, ref_args, ref_table, ref_more), (_, args, table, more) in zip(
                stages(ref_server.base_url, root / "ref"), stages(soak_server.base_url, root / "soak")):
            uses_server = "rules" not in name
            # the uninterrupted runs: with failures injected, then (lifted) until no error row is left
            ref_tally = Tally(name)
            ref_server.script = always if uses_server else {}
            clock = time.monotonic()
            finish(start(ref_args), ref_tally)
            first = time.monotonic() - clock
            ref_server.script = {}
            for _ in range(5):
                if error_rows(ref_table) == 0:
                    break
                finish(start(ref_args), ref_tally)
            clock = time.monotonic()
            finish(start(ref_args), ref_tally)  # finished: nothing to do but start up and check
            startup = time.monotonic() - clock
            if ref_tally.failures or error_rows(ref_table) != 0:
                print(f"{name}: the uninterrupted run failed: {ref_tally.failures}", file=sys.stderr)
                return 1
            batches = json.loads(ref_table.with_name(ref_table.name + ".summary.json").read_text())["batches_total"]
            pace = Pace(startup, max(first - startup, 0.2) / max(batches, 1), 4 * options.retry_delay)
            # the soak: the same command, killed
            tally = Tally(name)
            soak_server.script = always if uses_server else {}
            clock = time.monotonic()
            run = Soak(args, table, tally, pace, rng, lambda: sum(soak_server.attempts.values()))
            retry_kills = options.retry_kills if uses_server else 0
            run.until_complete(options.kills - retry_kills, doubles=2)
            soak_server.script = {}
            delay["seconds"] = options.retry_delay  # retry runs redo few units: slower replies give them length
            run.retries(retry_kills)
            delay["seconds"] = options.delay
            tally.seconds = time.monotonic() - clock
            tallies.append(tally)
            for ref_path, path in zip([ref_table, *ref_more], [table, *more]):
                results.append((name, path.name, compare(ref_path, path)))
            print(f"{name}: {tally.kills} kills ({tally.retry_kills} while retrying failed rows), "
                  f"{tally.concurrent} double starts, {tally.runs} runs, {tally.seconds:.0f}s", file=sys.stderr,
                  flush=True)

    header = ("stage", "table", "runs", "kills", "in start-up", "retrying", "2 at once (refused)", "rows", "rows lost",
              "rows doubled", "rows differing", "error rows left")
    lines = []
    by_stage = {t.stage: t for t in tallies}
    for name, table_name, r in results:
        t = by_stage[name]
        lines.append((name, table_name, str(t.runs), str(t.kills), str(t.startup_kills), str(t.retry_kills), f"{t.concurrent} ({t.refused})",
                      str(r["rows"]), str(r["lost"]), str(r["doubled"]), str(r["differing"]), str(r["errors"])))
    total_kills = sum(t.kills for t in tallies)
    lines.append(("total", "", str(sum(t.runs for t in tallies)), str(total_kills),
                  str(sum(t.startup_kills for t in tallies)), str(sum(t.retry_kills for t in tallies)),
                  f"{sum(t.concurrent for t in tallies)} ({sum(t.refused for t in tallies)})",
                  str(sum(r["rows"] for *_, r in results)), *(str(sum(r[k] for *_, r in results))
                                                             for k in ("lost", "doubled", "differing", "errors"))))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    failures = [f"{t.stage}: {f}" for t in tallies for f in t.failures]
    bad = sum(r[k] for *_, r in results for k in ("lost", "doubled", "differing", "errors", "order"))
    print(f"\n{total_kills} kills in {time.monotonic() - began:.0f}s; "
          f"{'all tables identical to the uninterrupted runs' if not bad else f'{bad} differences'}"
          f"{'' if not failures else '; unexpected failures:'}")
    for line in failures:
        print("  " + line)
    if not options.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad or failures or total_kills < 30 else 0


if __name__ == "__main__":
    sys.exit(main())
