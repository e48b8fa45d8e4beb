"""Colours and the one stylesheet shared by the HTML report and the notebook views.

Every rule is scoped under ``.sd-audit`` so that the same CSS, pasted into a
Jupyter output, styles our blocks and nothing else of the notebook; colours are
set explicitly so dark notebook themes stay readable.
"""

from __future__ import annotations

CHOSEN = "#2e7d32"  # green: the step the pair teaches to prefer
REJECTED = "#c62828"  # red: the wrong step
NEUTRAL = "#455a64"  # bars that are neither
CHOSEN_BG = "#e3f4e4"
REJECTED_BG = "#fde3e1"
# one colour per localizer in the comparison plots (cycled when there are more)
PALETTE = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#37474f")

CSS = f"""
.sd-audit {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  background: #ffffff; line-height: 1.4; font-size: 14px; }}
.sd-audit h1 {{ font-size: 22px; margin: 0 0 4px; }}
.sd-audit h2 {{ font-size: 17px; margin: 20px 0 8px; }}
.sd-audit .sd-muted {{ color: #5d6770; }}
.sd-audit .sd-note {{ background: #fff4ce; border: 1px solid #e0c36a; padding: 6px 10px; border-radius: 4px;
  margin: 8px 0; }}
.sd-audit .sd-stats {{ display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0; }}
.sd-audit .sd-stat {{ border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; min-width: 110px; }}
.sd-audit .sd-stat .sd-num {{ font-size: 20px; font-weight: 600; display: block; }}
.sd-audit .sd-stat .sd-what {{ font-size: 12px; color: #5d6770; }}
.sd-audit table.sd-counts {{ border-collapse: collapse; margin: 4px 16px 4px 0; display: inline-table;
  vertical-align: top; }}
.sd-audit table.sd-counts th, .sd-audit table.sd-counts td {{ border: 1px solid #d0d7de; padding: 2px 8px;
  text-align: left; }}
.sd-audit table.sd-counts td.sd-n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.sd-audit .sd-plots {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.sd-audit .sd-plot {{ border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; flex: 1 1 320px;
  max-width: 440px; box-sizing: border-box; }}
.sd-audit .sd-plot svg {{ width: 100%; height: auto; display: block; }}
.sd-audit .sd-filter {{ display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 8px 0;
  position: sticky; top: 0; background: #ffffff; padding: 6px 0; z-index: 1; border-bottom: 1px solid #d0d7de; }}
.sd-audit article.sd-pair {{ border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; margin: 12px 0; }}
.sd-audit article.sd-pair[hidden] {{ display: none; }}
.sd-audit .sd-head {{ display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: baseline; margin-bottom: 6px; }}
.sd-audit .sd-id {{ font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
  word-break: break-all; }}
.sd-audit .sd-tag {{ border-radius: 10px; padding: 0 8px; font-size: 12px; border: 1px solid #d0d7de;
  background: #f6f8fa; white-space: nowrap; }}
.sd-audit .sd-tag.sd-ok {{ background: {CHOSEN_BG}; border-color: {CHOSEN}; }}
.sd-audit .sd-tag.sd-bad {{ background: {REJECTED_BG}; border-color: {REJECTED}; }}
.sd-audit .sd-tag.sd-step {{ font-weight: 600; }}
.sd-audit .sd-label {{ font-size: 13px; font-weight: 600; color: #5d6770; margin: 6px 0 2px; }}
.sd-audit .sd-label .sd-muted {{ font-weight: 400; }}
.sd-audit pre.sd-text {{ white-space: pre-wrap; word-break: break-word; margin: 0; padding: 6px 8px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  background: #f6f8fa; border-radius: 4px; color: #1f2328; }}
.sd-audit .sd-partial {{ color: #5d6770; font-style: italic; }}
.sd-audit .sd-prefix-step:nth-child(even) {{ background: #eceff1; }}
.sd-audit .sd-sides {{ display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }}
.sd-audit .sd-side.sd-rejected pre.sd-text {{ background: {REJECTED_BG}; border-left: 4px solid {REJECTED}; }}
.sd-audit .sd-side.sd-chosen pre.sd-text {{ background: {CHOSEN_BG}; border-left: 4px solid {CHOSEN}; }}
.sd-audit .sd-side.sd-rejected .sd-label {{ color: {REJECTED}; }}
.sd-audit .sd-side.sd-chosen .sd-label {{ color: {CHOSEN}; }}
.sd-audit details {{ margin-top: 6px; }}
.sd-audit summary {{ cursor: pointer; color: #5d6770; font-size: 13px; }}
.sd-audit .sd-empty {{ color: #8c959f; font-style: italic; }}
@media (max-width: 700px) {{ .sd-audit .sd-sides {{ grid-template-columns: 1fr; }} }}
"""
CSS += ".sd-audit .sd-filter[hidden] { display: none; }\n"
# solutions (rollouts, localized rows) and the comparison of localizers
CSS += f"""
.sd-audit article.sd-solution {{ border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; margin: 12px 0; }}
.sd-audit article.sd-solution[hidden] {{ display: none; }}
.sd-audit ol.sd-steps {{ list-style: none; padding: 0; margin: 4px 0; }}
.sd-audit li.sd-step {{ display: grid; grid-template-columns: 56px minmax(0, 1fr) auto; gap: 6px; align-items: start;
  margin: 3px 0; }}
.sd-audit .sd-stepno {{ font-size: 12px; color: #5d6770; padding-top: 6px; text-align: right; white-space: nowrap; }}
.sd-audit li.sd-step.sd-wrong pre.sd-text {{ background: {REJECTED_BG}; border-left: 4px solid {REJECTED}; }}
.sd-audit li.sd-step.sd-wrong .sd-stepno {{ color: {REJECTED}; font-weight: 600; }}
.sd-audit li.sd-step.sd-after {{ opacity: 0.45; }}
.sd-audit .sd-side-notes {{ display: flex; flex-direction: column; gap: 2px; padding-top: 4px; }}
.sd-audit .sd-badge {{ font-size: 11px; border-radius: 4px; padding: 0 5px; background: {CHOSEN_BG};
  border: 1px solid {CHOSEN}; white-space: nowrap; }}
.sd-audit .sd-badge.sd-low {{ background: {REJECTED_BG}; border-color: {REJECTED}; }}
.sd-audit .sd-mark {{ font-size: 11px; border-radius: 4px; padding: 0 5px; background: #fff4ce;
  border: 1px solid #e0c36a; white-space: nowrap; }}
.sd-audit .sd-evidence {{ border-left: 3px solid #d0d7de; padding: 2px 8px; margin: 6px 0; }}
.sd-audit .sd-ev-line {{ margin: 2px 0; }}
.sd-audit code.sd-claim {{ background: {REJECTED_BG}; padding: 0 4px; border-radius: 3px; }}
.sd-audit svg.sd-strip {{ display: block; margin: 4px 0; max-width: 100%; height: auto; }}
.sd-audit table.sd-verdicts td, .sd-audit table.sd-verdicts th {{ vertical-align: top; }}
.sd-audit tr.sd-departs td {{ background: #fff4ce; }}
.sd-audit table.sd-matrix td.sd-n {{ min-width: 56px; }}
"""
