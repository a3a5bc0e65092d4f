"""Charts as inline SVG, drawn on the server: no script, nothing for a browser to fetch.

Three shapes cover the console: horizontal bars (a value per arm or agent), paired bars (a
histogram's baseline against live shares per bin) and a row of steps (a canary's progress).
Labels go through html.esc; every coordinate is a number computed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coordinator.console.html import Markup, esc

BLUE, ORANGE, GREY, GREEN = "#2557a7", "#e07b24", "#c9ced8", "#3a9b5a"


def _svg(width: int, height: int, title: str, parts: list[str]) -> Markup:
    return Markup(
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{esc(title)}</title>{''.join(parts)}</svg>"
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def bars(title: str, rows: Sequence[tuple[str, float]], unit: str = "", *, width: int = 420) -> Markup:
    """One bar per (label, value), longest for the largest value."""
    row_h, label_w = 22, 130
    top = max((_finite(v) for _, v in rows), default=0.0) or 1.0
    parts = [f'<text x="4" y="14">{esc(title)}</text>']
    for i, (label, value) in enumerate(rows):
        y = 22 + i * row_h
        length = (width - label_w - 90) * _finite(value) / top
        parts.append(f'<text x="4" y="{y + 14}">{esc(label[:20])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 8}" fill="{BLUE}"/>')
        parts.append(f'<text x="{label_w + length + 4:.1f}" y="{y + 14}">{esc(f"{value:.4g}")}{esc(unit)}</text>')
    return _svg(width, 26 + len(rows) * row_h, title, parts)


def paired(title: str, labels: Sequence[str], first: Sequence[float], second: Sequence[float],
           names: tuple[str, str] = ("baseline", "live"), *, height: int = 190) -> Markup:
    """Two bars per label (a baseline's share and live's, per bin), with a legend."""
    group_w = 26
    width = max(220, 70 + len(labels) * group_w)
    top = max([_finite(v) for v in (*first, *second)], default=0.0) or 1.0
    chart_h = height - 100  # below it: the bins' labels, slanted
    parts = [f'<text x="4" y="14">{esc(title)}</text>',
             f'<rect x="{width - 150}" y="5" width="10" height="10" fill="{GREY}"/>'
             f'<text x="{width - 136}" y="14">{esc(names[0])}</text>'
             f'<rect x="{width - 80}" y="5" width="10" height="10" fill="{ORANGE}"/>'
             f'<text x="{width - 66}" y="14">{esc(names[1])}</text>']
    for i, label in enumerate(labels):
        x = 56 + i * group_w
        for j, (values, colour) in enumerate(((first, GREY), (second, ORANGE))):
            value = _finite(values[i]) if i < len(values) else 0.0
            h = chart_h * value / top
            parts.append(f'<rect x="{x + j * 11}" y="{22 + chart_h - h:.1f}" width="10" height="{h:.1f}" fill="{colour}">'
                         f"<title>{esc(label)}: {esc(names[j])} {value:.3f}</title></rect>")
        parts.append(f'<text x="{x + 14}" y="{chart_h + 34}" text-anchor="end" transform="rotate(-40 {x + 14} '
                     f'{chart_h + 34})">{esc(label[:14])}</text>')
    return _svg(width, height, title, parts)


def steps(title: str, percents: Sequence[float], current: int) -> Markup:
    """A canary's steps, those passed and the current one filled, each with its percent."""
    box_w, gap = 64, 6
    width = 10 + len(percents) * (box_w + gap)
    parts = [f'<text x="4" y="14">{esc(title)}</text>']
    for i, percent in enumerate(percents):
        x = 6 + i * (box_w + gap)
        colour = GREEN if i < current else BLUE if i == current else GREY
        parts.append(f'<rect x="{x}" y="22" width="{box_w}" height="24" rx="3" fill="{colour}"/>')
        parts.append(f'<text x="{x + 8}" y="38" fill="#fff">{esc(f"{percent:g}%")}</text>')
    return _svg(max(width, 200), 54, title, parts)


STAGE_COLOURS = {"SUCCEEDED": GREEN, "RUNNING": BLUE, "FAILED": "#c0392b", "CANCELLED": "#8e44ad"}


def stages(title: str, stages: Sequence[tuple[str, str]]) -> Markup:
    """A pipeline run's stages left to right, each coloured by its state (grey: not run yet)."""
    box_w, gap = 120, 6
    parts = [f'<text x="4" y="14">{esc(title)}</text>']
    for i, (name, stage_state) in enumerate(stages):
        x = 6 + i * (box_w + gap)
        colour = STAGE_COLOURS.get(stage_state, GREY)
        parts.append(f'<rect x="{x}" y="22" width="{box_w}" height="34" rx="3" fill="{colour}"/>')
        parts.append(f'<text x="{x + 6}" y="36" fill="#fff">{esc(name[:18])}</text>')
        parts.append(f'<text x="{x + 6}" y="50" fill="#fff">{esc(stage_state)}</text>')
    return _svg(max(10 + len(stages) * (box_w + gap), 200), 64, title, parts)
