"""``tlframe-report <run or sweep dir>``: collect every job's metrics.json into tables.

One row per (method, source, target, labels read, setting) with mean ± std over seeds and
the number of seeds, the selection rule, and the gain over the source_only / target_only
controls of the same pair and setting when the sweep has them (target_only reading the same
target labels as the row). "labels read" is what each job read per domain, to train or to
select (``labels_read`` of its metrics.json); a setting is every other config value the
sweep varied besides method, domains, seed and the label budget. Jobs without a complete
metrics.json (failed, or still running) are listed with their error line. Writes
``report.md`` and ``report.csv`` into the folder, and the figures of
``tlframe.tools.plots.report_figures`` when the sweep has several pairs or varies one numeric
setting. Reads only metrics.json (and error.json) files.

With ``--rank <tlframe-rank run dir or rank.csv>`` (repeatable; without it, every
``rank.csv`` inside the sweep folder, e.g. from ``tlframe-rank hydra.run.dir=<sweep>/rank``)
the report adds, for every method and setting whose target a rank table covers, each
source's predicted rank and scores beside its measured transfer (target accuracy and gain
over target_only), and the Spearman rank correlation of each score with the measured
transfer; these rows also go to ``rank_vs_transfer.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tlframe.errors import DataError
from tlframe.tools.plots.report_figures import draw_figures
from tlframe.tools.transferability import SCORE_NAMES, SCORES, spearman

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
        if (job / "rank.csv").is_file() and not metrics.is_file():
            continue  # a tlframe-rank run kept beside the sweep: read by --rank
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


def summarise(
    records: list[dict], settings: list[tuple[tuple[str, Any], ...]] | None = None
) -> list[dict[str, Any]]:
    """One row per group of seeds; ``settings``: each job's setting when already known (the
    committed results keep it), else found from the configs."""
    settings = job_settings(records) if settings is None else settings
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for record, setting in zip(records, settings, strict=True):
        read = labels_read(record)
        labels = labels_text(read)
        key = (record["method"], record["source"], record["target"], labels, setting)
        # Jobs that differ only in a label budget they do not read (source_only in a sweep
        # over data.target_labels) are one run: counted once per seed.
        groups[key].setdefault(record.get("seed"), record)
    rows = []
    for (method, source, target, labels, setting), by_seed in sorted(groups.items(), key=_sort_key):
        members = list(by_seed.values())
        target_read = labels_read(members[0]).get("target", "none")
        k = target_read.split(" ")[0]
        row: dict[str, Any] = {
            "method": method,
            "source": source,
            "target": target,
            "labels read": labels,
            "target_read": target_read,
            "setting": setting_text(setting),
            # what the figures plot against: the swept values and the labels per class read
            "settings": {**({"target_labels": int(k)} if k.isdigit() else {}), **dict(setting)},
            "seeds": len(members),
            "selection": members[0].get("selection"),
        }
        for metric in METRICS:
            values = [m["metrics"][metric] for m in members if metric in m["metrics"]]
            row[metric] = _mean_std(values)
        row["per_seed"] = {
            seed: m["metrics"][METRICS[0]]
            for seed, m in by_seed.items()
            if METRICS[0] in m["metrics"]
        }
        rows.append(row)
    _add_gains(rows)
    return rows


def labels_text(read: dict[str, str]) -> str:
    """A row's "labels read": ``source all, target 10 per class``."""
    return ", ".join(f"{role} {value}" for role, value in sorted(read.items()))


def setting_text(setting: tuple[tuple[str, Any], ...]) -> str:
    """A row's setting: ``key=value, ...``."""
    return ", ".join(f"{key}={value}" for key, value in setting)


def labels_read(record: dict) -> dict[str, str]:
    """The labels a job read per domain (``labels_read`` of its metrics.json; a record
    written before tlframe kept it falls back on the configured target labels)."""
    read = record.get("labels_read")
    if isinstance(read, dict) and read:
        return {str(role): str(value) for role, value in read.items()}
    configured = ((record.get("config") or {}).get("data") or {}).get("target_labels", "all")
    return {"target": f"{configured} per class" if str(configured).isdigit() else str(configured)}


