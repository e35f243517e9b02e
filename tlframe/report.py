"""``tlframe-report <run or sweep dir>``: collect every job's metrics.json into tables.

One row per (method, source, target, setting) with mean ± std over seeds and the number of
seeds, the selection rule, and the gain over the source_only / target_only controls of the
same pair when the sweep has them. Jobs without a complete metrics.json (failed, or still
running) are listed with their error line. Writes ``report.md`` and ``report.csv`` into the
folder. Reads only metrics.json (and error.json) files.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

METRICS = ("test/target/acc", "test/source/acc")
CONTROLS = ("source_only", "target_only")


def load_jobs(root: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Completed records, and (job dir, reason) for every job that has none."""
    records, problems = [], []
    job_dirs = sorted({p.parent for p in root.rglob(".hydra") if p.is_dir()} | {root})
    for job in job_dirs:
        metrics, error = job / "metrics.json", job / "error.json"
        if metrics.is_file():
            try:
                record = json.loads(metrics.read_text())
                record["_dir"] = str(job)
                records.append(record)
                continue
            except json.JSONDecodeError:
                problems.append((str(job), "unreadable metrics.json"))
                continue
        if error.is_file():
            problems.append((str(job), json.loads(error.read_text()).get("error", "failed")))
        elif (job / ".hydra").is_dir():
            problems.append((str(job), "no metrics.json (still running or killed)"))
    return records, problems


def _setting(record: dict) -> str:
    labels = record.get("config", {}).get("data", {}).get("target_labels", "all")
    return f"target_labels={labels}"


def summarise(records: list[dict]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        key = (record["method"], record["source"], record["target"], _setting(record))
        groups[key].append(record)
    rows = []
    for (method, source, target, setting), members in sorted(groups.items()):
        row: dict[str, Any] = {
            "method": method,
            "source": source,
            "target": target,
            "setting": setting,
            "seeds": len(members),
            "selection": members[0].get("selection"),
        }
        for metric in METRICS:
            values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
            row[metric] = _mean_std(values)
        rows.append(row)
    _add_gains(rows)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def _add_gains(rows: list[dict]) -> None:
    index = {(r["method"], r["source"], r["target"], r["setting"]): r for r in rows}
    for row in rows:
        mine = row["test/target/acc"]
        for control in CONTROLS:
            other = index.get((control, row["source"], row["target"], row["setting"]))
            if other and mine and other["test/target/acc"] and row["method"] != control:
                row[f"gain_vs_{control}"] = mine[0] - other["test/target/acc"][0]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}"
    if isinstance(value, float):
        flag = " (negative transfer)" if value < 0 else ""
        return f"{100 * value:+.1f}{flag}"
    return str(value)


COLUMNS = (
    "method",
    "source",
    "target",
    "setting",
    "seeds",
    "test/target/acc",
    "test/source/acc",
    "gain_vs_source_only",
    "gain_vs_target_only",
    "selection",
)


def to_markdown(rows: list[dict], problems: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in COLUMNS) + " |")
    lines.append("")
    lines.append("Accuracies in %, mean ± std over seeds; gains in points of target accuracy.")
    if problems:
        lines += ["", "Jobs without results:", ""]
        lines += [f"- `{job}`: {reason}" for job, reason in problems]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = []
        for column in COLUMNS:
            header += [f"{column}_mean", f"{column}_std"] if column in METRICS else [column]
        writer.writerow(header)
        for row in rows:
            cells = []
            for column in COLUMNS:
                value = row.get(column)
                if column in METRICS:
                    cells += list(value) if value else ["", ""]
                else:
                    cells.append("" if value is None else value)
            writer.writerow(cells)


def report(root: str | Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give a run or sweep dir under outputs/")
    records, problems = load_jobs(root)
    rows = summarise(records)
    text = to_markdown(rows, problems)
    (root / "report.md").write_text(text)
    write_csv(rows, root / "report.csv")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tlframe-report", description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a run dir or a sweep dir (outputs/multirun/...)")
    args = parser.parse_args(argv)
    try:
        print(report(args.path), end="")
    except FileNotFoundError as err:
        print(f"tlframe-report: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
