"""``report.md``: a self-training run at a glance, written from its manifest after every step.

One table of the models the run made (what each started from, what it was trained on,
its held-out accuracy with a 95% Wilson interval when evaluation was asked for) and one
of the data each iteration made (samples right / total, DPO pairs, pseudo-labels), then
the notes a run must not hide: an iteration without pairs, or without pseudo-labels,
whose SFT therefore saw the labelled data only. Plain Markdown: it reads in a terminal,
on a code host and in a notebook alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _accuracy(record: dict[str, Any] | None) -> str:
    if not record or record.get("accuracy") is None:
        return "-"
    low, high = record.get("ci95") or (None, None)
    interval = f" ({100 * low:.1f}-{100 * high:.1f})" if low is not None else ""
    return f"{100 * record['accuracy']:.1f}%{interval} of {record['problems']}"


def _name(path: Any) -> str:
    return Path(str(path)).name if path else "-"


def _model_rows(manifest: dict[str, Any]) -> list[list[str]]:
    rows = []
    warmup = manifest.get("warmup") or {}
    if warmup.get("train"):
        train = warmup["train"]
        rows.append(["iter0 sft (warm-up)", _name(train["init"]), f"{manifest['data']['labelled']} labelled problems",
                     _accuracy(warmup.get("eval"))])
    elif warmup:
        rows.append([f"iter0 (given: {_name(warmup.get('model'))})", "-", "-", _accuracy(warmup.get("eval"))])
    for record in manifest.get("iterations", []):
        k = record["iteration"]
        dpo = record.get("dpo")
        if dpo and dpo.get("skipped"):
            rows.append([f"iter{k} dpo", "-", f"skipped: {dpo['skipped']}", "-"])
        elif dpo:
            pairs = record.get("pairs") or {}
            rows.append([f"iter{k} dpo", _name(dpo["init"]), f"{pairs.get('pairs')} pairs of "
                         f"{pairs.get('with_pairs')} questions", _accuracy(record.get("eval_dpo"))])
        sft, data = record.get("sft"), record.get("sft_data") or {}
        if sft:
            rows.append([f"iter{k} sft", _name(sft["init"]), f"{data.get('labelled')} labelled + "
                         f"{data.get('pseudo_labels')} pseudo-labelled", _accuracy(record.get("eval_sft"))])
    return rows


def _data_rows(manifest: dict[str, Any]) -> list[list[str]]:
    rows = []
    for record in manifest.get("iterations", []):
        samples, drawn = record.get("samples"), record.get("pseudo_samples") or {}
        pairs, pseudo = record.get("pairs") or {}, record.get("pseudo") or {}
        right = f"{samples['correct']}/{samples['total']}" if samples else "-"
        rows.append([str(record["iteration"]), right, str(pairs.get("pairs", "-")),
                     str(pairs.get("reference_chosen", "-")),
                     f"{drawn['correct']}/{drawn['total']}" if drawn else "-",
                     str(pseudo.get("pseudo_labels", "-")), str(pseudo.get("questions_with_pseudo_labels", "-"))])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def render_report(manifest: dict[str, Any]) -> str:
    """The Markdown report of a (finished or running) self-training run's manifest."""
    config = manifest["config"]
    data, evaluation = manifest["data"], manifest.get("eval")
    lines = [f"# Self-training ({config['method']}): {manifest['out']}", "",
             f"Status: {manifest['status']}. Base model `{manifest['identity']['model']}`; "
             f"{data['problems']} training problems from {data['label']} ({data['labelled']} with a reference "
             f"rationale); {config['iterations']} iteration(s); SFT starts from the {config['sft_init']} model; "
             f"{config['samples']} samples per question at T={config['temperature']}; calculator "
             f"{'on' if config['calculator'] else 'off'}.", ""]
    lines.append("## Models" + (f" (greedy accuracy on {evaluation['problems']} problems of {evaluation['label']}, "
                                "95% Wilson interval)" if evaluation else ""))
    lines += [""] + _table(["model", "started from", "trained on", "accuracy"], _model_rows(manifest)) + [""]
    lines += ["## Data per iteration", ""]
    lines += _table(["iteration", "samples right", "DPO pairs", "reference chosen", "pseudo-label samples right",
                     "pseudo-labels", "questions with pseudo-labels"], _data_rows(manifest)) + [""]
    notes = [f"- iteration {r['iteration']}: {note}" for r in manifest.get("iterations", []) for note in r.get("notes", [])]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)
