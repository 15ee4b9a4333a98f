"""The run report's charts: bar and line charts as inline SVG, with axes, ticks and gridlines.

Hand-built SVG so that the report needs no script or external file (:mod:`pinsage.report`); every
label is HTML-escaped (:func:`esc`).
"""

from __future__ import annotations

import html

import numpy as np

HIGHLIGHT, OTHER = "#c0392b", "#7f8c8d"


def esc(value) -> str:
    """``value`` as HTML text (None: empty), quotes escaped too."""
    return html.escape("" if value is None else str(value), quote=True)


def nice_ticks(lo: float, hi: float, most: int = 5, integer: bool = False) -> list[float]:
    """3 to ``most`` round values (1, 2, 2.5 or 5 x 10^k apart) from at or below lo to at or above hi.

    ``integer``: only whole steps (epochs). A flat range (lo == hi) is widened around its value.
    """
    if not hi > lo:
        lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
    mag = 10.0 ** np.floor(np.log10((hi - lo) / (most - 1)))
    steps = [f * mag * 10 ** e for e in (0, 1) for f in (1, 2, 2.5, 5)]
    for step in steps if not integer else [s for s in steps if s >= 1 and s == int(s)] or [1.0]:
        first, last = np.floor(lo / step + 1e-9), np.ceil(hi / step - 1e-9)
        if last - first + 1 <= most:
            break
    return [float(f"{i * step:.12g}") for i in np.arange(first, last + 1)]


def _svg_open(title: str, width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(title)}">',
            f'<text x="0" y="16" font-size="14" font-weight="bold">{esc(title)}</text>']


def _y_axis(ticks: list[float], sy, left: float, right: float, title: str | None, mid: float) -> list[str]:
    """Tick labels and light gridlines at ``ticks`` (bottom first), the axis line and its title."""
    parts = []
    for v in ticks:
        y = sy(v)
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                     f'<text class="ytick" x="{left - 4}" y="{y + 3.5:.1f}" font-size="10" '
                     f'text-anchor="end">{v:g}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{sy(ticks[-1]):.1f}" y2="{sy(ticks[0]):.1f}" '
                 'stroke="#888"/>')
    if title:
        parts.append(f'<text class="axis-title" x="11" y="{mid:.1f}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 11 {mid:.1f})">{esc(title)}</text>')
    return parts


def bar_chart(title: str, values: dict[str, float], highlight: str = "pinsage", y_title: str | None = None,
              width: int = 360, height: int = 250) -> str:
    """Vertical bars, best first, the highlighted method in colour; y axis from 0 with gridlines,
    method names under the bars. -> inline SVG"""
    items = sorted(values.items(), key=lambda kv: -kv[1])
    left, right, top, bottom = 50, 8, 34, 66
    pw, ph = width - left - right, height - top - bottom
    ticks = nice_ticks(0.0, max([v for _, v in items] + [0.0]) or 1.0)

    def sy(v):
        return top + ph * (1 - v / ticks[-1])

    parts = _svg_open(title, width, height) + _y_axis(ticks, sy, left, left + pw, y_title, top + ph / 2)
    slot = pw / max(len(items), 1)
    for i, (name, v) in enumerate(items):
        cx, y = left + slot * (i + 0.5), sy(v)
        colour = HIGHLIGHT if name == highlight else OTHER
        parts.append(f'<rect x="{cx - slot * 0.35:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(top + ph - y, 1.0):.1f}" fill="{colour}"/>'
                     f'<text x="{cx:.1f}" y="{y - 3:.1f}" font-size="9" text-anchor="middle">{v:.4f}</text>'
                     f'<text class="xtick" x="{cx:.1f}" y="{top + ph + 12}" font-size="11" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {top + ph + 12})">{esc(name)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#888"/>'
                 "</svg>")
    return "".join(parts)


def line_chart(title: str, xs: list[float], ys: list[float], mark_x: float | None = None,
               colour: str = "#2c3e50", y_title: str | None = None, width: int = 360, height: int = 210) -> str:
    """A polyline with its points over epochs: y ticks with gridlines, whole-epoch x ticks. -> inline SVG"""
    left, right, top, bottom = 58, 12, 28, 34
    parts = _svg_open(title, width, height)
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y)]
    if not pts:
        parts.append(f'<text x="{left}" y="{height / 2}" font-size="12">no data</text></svg>')
        return "".join(parts)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    ticks = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    x_ticks = [v for v in nice_ticks(x0, x1, integer=True) if x0 <= v <= x1] if x1 > x0 else [x0]
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y):
        return top + ph * (1 - (y - ticks[0]) / (ticks[-1] - ticks[0]))

    parts += _y_axis(ticks, sy, left, left + pw, y_title, top + ph / 2)
    base = top + ph
    parts.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{base}" y2="{base}" stroke="#888"/>')
    for v in x_ticks:
        parts.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{base}" y2="{base + 4}" stroke="#888"/>'
                     f'<text class="xtick" x="{sx(v):.1f}" y="{base + 15}" font-size="10" '
                     f'text-anchor="middle">{v:g}</text>')
    parts.append(f'<text class="axis-title" x="{left + pw / 2:.1f}" y="{height - 3}" font-size="11" '
                 'text-anchor="middle">epoch</text>')
    if mark_x is not None and x0 <= mark_x <= x1:
        parts.append(f'<line x1="{sx(mark_x):.1f}" x2="{sx(mark_x):.1f}" y1="{top}" y2="{base}" '
                     f'stroke="{HIGHLIGHT}" stroke-dasharray="4 3"/>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
    parts.append("</svg>")
    return "".join(parts)
