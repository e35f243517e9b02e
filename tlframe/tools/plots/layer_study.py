"""The layer-transfer study's picture: target accuracy against the number of copied blocks.

``python -m tlframe.tools.plots.layer_study <sweep dir> [--out PNG]`` reads the metrics.json of
every layer_transfer job under the sweep dir (``experiment=layer_transfer_study``) and
draws test/target/acc (mean ± std over seeds) against n, one line for frozen copies and
one for fine-tuned copies, as in Yosinski et al. (2014), Fig. 2. It also prints the
figures as a markdown table, with the source accuracy after the target stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

METHOD = "layer_transfer"


@dataclass(frozen=True)
class Point:
    """One (copy mode, n) of the study, over its seeds."""

    mode: str
    layers: int
    target: list[float]
    source: list[float]


def copy_mode(side: str, unfreeze_at_epoch: int | None) -> str:
    if unfreeze_at_epoch is None:
        kind = "frozen"
    elif unfreeze_at_epoch == 0:
        kind = "fine-tuned"
    else:
        kind = f"unfrozen at epoch {unfreeze_at_epoch}"
    return f"{side} n, {kind}"


def collect(sweep_dir: Path) -> list[Point]:
    """The study's points from every completed layer_transfer job under ``sweep_dir``."""
    groups: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(
        lambda: {"target": [], "source": []}
    )
    for path in sorted(sweep_dir.rglob("metrics.json")):
        record = json.loads(path.read_text())
        if record.get("method") != METHOD or record.get("status") != "completed":
            continue
        method = record["config"]["method"]
        key = (copy_mode(method["side"], method["unfreeze_at_epoch"]), int(method["layers"]))
        metrics = record["metrics"]
        groups[key]["target"].append(metrics["test/target/acc"])
        if "test/source/acc" in metrics:
            groups[key]["source"].append(metrics["test/source/acc"])
    return [Point(mode, n, v["target"], v["source"]) for (mode, n), v in sorted(groups.items())]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def table(points: list[Point]) -> str:
    """Markdown: one row per (copy mode, n)."""
    lines = [
        "| copies | n | seeds | test/target/acc | test/source/acc |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.mode} | {p.layers} | {len(p.target)} | {_cell(p.target)} | {_cell(p.source)} |"
        )
    return "\n".join(lines)


def plot(points: list[Point], out: Path, title: str = "") -> Path:
    """Target accuracy against n, one line (with ± std error bars) per copy mode."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for mode in dict.fromkeys(p.mode for p in points):
        line = [p for p in points if p.mode == mode]
        stats = [_mean_std(p.target) for p in line]
        axes.errorbar(
            [p.layers for p in line],
            [m for m, _ in stats],
            yerr=[s for _, s in stats],
            marker="o",
            capsize=3,
            label=mode,
        )
    axes.set_xlabel("n: blocks copied from the source backbone")
    axes.set_ylabel("test/target/acc (mean ± std over seeds)")
    axes.set_xticks(sorted({p.layers for p in points}))
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tlframe.tools.plots.layer_study", description=__doc__
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, help="PNG path (default: <sweep dir>/layer_study.png)")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    points = collect(args.sweep_dir)
    if not points:
        sys.exit(f"tlframe: error: no completed {METHOD} runs under {args.sweep_dir}")
    out = plot(points, args.out or args.sweep_dir / "layer_study.png", args.title)
    print(table(points))
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
