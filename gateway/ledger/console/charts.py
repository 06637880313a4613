"""Charts drawn on the server as inline SVG (pure): no script, no library, nothing fetched.

Every label is escaped here (the markup is returned as :class:`markupsafe.Markup`
for the templates); values are numbers we computed.  Colours come from CSS
classes (``bar``, ``slice-N``, ``line``) so the Content-Security-Policy needs
no inline style.
"""

from __future__ import annotations

import math
from typing import Sequence

from markupsafe import Markup, escape

__all__ = ["bar_chart", "pie_chart", "line_chart"]


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, width: int = 480, bar: int = 22) -> Markup:
    """Horizontal bars, one per (label, value), scaled to the largest; values shown at the end."""
    label_w, gap = 150, 6
    height = max(1, len(items)) * (bar + gap) + 10
    top = max((v for _, v in items), default=0) or 1
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(items):
        y = 5 + i * (bar + gap)
        w = (width - label_w - 70) * (value / top)
        parts.append(f'<text x="{label_w - 6}" y="{y + bar * 0.7:.1f}" text-anchor="end">{escape(label)}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + bar * 0.7:.1f}">{escape(_num(value))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def pie_chart(items: Sequence[tuple[str, float]], *, title: str, size: int = 220) -> Markup:
    """A pie of (label, value) with a legend; slices take the classes slice-0 … slice-7."""
    total = sum(v for _, v in items if v > 0)
    r, cx, cy = size / 2 - 4, size / 2, size / 2
    legend_h = 20 * len(items)
    height = max(size, legend_h + 8)
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {size + 220} {height}" width="{size + 220}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    angle = -math.pi / 2
    for i, (label, value) in enumerate(items):
        cls = f"slice-{i % 8}"
        if total and value > 0:
            share = value / total
            if share >= 0.9999:
                parts.append(f'<circle class="{cls}" cx="{cx}" cy="{cy}" r="{r}"/>')
            else:
                end = angle + 2 * math.pi * share
                x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
                x2, y2 = cx + r * math.cos(end), cy + r * math.sin(end)
                large = 1 if share > 0.5 else 0
                parts.append(f'<path class="{cls}" d="M{cx},{cy} L{x1:.2f},{y1:.2f} '
                             f'A{r},{r} 0 {large} 1 {x2:.2f},{y2:.2f} Z"/>')
                angle = end
        ly = 10 + i * 20
        parts.append(f'<rect class="{cls}" x="{size + 10}" y="{ly}" width="12" height="12"/>'
                     f'<text x="{size + 28}" y="{ly + 11}">{escape(label)} ({escape(_num(value))})</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(points: Sequence[tuple[str, float]], *, title: str, width: int = 560,
               height: int = 200) -> Markup:
    """A line over (x label, value) points, evenly spaced; the first and last labels shown."""
    pad = 30
    top = max((v for _, v in points), default=0) or 1
    n = len(points)
    step = (width - 2 * pad) / max(1, n - 1)
    coords = [(pad + i * step, height - pad - (height - 2 * pad) * (v / top)) for i, (_, v) in enumerate(points)]
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>',
             f'<text x="2" y="{pad}">{escape(_num(top))}</text>']
    if coords:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline class="line" points="{path}"/>')
        parts.extend(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"/>' for x, y in coords)
        parts.append(f'<text x="{pad}" y="{height - 8}">{escape(points[0][0])}</text>')
        parts.append(f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">{escape(points[-1][0])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
