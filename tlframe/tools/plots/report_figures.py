"""The report's pictures, drawn from its rows (one per method, source, target and setting).

``transfer_matrix.png``: a heatmap of target accuracy per source (rows) x target (columns),
one panel per method and setting, when the sweep has several domain pairs.
``by_<key>.png``: target accuracy (mean ± std over seeds) against the one numeric config
value the sweep varied (layers, labels per class, a trade-off), one line per method, pair
and other setting. Missing cells (failed or unfinished jobs) stay blank.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

METRIC = "test/target/acc"


def draw_figures(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write the figures the rows call for into ``folder``; return their paths."""
    paths = []
    if len({(r["source"], r["target"]) for r in rows}) > 1:
        paths.append(_save(transfer_matrix_figure(rows), folder / "transfer_matrix.png"))
    key = numeric_setting(rows)
    if key is not None:
        paths.append(_save(setting_figure(rows, key), folder / f"by_{key}.png"))
    return paths


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


def _setting(row: dict[str, Any]) -> str:
    """The row's setting with the target labels it read (the source's: every row has all)."""
    return "; ".join(p for p in (f"target {row.get('target_read', '')}", row["setting"]) if p)


def _panel_name(row: dict[str, Any], settings: set[str]) -> str:
    return row["method"] if len(settings) == 1 else f"{row['method']}\n{_setting(row)}"


def transfer_matrix_figure(rows: list[dict[str, Any]]) -> Figure:
    settings = {_setting(r) for r in rows if r["method"] != "source_only"}
    panels: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for row in rows:
        if row.get(METRIC):
            panels[_panel_name(row, settings)][(row["source"], row["target"])] = row[METRIC][0]
    sources = sorted({r["source"] for r in rows})
    targets = sorted({r["target"] for r in rows})
    names = sorted(panels) or ["(no finished jobs)"]
    size = 1.0 + 0.9 * max(len(sources), len(targets))
    figure = Figure(figsize=(size * len(names) + 1.2, size + 0.6), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    image = None
    for axis, name in zip(axes, names, strict=True):
        grid = np.full((len(sources), len(targets)), np.nan)
        for (source, target), acc in panels.get(name, {}).items():
            grid[sources.index(source), targets.index(target)] = 100 * acc
        image = axis.imshow(grid, vmin=0, vmax=100, cmap="viridis")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                color = "black" if value > 60 else "white"
                axis.text(j, i, f"{value:.0f}", ha="center", va="center", color=color)
        axis.set_xticks(range(len(targets)), targets, rotation=35, ha="right")
        axis.set_yticks(range(len(sources)), sources if axis is axes[0] else [])
        axis.set_xlabel("target")
        axis.set_title(name)
    axes[0].set_ylabel("source")
    figure.colorbar(image, ax=list(axes), label="target test accuracy (%)", shrink=0.8)
    return figure


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    """Settings that take more than one value across the rows."""
    keys = sorted({k for row in rows for k in row["settings"]})
    return [k for k in keys if len({repr(row["settings"].get(k)) for row in rows}) > 1]


def numeric_setting(rows: list[dict[str, Any]]) -> str | None:
    """The one setting that takes several numeric values across the rows, if there is one."""
    keys = [
        key
        for key in _varying(rows)
        if all(_is_number(row["settings"][key]) for row in rows if key in row["settings"])
    ]
    return keys[0] if len(keys) == 1 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def setting_figure(rows: list[dict[str, Any]], key: str) -> Figure:
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    several_pairs = len({(r["source"], r["target"]) for r in rows}) > 1
    others = [k for k in _varying(rows) if k != key]
    for row in rows:
        if not row.get(METRIC) or key not in row["settings"]:
            continue
        label = ", ".join(
            [row["method"]]
            + ([f"{row['source']}->{row['target']}"] if several_pairs else [])
            + [f"{k}={row['settings'].get(k)}" for k in others]
        )
        mean, std = row[METRIC]
        lines[label].append((row["settings"][key], 100 * mean, 100 * std))
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    for label, points in sorted(lines.items()):
        x, mean, std = (np.array(v) for v in zip(*sorted(points), strict=True))
        axis.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    axis.set_xlabel(key)
    axis.set_ylabel("target test accuracy (%)")
    if lines:
        axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return figure
