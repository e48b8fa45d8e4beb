"""Bar charts as inline SVG, drawn by hand.

A report must open anywhere, offline, years later, without a plotting library
installed where it is read or where it is made; a few rectangles and labels in
SVG do that. Every label is escaped, since some come from the data (kinds,
sources).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 420, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 38, 58


def _ticks(top: int, count: int = 4) -> list[int]:
    """Round y-axis tick values (steps of 1, 2, 5 x 10^k) from 0 up to at least ``top``."""
    if top <= 0:
        return [0, 1]
    raw = max(top / count, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(int(f * magnitude) for f in (1, 2, 5, 10) if f * magnitude >= raw)
    return list(range(0, math.ceil(top / step) * step + 1, step))


PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#1b7c83", "#953800")


def _float_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values (steps of 1, 2, 5 x 10^k) covering [low, high], which may be negative or fractional."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(f * magnitude for f in (1, 2, 5, 10) if f * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _tick_text(value: float) -> str:
    return f"{value:g}"


def _frame(title: str) -> list[str]:
    return [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" class="sd-chart">'),
            (f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="600" '
             f'fill="#1f2328">{escape(title)}</text>')]


def _no_data(parts: list[str]) -> str:
    parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" font-size="12" '
                 f'fill="#8c959f">no data</text></svg>')
    return "".join(parts)


def _y_axis(parts: list[str], ticks: list[float], py: object, x0: float, plot_w: float, y_label: str,
            y0: float, plot_h: float) -> None:
    for t in ticks:
        y = py(t)  # type: ignore[operator]
        parts.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{"#afb8c1" if t == 0 else "#eaeef2"}"/>'
                     f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                     f'fill="#5d6770">{escape(_tick_text(t))}</text>')
    parts.append(f'<text x="12" y="{y0 - plot_h / 2:.0f}" text-anchor="middle" font-size="11" fill="#5d6770" '
                 f'transform="rotate(-90 12 {y0 - plot_h / 2:.0f})">{escape(y_label)}</text>')


def interval_chart(title: str, labels: Sequence[str],
                   series: Sequence[tuple[str, str, Sequence[tuple[float, float, float] | None]]],
                   x_label: str, y_label: str) -> str:
    """Points with interval bars over categories (an accuracy and its 95% interval per arm, per set).

    ``series`` holds (name, colour, one (value, low, high) or None per label); several series sit
    side by side within a category. Each point's ``<title>`` gives its exact values.
    """
    parts = _frame(title)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, y0 = LEFT, TOP + plot_h
    values = [v for _, _, points in series for v in points if v is not None]
    if not labels or not values:
        return _no_data(parts)
    ticks = _float_ticks(min(0.0, min(v[1] for v in values)), max(v[2] for v in values))

    def py(value: float) -> float:
        return y0 - plot_h * (value - ticks[0]) / (ticks[-1] - ticks[0])

    _y_axis(parts, ticks, py, x0, plot_w, y_label, y0, plot_h)
    slot = plot_w / len(labels)
    width = slot * 0.8 / len(series)
    for j, (name, colour, points) in enumerate(series):
        for i, point in enumerate(points):
            if point is None:
                continue
            value, low, high = point
            cx = x0 + i * slot + slot * 0.1 + (j + 0.5) * width
            parts.append(f'<g><title>{escape(name)}, {escape(labels[i])}: {_tick_text(round(value, 4))} '
                         f'({_tick_text(round(low, 4))} to {_tick_text(round(high, 4))})</title>'
                         f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(low):.1f}" y2="{py(high):.1f}" '
                         f'stroke="{escape(colour)}" stroke-width="1.5"/>'
                         f'<circle cx="{cx:.1f}" cy="{py(value):.1f}" r="3" fill="{escape(colour)}"/></g>')
    _category_axis(parts, labels, x_label, x0, y0, slot, plot_w)
    _legend(parts, [(name, colour) for name, colour, _ in series], x0 + plot_w)
    parts.append("</svg>")
    return "".join(parts)


def _legend(parts: list[str], entries: Sequence[tuple[str, str]], right: float) -> None:
    """Names and colours along the top (two to four entries; a page shows a longer legend itself)."""
    if not 2 <= len(entries) <= 4:
        return
    lx, ly = right, TOP - 8
    for name, colour in reversed(entries):
        lx -= 8 + 6 * len(name) + 12
        parts.append(f'<rect x="{lx:.0f}" y="{ly - 8}" width="9" height="9" fill="{escape(colour)}"/>'
                     f'<text x="{lx + 12:.0f}" y="{ly}" font-size="9" fill="#1f2328">{escape(name)}</text>')


def line_chart(title: str, x_values: Sequence[float],
               series: Sequence[tuple[str, str, Sequence[float | None]]], x_label: str, y_label: str) -> str:
    """Lines over a numeric x (a value per optimizer step, per arm); a None leaves a gap in its line.

    ``series`` holds (name, colour, one y per x). The y axis spans the data (0 included), so a
    margin that goes negative is drawn below the zero line, which is marked.
    """
    parts = _frame(title)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, y0 = LEFT, TOP + plot_h
    ys = [y for _, _, values in series for y in values if y is not None and math.isfinite(y)]
    if not x_values or not ys:
        return _no_data(parts)
    ticks = _float_ticks(min(0.0, min(ys)), max(0.0, max(ys)))
    x_low, x_high = min(x_values), max(x_values)
    x_span = (x_high - x_low) or 1.0

    def px(value: float) -> float:
        return x0 + plot_w * (value - x_low) / x_span

    def py(value: float) -> float:
        return y0 - plot_h * (value - ticks[0]) / (ticks[-1] - ticks[0])

    _y_axis(parts, ticks, py, x0, plot_w, y_label, y0, plot_h)
    for t in _float_ticks(x_low, x_high):
        if x_low <= t <= x_high:
            parts.append(f'<text x="{px(t):.1f}" y="{y0 + 13}" text-anchor="middle" font-size="10" '
                         f'fill="#5d6770">{escape(_tick_text(t))}</text>')
    for name, colour, values in series:
        runs: list[list[str]] = [[]]
        for x, y in zip(x_values, values):
            if y is None or not math.isfinite(y):
                runs.append([])
                continue
            runs[-1].append(f"{px(x):.1f},{py(y):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{escape(colour)}" '
                             f'stroke-width="1.5"><title>{escape(name)}</title></polyline>')
            elif run:
                x, y = run[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{escape(colour)}">'
                             f'<title>{escape(name)}</title></circle>')
    parts.append(f'<line x1="{x0}" x2="{x0}" y1="{TOP}" y2="{y0}" stroke="#1f2328"/>')
    parts.append(f'<text x="{x0 + plot_w / 2:.0f}" y="{HEIGHT - 22}" text-anchor="middle" font-size="11" '
                 f'fill="#5d6770">{escape(x_label)}</text>')
    _legend(parts, [(name, colour) for name, colour, _ in series], x0 + plot_w)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[int]]],
    x_label: str,
    y_label: str,
    tooltips: Sequence[Sequence[str]] | None = None,
) -> str:
    """A bar chart (grouped bars when there are several series) as an ``<svg>`` element.

    ``series`` holds (name, colour, counts) with one count per label. Each bar has
    a ``<title>`` (hover tooltip) with its exact count, since the axis only shows round ticks;
    ``tooltips`` (one list per series, one text per label) replaces the count in it
    (a share's "5 of 8").
    """
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
         f'aria-label="{escape(title)}" class="sd-chart">'),
        (f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="600" '
         f'fill="#1f2328">{escape(title)}</text>'),
    ]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, y0 = LEFT, TOP + plot_h
    if not labels or not series:
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" font-size="12" '
                     f'fill="#8c959f">no data</text></svg>')
        return "".join(parts)
    top = max((max(counts) if len(counts) else 0) for _, _, counts in series)
    ticks = _ticks(top)
    y_max = max(ticks[-1], 1)

    def y(value: float) -> float:
        return y0 - plot_h * value / y_max

    for t in ticks:
        parts.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{x0 - 4}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="10" '
                     f'fill="#5d6770">{t}</text>')
    slot = plot_w / len(labels)
    bar_w = max(slot * 0.8 / len(series), 0.5)
    for i, label in enumerate(labels):
        for j, (name, colour, counts) in enumerate(series):
            count = int(counts[i])
            bx = x0 + i * slot + slot * 0.1 + j * bar_w
            shown = tooltips[j][i] if tooltips is not None else str(count)
            parts.append(f'<rect x="{bx:.1f}" y="{y(count):.1f}" width="{bar_w:.1f}" '
                         f'height="{y0 - y(count):.1f}" fill="{escape(colour)}">'
                         f'<title>{escape(name)}, {escape(label)}: {escape(shown)}</title></rect>')
    _category_axis(parts, labels, x_label, x0, y0, slot, plot_w)
    parts.append(f'<text x="12" y="{y0 - plot_h / 2:.0f}" text-anchor="middle" font-size="11" fill="#5d6770" '
                 f'transform="rotate(-90 12 {y0 - plot_h / 2:.0f})">{escape(y_label)}</text>')
    if len(series) > 1:
        lx = x0 + plot_w
        ly = TOP - 8
        for name, colour, _ in reversed(series):
            lx -= 8 + 7 * len(name) + 12
            parts.append(f'<rect x="{lx}" y="{ly - 8}" width="9" height="9" fill="{escape(colour)}"/>'
                         f'<text x="{lx + 12}" y="{ly}" font-size="10" fill="#1f2328">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _category_axis(parts: list[str], labels: Sequence[str], x_label: str, x0: float, y0: float, slot: float,
                   plot_w: float) -> None:
    """The x axis of a chart with one slot per label: at most about 12 slanted labels, so they never overlap
    (the tooltips carry every one), the axis line and its title."""
    every = max(1, math.ceil(len(labels) / 12))
    for i, label in enumerate(labels):
        if i % every:
            continue
        cx = x0 + (i + 0.5) * slot
        parts.append(f'<text x="{cx:.1f}" y="{y0 + 12}" text-anchor="end" font-size="10" fill="#1f2328" '
                     f'transform="rotate(-35 {cx:.1f} {y0 + 12})">{escape(label)}</text>')
    parts.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y0}" y2="{y0}" stroke="#1f2328"/>')
    parts.append(f'<text x="{x0 + plot_w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" font-size="11" '
                 f'fill="#5d6770">{escape(x_label)}</text>')


def _label_places(points: Sequence[tuple[float, float, str]], right_edge: float,
                  char_width: float = 5.0, line_height: float = 10.0) -> list[tuple[float, float, str]]:
    """Where each point's label goes (x, baseline y, text-anchor) so that no two labels overlap: beside its
    point (to the left where it would run past ``right_edge``), moved up or down a line at a time, nearest
    first, until its box clears every point and every label placed before it. Points close together (arms of similar cost and accuracy) stay legible."""
    placed = [(x - 4, y - 4, x + 4, y + 4) for x, y, _ in points]  # boxes (left, top, right, bottom): the points
    out = []
    for x, y, label in points:
        width = char_width * len(label)
        to_left = x + 5 + width > right_edge
        left = x - 5 - width if to_left else x + 5
        for shift in [0] + [k * sign for k in range(1, 13) for sign in (-1, 1)]:
            baseline = y - 4 + shift * line_height
            box = (left, baseline - line_height + 2, left + width, baseline + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        out.append((x - 5 if to_left else x + 5, baseline, "end" if to_left else "start"))
    return out


def point_chart(
    title: str,
    points: Sequence[tuple[str, float, float, float, float]],
    x_label: str,
    y_label: str,
) -> str:
    """Labelled points with vertical interval bars (e.g. accuracy and its 95% interval against cost).

    ``points`` holds (label, x, y, y_low, y_high). Both axes start at 0 so distances read as ratios
    (half the tokens is half the way to the origin); each point's ``<title>`` gives its exact values.
    """
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
         f'aria-label="{escape(title)}" class="sd-chart">'),
        (f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="600" '
         f'fill="#1f2328">{escape(title)}</text>'),
    ]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, y0 = LEFT, TOP + plot_h
    if not points:
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" font-size="12" '
                     f'fill="#8c959f">no data</text></svg>')
        return "".join(parts)
    x_ticks = _ticks(math.ceil(max(p[1] for p in points)))
    y_ticks = _ticks(math.ceil(max(p[4] for p in points)))
    x_max, y_max = max(x_ticks[-1], 1), max(y_ticks[-1], 1)

    def px(value: float) -> float:
        return x0 + plot_w * value / x_max

    def py(value: float) -> float:
        return y0 - plot_h * value / y_max

    for t in y_ticks:
        parts.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{x0 - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10" '
                     f'fill="#5d6770">{t}</text>')
    for t in x_ticks:
        parts.append(f'<text x="{px(t):.1f}" y="{y0 + 13}" text-anchor="middle" font-size="10" '
                     f'fill="#5d6770">{t}</text>')
    palette = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a")
    places = _label_places([(px(x), py(y), label) for label, x, y, _, _ in points], x0 + plot_w)
    for i, (label, x, y, low, high) in enumerate(points):
        colour = palette[i % len(palette)]
        text_x, text_y, anchor = places[i]
        parts.append(f'<g><title>{escape(label)}: {y:.1f} ({low:.1f}-{high:.1f}) at {x:.1f}</title>'
                     f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(low):.1f}" y2="{py(high):.1f}" '
                     f'stroke="{colour}"/><circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>'
                     f'<text x="{text_x:.1f}" y="{text_y:.1f}" font-size="9" text-anchor="{anchor}" '
                     f'fill="{colour}">{escape(label)}</text></g>')
    parts.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y0}" y2="{y0}" stroke="#1f2328"/>'
                 f'<line x1="{x0}" x2="{x0}" y1="{TOP}" y2="{y0}" stroke="#1f2328"/>')
    parts.append(f'<text x="{x0 + plot_w / 2:.0f}" y="{HEIGHT - 22}" text-anchor="middle" font-size="11" '
                 f'fill="#5d6770">{escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{y0 - plot_h / 2:.0f}" text-anchor="middle" font-size="11" fill="#5d6770" '
                 f'transform="rotate(-90 12 {y0 - plot_h / 2:.0f})">{escape(y_label)}</text></svg>')
    return "".join(parts)


def score_strip(title: str, labels: Sequence[str], values: Sequence[float | None],
                threshold: float | None = None, low: str = "#c62828", high: str = "#2e7d32",
                unknown: str = "#8c959f", show_threshold: bool = True) -> str:
    """A small chart of values in [0, 1], one bar per label (a PRM's step scores, the MC value of each prefix).

    Bars below ``threshold`` are drawn in ``low``, the others in ``high``, and the
    threshold as a dashed line (unless ``show_threshold`` is False); a value of 0 is a thin
    stub, so it is seen, and a missing or non-finite value a grey one. Every bar's
    tooltip holds its exact value. Sized for a place beside a solution.
    """
    n = len(labels)
    slot = 26 if n <= 14 else max(8, 360 // max(n, 1))
    left, top, plot_h = 26, 16, 54
    width = left + slot * max(n, 1) + 6
    height = top + plot_h + 16
    y0 = top + plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{escape(title)}" class="sd-strip">',
             f'<text x="2" y="11" font-size="10" fill="#5d6770">{escape(title)}</text>']
    for tick in (0, 0.5, 1):
        ty = y0 - plot_h * tick
        parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eaeef2"/>'
                     f'<text x="{left - 3}" y="{ty + 3:.1f}" text-anchor="end" font-size="8" fill="#5d6770">'
                     f'{tick:g}</text>')
    for i, (label, value) in enumerate(zip(labels, values)):
        bx = left + i * slot + slot * 0.15
        bw = slot * 0.7
        if value is None or not math.isfinite(value):
            parts.append(f'<rect x="{bx:.1f}" y="{y0 - 2}" width="{bw:.1f}" height="2" fill="{unknown}">'
                         f'<title>{escape(label)}: no value</title></rect>')
        else:
            h = max(plot_h * min(max(value, 0.0), 1.0), 1.5)
            colour = low if threshold is not None and value < threshold else high
            parts.append(f'<rect x="{bx:.1f}" y="{y0 - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{colour}">'
                         f'<title>{escape(label)}: {value:.4g}</title></rect>')
        if n <= 14 or i % math.ceil(n / 14) == 0:
            parts.append(f'<text x="{bx + bw / 2:.1f}" y="{y0 + 11}" text-anchor="middle" font-size="9" '
                         f'fill="#1f2328">{escape(label)}</text>')
    if threshold is not None and show_threshold:
        ty = y0 - plot_h * min(max(threshold, 0.0), 1.0)
        parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#1f2328" '
                     f'stroke-dasharray="3 2"><title>threshold {threshold:g}</title></line>')
    parts.append("</svg>")
    return "".join(parts)