def _sort_key(item: tuple) -> tuple:
    """Groups in name order, numeric settings by value (so 2 comes before 10)."""
    (method, source, target, labels, setting), _ = item
    values = tuple(
        (isinstance(v, int | float), v if isinstance(v, int | float) else 0, str(v))
        for _, v in setting
    )
    per_class = [int(word) for word in labels.split() if word.isdigit()]
    return (str(method), str(source), str(target), per_class, labels, values)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _comparable(record: dict) -> dict[str, Any]:
    """A job's config values, less the seed, where it logs (its logger's names change no
    result) and values that only name its own run dir."""
    config = record.get("config") or {}
    run_dir = str((config.get("paths") or {}).get("output_dir") or record.get("_dir"))
    return {
        key: value
        for key, value in _flatten(config).items()
        if key != "seed"
        and not key.startswith("logger.")
        and not (isinstance(value, str) and run_dir in value)
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
    """Each job's setting: the swept config values besides the label budget (what a job
    read of it is its ``labels read``)."""
    keys = [k for k in swept_keys(records) if k != LABELS_KEY]
    settings = []
    for record in records:
        values = _flatten(record.get("config") or {})
        settings.append(tuple((key, values[key]) for key in keys if key in values))
    return settings


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def _add_gains(rows: list[dict]) -> None:
    """Gains over the control of the same pair and setting that read the same target labels
    as the row: source_only (no target label) for methods that read none, target_only with
    the same k (or all) for those that read some; a run reading more labels than its
    control gets no gain over it."""
    for row in rows:
        mine = row["test/target/acc"]
        for control in CONTROLS:
            other = next(
                (
                    r
                    for r in rows
                    if r["method"] == control
                    and (r["source"], r["target"], r["setting"])
                    == (row["source"], row["target"], row["setting"])
                    and r["target_read"] == row["target_read"]
                ),
                None,
            )
            if other and mine and other["test/target/acc"] and row["method"] != control:
                row[f"gain_vs_{control}"] = mine[0] - other["test/target/acc"][0]
                row.setdefault("controls", {})[control] = other


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
    "labels read",
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


RANK_COLUMNS = (
    "target",
    "method",
    "setting",
    "source",
    "rank",
    *SCORES,
    "test/target/acc",
    "gain_vs_target_only",
    "gain_vs_source_only",
    "measured",
    *(f"spearman_{name}" for name in SCORES),
)


def rank_tables(root: Path, paths: list[str | Path] | None) -> list[dict[str, Any]]:
    """The rows of the given rank tables, or of every rank.csv inside ``root``."""
    found = paths if paths else sorted(root.rglob("rank.csv"))
    return [row for path in found for row in read_rank_table(path)]


def read_rank_table(path: str | Path) -> list[dict[str, Any]]:
    """A tlframe-rank ``rank.csv`` (or the run dir holding one), scores as floats."""
    path = Path(path)
    if path.is_dir():
        path = path / "rank.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a tlframe-rank run dir or rank.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"candidate", "source", "target", "rank", *SCORES} - set(rows[0] if rows else {})
    if missing:
        raise DataError(f"{path} is not a tlframe-rank table (it has no {min(missing)} column)")
    for row in rows:
        for name in SCORES:
            row[name] = float(row[name]) if row[name] else None
        row["rank"] = int(row["rank"]) if row["rank"] else None
        row["_file"] = str(path)
    return rows


def compare_ranks(rows: list[dict], rank_rows: list[dict]) -> list[dict[str, Any]]:
    """Per (target, method, setting): each ranked source's scores beside its measured
    transfer, and the Spearman correlation of each score with it. The measured transfer is
    the gain over target_only when every source has one, else the target accuracy. A score
    that is better when lower (A-distance) is negated, so +1 always means "ordered the
    sources as the measurement did"."""
    by_target: dict[str, dict[str, dict]] = defaultdict(dict)
    for ranked in sorted(rank_rows, key=lambda r: r["rank"] or math.inf):
        by_target[ranked["target"]].setdefault(ranked["source"], ranked)  # best per source
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for row in rows:
        ranked = by_target.get(row["target"], {}).get(row["source"])
        if ranked and row["method"] != "target_only" and row["test/target/acc"]:
            setting = "; ".join(p for p in (row["labels read"], row["setting"]) if p)
            groups[(row["target"], row["method"], setting)].append((ranked, row))
    comparisons = []
    for (target, method, setting), pairs in sorted(groups.items()):
        pairs.sort(key=lambda pair: pair[0]["rank"] or math.inf)
        gains = [row.get("gain_vs_target_only") for _, row in pairs]
        measured_key = "gain_vs_target_only" if None not in gains else "test/target/acc"
        measured = gains if None not in gains else [r["test/target/acc"][0] for _, r in pairs]
        correlation = {}
        for name, higher in SCORES.items():
            values = [ranked[name] for ranked, _ in pairs]
            if None not in values:
                signed = [v if higher else -v for v in values]
                correlation[name] = spearman(signed, measured)
        comparisons.append(
            {
                "target": target,
                "method": method,
                "setting": setting,
                "measured": measured_key,
                "pairs": pairs,
                "spearman": correlation,
                "rank_by": pairs[0][0].get("rank_by") or "logme",
            }
        )
    return comparisons


def _score(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def rank_markdown(comparisons: list[dict], rank_rows: list[dict]) -> list[str]:
    files = sorted({(r["_file"], r["target"]) for r in rank_rows})
    lines = ["", "## Transferability ranks (tlframe-rank) vs measured transfer", ""]
    lines += [f"- `{path}`: target {target}" for path, target in files]
    if not comparisons:
        lines += ["", "No job of the sweep has a source and target that a rank table covers."]
    for item in comparisons:
        by = SCORE_NAMES.get(item["rank_by"], item["rank_by"])
        lines += [
            "",
            f"### {item['method']} -> {item['target']} ({item['setting']}), ranked by {by}",
            "",
            "| source | rank | LogME | LEEP | A-distance | test/target/acc | gain_vs_target_only |",
            "|---|---|---|---|---|---|---|",
        ]
        for ranked, row in item["pairs"]:
            cells = [
                row["source"],
                str(ranked["rank"] or "-"),
                _score(ranked["logme"], 4),
                _score(ranked["leep"], 4),
                _score(ranked["a_distance"], 3),
                _fmt(row["test/target/acc"]),
                _fmt(row.get("gain_vs_target_only")),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        rhos = ", ".join(
            f"{SCORE_NAMES[name]} {_rho(item['spearman'].get(name))}" for name in SCORES
        )
        lines += [
            "",
            f"Spearman rank correlation with {item['measured']} over {len(item['pairs'])} "
            f"sources: {rhos} (+1: the score orders the sources as the measurement does; "
            "A-distance counts lower as better).",
        ]
    return lines


def write_rank_csv(comparisons: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RANK_COLUMNS)
        for item in comparisons:
            for ranked, row in item["pairs"]:
                accuracy = row["test/target/acc"][0] if row["test/target/acc"] else None
                values = {
                    **{k: item[k] for k in ("target", "method", "setting", "measured")},
                    "source": row["source"],
                    "rank": ranked["rank"],
                    **{name: ranked[name] for name in SCORES},
                    "test/target/acc": accuracy,
                    "gain_vs_target_only": row.get("gain_vs_target_only"),
                    "gain_vs_source_only": row.get("gain_vs_source_only"),
                    **{f"spearman_{n}": item["spearman"].get(n) for n in SCORES},
                }
                writer.writerow(["" if values[c] is None else values[c] for c in RANK_COLUMNS])


def report(root: str | Path, ranks: list[str | Path] | None = None) -> str:
    """Write report.md and report.csv (and rank_vs_transfer.csv with rank tables) into the
    run or sweep folder ``root``; ``ranks``: tlframe-rank tables (default: those in root)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give a run or sweep dir under outputs/")
    records, problems = load_jobs(root)
    rows = summarise(records)
    rank_rows = rank_tables(root, ranks)
    figures = draw_figures(rows, root)
    text = to_markdown(rows, problems, figures)
    if rank_rows:
        comparisons = compare_ranks(rows, rank_rows)
        text += "\n".join(rank_markdown(comparisons, rank_rows)) + "\n"
        write_rank_csv(comparisons, root / "rank_vs_transfer.csv")
    (root / "report.md").write_text(text)
    write_csv(rows, root / "report.csv")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tlframe-report", description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a run dir or a sweep dir (outputs/multirun/...)")
    parser.add_argument(
        "--rank",
        action="append",
        metavar="RANK",
        help="a tlframe-rank run dir or rank.csv to set beside the measured transfer "
        "(repeatable; default: every rank.csv inside the sweep folder)",
    )
    args = parser.parse_args(argv)
    try:
        print(report(args.path, args.rank), end="")
    except (FileNotFoundError, DataError) as err:
        print(f"tlframe-report: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
