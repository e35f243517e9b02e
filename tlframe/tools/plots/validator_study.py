"""The validator study's picture (``tlframe-validators``): per criterion, the target test
accuracy of the candidate it picks and its rank correlation with that accuracy, one marker
per search (pair and seed), with the best candidate's accuracy for reference."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def draw(rows: list[dict[str, Any]], criteria: list[str], path: Path) -> Path:
    names = [c for c in criteria if any(r["criterion"] == c for r in rows)]
    pairs = sorted({r["pair"] for r in rows})
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    picked, correlation = figure.subplots(1, 2)
    markers = "osD^vP*X"
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_pair[row["pair"]].append(row)
    for i, pair in enumerate(pairs):
        offset = (i - (len(pairs) - 1) / 2) * 0.12
        for row in by_pair[pair]:
            x = names.index(row["criterion"]) + offset
            style = {"marker": markers[i % len(markers)], "color": f"C{i}", "alpha": 0.8}
            label = pair if row is by_pair[pair][0] else None
            picked.plot(x, 100 * row["picked"], linestyle="", label=label, **style)
            picked.plot(x, 100 * row["best"], linestyle="", marker="_", color="grey")
            if row["spearman"] is not None:
                correlation.plot(x, row["spearman"], linestyle="", **style)
    for axis, title in (
        (picked, "target test accuracy of the pick (grey: best candidate)"),
        (correlation, "Spearman ρ with target test accuracy"),
    ):
        axis.set_xticks(range(len(names)), names, rotation=20)
        axis.set_title(title, fontsize="medium")
        axis.grid(alpha=0.3)
    picked.set_ylabel("%")
    correlation.axhline(0.0, color="black", linewidth=0.8)
    correlation.set_ylim(-1.05, 1.05)
    picked.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    return path
