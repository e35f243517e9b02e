"""``tlframe-report <run or sweep dir>``: collect every job's metrics.json into tables.

One row per (method, source, target, setting) with mean ± std over seeds and the number of
seeds, the selection rule, and the gain over the source_only / target_only controls of the
same pair when the sweep has them. A setting is the label regime plus every config value the
sweep varied besides method, domains and seed. Jobs without a complete metrics.json (failed,
or still running) are listed with their error line. Writes ``report.md`` and ``report.csv``
into the folder, and the figures of ``tlframe.plots.report_figures`` when the sweep has
several pairs or varies one numeric setting. Reads only metrics.json (and error.json) files.
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

from tlframe.plots.report_figures import draw_figures

METRICS = ("test/target/acc", "test/source/acc")
CONTROLS = ("source_only", "target_only")
REQUIRED = {"method", "source", "target", "metrics"}
LABELS_KEY = "data.target_labels"
MISSING = "<unset>"  # a key a job's config lacks (e.g. another method's option)


def load_jobs(root: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Completed records, and (job dir, reason) for every job that has none."""
    records, problems = [], []
    job_dirs = sorted({p.parent for p in root.rglob(".hydra") if p.is_dir()} | {root})
    for job in job_dirs:
        metrics, error = job / "metrics.json", job / "error.json"
        if metrics.is_file():
            record = _read_json(metrics)
            if record is None or not set(record) >= REQUIRED:
                problems.append((str(job), "unreadable or incomplete metrics.json"))
            else:
                record["_dir"] = str(job)
                records.append(record)
            continue
        if error.is_file():
            detail = _read_json(error) or {}
            problems.append((str(job), str(detail.get("error", "failed (unreadable error.json)"))))
        elif (job / ".hydra").is_dir():
            problems.append((str(job), "no metrics.json (still running or killed)"))
    return records, problems


def _read_json(path: Path) -> dict | None:
    """A job's JSON file, or None while it is unreadable (a job killed mid-way, a foreign file)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def summarise(records: list[dict]) -> list[dict[str, Any]]:
    settings = job_settings(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record, setting in zip(records, settings, strict=True):
        key = (record["method"], record["source"], record["target"], setting)
        groups[key].append(record)
    rows = []
    for (method, source, target, setting), members in sorted(groups.items(), key=_sort_key):
        row: dict[str, Any] = {
            "method": method,
            "source": source,
            "target": target,
            "setting": ", ".join(f"{k}={v}" for k, v in setting),
            "settings": dict(setting),
            "seeds": len(members),
            "selection": members[0].get("selection"),
        }
        for metric in METRICS:
            values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
            row[metric] = _mean_std(values)
        rows.append(row)
    _add_gains(rows)
    return rows


def _sort_key(item: tuple) -> tuple:
    """Groups in name order, numeric settings by value (so 2 comes before 10)."""
    (method, source, target, setting), _ = item
    values = tuple(
        (isinstance(v, int | float), v if isinstance(v, int | float) else 0, str(v))
        for _, v in setting
    )
    return (str(method), str(source), str(target), values)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _comparable(record: dict) -> dict[str, Any]:
    """A job's config values, less the seed and those that only name its own run dir."""
    config = record.get("config") or {}
    run_dir = str((config.get("paths") or {}).get("output_dir") or record.get("_dir"))
    return {
        key: value
        for key, value in _flatten(config).items()
        if key != "seed" and not (isinstance(value, str) and run_dir in value)
    }


def swept_keys(records: list[dict]) -> list[str]:
    """Config keys whose value differs between jobs of one (method, source, target): what the
    sweep varied besides them. A key that follows another (an interpolation) is dropped."""
    flat = [_comparable(r) for r in records]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record, values in zip(records, flat, strict=True):
        groups[(record["method"], record["source"], record["target"])].append(values)
    varied = {
        key
        for members in groups.values()
        for key in set().union(*members)
        if len({repr(m.get(key, MISSING)) for m in members}) > 1
    }
    chosen, seen = [], set()
    for key in sorted(varied, key=lambda k: (k != LABELS_KEY, k.count("."), k)):
        column = tuple(repr(values.get(key, MISSING)) for values in flat)
        if column not in seen:
            seen.add(column)
            chosen.append(key)
    return chosen


def job_settings(records: list[dict]) -> list[tuple[tuple[str, Any], ...]]:
    """Each job's setting: its label regime, then the other swept config values."""
    keys = [k for k in swept_keys(records) if k != LABELS_KEY]
    settings = []
    for record in records:
        values = _flatten(record.get("config") or {})
        setting = [("target_labels", values.get(LABELS_KEY, "all"))]
        setting += [(key, values[key]) for key in keys if key in values]
        settings.append(tuple(setting))
    return settings


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


def to_markdown(rows: list[dict], problems: list[tuple[str, str]], figures: list[Path] = ()) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in COLUMNS) + " |")
    lines.append("")
    lines.append("Accuracies in %, mean ± std over seeds; gains in points of target accuracy.")
    if figures:
        lines += [""] + [f"![{path.stem}]({path.name})" for path in figures]
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
    figures = draw_figures(rows, root)
    text = to_markdown(rows, problems, figures)
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
