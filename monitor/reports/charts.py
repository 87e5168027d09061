"""Small inline SVG charts for the HTML report and the status page: self-contained, no scripts, no
external files, readable offline. Values that are None are gaps, never zeros."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "",
               width: int = 640, height: int = 220, floor: float | None = None,
               ceiling: float | None = None) -> str:
    """Lines over labelled x positions (days); a legend under the plot."""
    left, right, top, bottom = 56, 12, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for v in s.values if v is not None]
    lo = floor if floor is not None else (min(values) if values else 0.0)
    hi = ceiling if ceiling is not None else (max(values) if values else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [_open(width, height + 18 * ((len(series) + 3) // 4), title),
             f'<text x="{left}" y="14" class="t">{escape(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="g"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="a" text-anchor="end">'
                     f'{_fmt(v)}{escape(unit)}</text>')
    step = max(1, n // 6)
    for i in range(0, n, step):
        parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" class="a" text-anchor="middle">'
                     f'{escape(labels[i][5:] if len(labels[i]) == 10 else labels[i])}</text>')
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        for run in _runs(s.values):
            if len(run) == 1:
                i, v = run[0]
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>')
            else:
                pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        lx, ly = left + (k % 4) * (plot_w / 4), height + 4 + 18 * (k // 4)
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14:.1f}" y="{ly}" class="a">{escape(s.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float | None], *, unit: str = "",
              width: int = 640, height: int = 200, color: str = PALETTE[0]) -> str:
    left, right, top, bottom = 56, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max((v for v in values if v is not None), default=0.0) or 1.0
    n = max(len(values), 1)
    bar = plot_w / n
    parts = [_open(width, height, title), f'<text x="{left}" y="14" class="t">{escape(title)}</text>',
             f'<text x="{left - 6}" y="{top + 4}" class="a" text-anchor="end">'
             f'{_fmt(hi)}{escape(unit)}</text>',
             f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" class="g"/>']
    for i, v in enumerate(values):
        if v is None:
            continue
        h = plot_h * v / hi
        parts.append(f'<rect x="{left + i * bar + 1:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{max(bar - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
                     f"<title>{escape(labels[i])}: {_fmt(v)}{escape(unit)}</title></rect>")
    step = max(1, n // 6)
    for i in range(0, n, step):
        label = labels[i][5:] if len(labels[i]) == 10 else labels[i]
        parts.append(f'<text x="{left + (i + 0.5) * bar:.1f}" y="{height - 8}" class="a" '
                     f'text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 24,
              color: str = PALETTE[0], floor: float | None = None, ceiling: float | None = None,
              label: str = "") -> str:
    present = [v for v in values if v is not None]
    lo = floor if floor is not None else (min(present) if present else 0.0)
    hi = ceiling if ceiling is not None else (max(present) if present else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    n = max(len(values), 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
             f'<rect width="{width}" height="{height}" fill="#f3f4f6"/>']

    def xy(i: int, v: float) -> tuple[float, float]:
        return width * i / (n - 1), 2 + (height - 4) * (1 - (v - lo) / (hi - lo))

    for run in _runs(values):
        pts = " ".join("{:.1f},{:.1f}".format(*xy(i, v)) for i, v in run)
        if len(run) == 1:
            cx, cy = xy(*run[0])
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="1.5" fill="{color}"/>')
        else:
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            "<style>.t{font:bold 12px 'DejaVu Sans',sans-serif;fill:#111}"
            ".a{font:10px 'DejaVu Sans',sans-serif;fill:#555}"
            ".g{stroke:#ddd;stroke-width:1}</style>")


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"
