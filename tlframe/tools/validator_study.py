"""``tlframe-validators <sweep dir> [...]``: how well does each label-free criterion choose?

Unsupervised adaptation has no target labels to choose a model with, so it leans on a
label-free criterion (``tlframe.engine.label_free``). Whether one can be trusted is an empirical
question, answered on pairs where the target labels *are* known (Musgrave et al. 2022). Give
this command sweeps of candidate models on such pairs (``experiment=validator_study``: the
adaptation methods over their trade-off and learning rate). Each (pair, seed) is one search:
its candidates are the sweep's completed runs on that pair with that seed. For each criterion
and search it reports

- the Spearman rank correlation between the criterion (signed so that +1 means "ranks the
  candidates as their target test accuracy does") and the target test accuracy;
- the target test accuracy of the candidate the criterion picks, against the candidate the
  oracle (target validation labels, which the setting does not have) picks and the best
  candidate.

It writes ``validators.md``, ``validators.csv`` and ``validators.png`` (into ``--out``, by
default the first sweep dir) and prints the markdown. Reads only metrics.json files.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlframe.tools.report import load_jobs
from tlframe.tools.transferability import spearman

TRUTH = "test/target/acc"


@dataclass(frozen=True)
class Criterion:
    name: str
    metric: str
    higher_is_better: bool
    reads: str  # what it reads, for the table
    offered: bool  # a named selection rule (selection=<name>) and search criterion


CRITERIA = (
    Criterion("im", "val/target/im", True, "target inputs", True),
    Criterion("snd", "val/target/snd", True, "target inputs", True),
    Criterion("dev", "val/target/dev", False, "source labels, both inputs", True),
    Criterion("source", "val/source/acc", True, "source labels", True),
    Criterion("snd_raw", "val/target/snd_raw", True, "target inputs", False),
    Criterion("entropy", "val/target/entropy", False, "target inputs", False),
    Criterion("oracle", "val/target/oracle_acc", True, "target labels (oracle)", False),
)


def searches(records: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """The candidates of each (source, target, seed): completed runs with a test figure."""
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for record in records:
        if TRUTH in record["metrics"]:
            key = (record["source"], record["target"], int(record.get("seed", 0)))
            groups[key].append(record)
    return dict(sorted(groups.items()))


def judge(candidates: list[dict], criterion: Criterion) -> dict[str, Any] | None:
    """Spearman correlation and the test accuracy of the pick, over the candidates that
    have the criterion (None where fewer than two have it)."""
    scored = [
        (r["metrics"][criterion.metric], r["metrics"][TRUTH])
        for r in candidates
        if isinstance(r["metrics"].get(criterion.metric), int | float)
    ]
    if len(scored) < 2:
        return None
    sign = 1.0 if criterion.higher_is_better else -1.0
    signed = [sign * value for value, _ in scored]
    accuracies = [accuracy for _, accuracy in scored]
    best = max(range(len(scored)), key=lambda i: (signed[i], -i))
    return {
        "spearman": spearman(signed, accuracies),
        "picked": accuracies[best],
        "candidates": len(scored),
    }


def study(records: list[dict]) -> list[dict[str, Any]]:
    """One row per (search, criterion)."""
    rows = []
    for (source, target, seed), candidates in searches(records).items():
        accuracies = [r["metrics"][TRUTH] for r in candidates]
        for criterion in CRITERIA:
            result = judge(candidates, criterion)
            if result is None:
                continue
            rows.append(
                {
                    "pair": f"{source} -> {target}",
                    "seed": seed,
                    "criterion": criterion.name,
                    **result,
                    "best": max(accuracies),
                    "median": statistics.median(accuracies),
                }
            )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per criterion, over every search: mean Spearman and mean accuracy of its pick, and
    the mean of the oracle's pick and of the best candidate over the same searches."""
    by_search = {(r["pair"], r["seed"], r["criterion"]): r for r in rows}
    table = []
    for criterion in CRITERIA:
        mine = [r for r in rows if r["criterion"] == criterion.name]
        if not mine:
            continue
        oracle = [by_search.get((r["pair"], r["seed"], "oracle")) for r in mine]
        rhos = [r["spearman"] for r in mine if r["spearman"] is not None]
        table.append(
            {
                "criterion": criterion.name,
                "reads": criterion.reads,
                "offered": criterion.offered,
                "searches": len(mine),
                "spearman": statistics.fmean(rhos) if rhos else None,
                "spearman_min": min(rhos) if rhos else None,
                "picked": statistics.fmean(r["picked"] for r in mine),
                "oracle": statistics.fmean(o["picked"] for o in oracle) if all(oracle) else None,
                "best": statistics.fmean(r["best"] for r in mine),
                "median": statistics.fmean(r["median"] for r in mine),
            }
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def to_markdown(rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> str:
    lines = [
        "| criterion | reads | offered | searches | Spearman ρ (mean, min) | accuracy of its pick "
        "| oracle's pick | best candidate | median candidate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['criterion']} | {t['reads']} | {'yes' if t['offered'] else 'no'} | "
            f"{t['searches']} | {_rho(t['spearman'])}, {_rho(t['spearman_min'])} | "
            f"{_pct(t['picked'])} | {_pct(t['oracle'])} | {_pct(t['best'])} | "
            f"{_pct(t['median'])} |"
        )
    lines += [
        "",
        "Accuracies are target test accuracy in %, means over the searches (one search = "
        "the candidates of one pair and seed).",
        "",
        "Per search (accuracy of the pick, Spearman ρ):",
        "",
    ]
    names = [c.name for c in CRITERIA if any(r["criterion"] == c.name for r in rows)]
    lines.append("| pair | seed | candidates | best | " + " | ".join(names) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(names))
    by_search: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_search[(r["pair"], r["seed"])][r["criterion"]] = r
    for (pair, seed), found in by_search.items():
        first = next(iter(found.values()))
        cells = [
            f"{_pct(found[n]['picked'])} ({_rho(found[n]['spearman'])})" if n in found else "-"
            for n in names
        ]
        count = max(r["candidates"] for r in found.values())
        lines.append(f"| {pair} | {seed} | {count} | {_pct(first['best'])} | " + " | ".join(cells))
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = ("pair", "seed", "criterion", "candidates", "spearman", "picked", "best", "median")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in columns])


def run(sweeps: list[Path], out: Path | None = None) -> str:
    records = []
    for sweep in sweeps:
        if not sweep.is_dir():
            raise FileNotFoundError(f"{sweep} is not a folder; give sweep dirs under outputs/")
        records += load_jobs(sweep)[0]
    rows = study(records)
    if not rows:
        raise FileNotFoundError(
            "no completed run with test/target/acc and a label-free criterion in "
            f"{', '.join(map(str, sweeps))}; run tlframe-train experiment=validator_study first"
        )
    from tlframe.tools.plots.validator_study import draw

    out = out or sweeps[0]
    out.mkdir(parents=True, exist_ok=True)
    table = summary(rows)
    text = to_markdown(rows, table)
    (out / "validators.md").write_text(text)
    write_csv(rows, out / "validators.csv")
    draw(rows, [c.name for c in CRITERIA], out / "validators.png")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tlframe-validators", description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep dirs of candidate models")
    parser.add_argument("--out", type=Path, help="where the tables and plot go (first sweep)")
    args = parser.parse_args(argv)
    try:
        print(run(args.sweeps, args.out), end="")
    except FileNotFoundError as err:
        print(f"tlframe-validators: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
