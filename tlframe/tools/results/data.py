"""A table's data: one JSON line per run of its sweep, small enough to commit and to diff.

A table is an experiment preset (``conf/experiment/<table>.yaml``); its runs are kept in
``docs/results/<table>.jsonl`` with what a reader needs to check a figure (method, domains,
seed, the swept setting, the labels read, the selection, the key metrics) and where it came
from (code version, date, the preset's hash). Checkpoints and logs stay in outputs/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tlframe.errors import DataError
from tlframe.tools.report import job_settings, load_jobs
from tlframe.tools.validator_study import CRITERIA

# what a committed line keeps of a run's metrics, where the run has it: the accuracies, the
# generalised zero-shot figures, and the label-free criteria the validator study judges
KEY_METRICS = (
    "test/target/acc",
    "test/source/acc",
    "test/target/gzsl_seen",
    "test/target/gzsl_unseen",
    "test/target/gzsl_h",
    *(criterion.metric for criterion in CRITERIA),
)
PRESETS = Path(__file__).resolve().parents[3] / "conf" / "experiment"


def preset_path(table: str) -> Path:
    path = PRESETS / f"{table}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise DataError(f"no experiment preset conf/experiment/{table}.yaml; known: {known}")
    return path


def preset_hash(table: str) -> str:
    """The hash of the preset's lines less its comments: a table whose sweep definition
    changed is stale, one whose explanation changed is not."""
    lines = [line.split(" #")[0].rstrip() for line in preset_path(table).read_text().splitlines()]
    kept = "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))
    return hashlib.sha256(kept.encode()).hexdigest()[:12]


def _job_number(record: dict) -> tuple[int, str]:
    name = Path(record["_dir"]).name
    return (int(name), name) if name.isdigit() else (-1, name)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def compact(record: dict, setting: tuple, table: str, digest: str) -> dict[str, Any]:
    """What a committed line keeps of a run's metrics.json."""
    last = list((record.get("stages") or {}).values())[-1:] or [{}]
    return {
        "table": table,
        "method": record["method"],
        "source": record["source"],
        "target": record["target"],
        "seed": record.get("seed"),
        "setting": [[key, value] for key, value in setting],
        "labels_read": record.get("labels_read"),
        "selection": record.get("selection"),
        "selected_step": last[0].get("selected_step"),
        "metrics": {k: _round(record["metrics"][k]) for k in KEY_METRICS if k in record["metrics"]},
        "code_version": record.get("code_version", "unknown"),
        "date": record.get("date", "unknown"),
        "preset": digest,
    }


def collect(table: str, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The compact lines of every job of a finished sweep; refuses a sweep with failed or
    unfinished jobs, so a table never silently misses a run."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(
            f"{sweep_dir} is not a folder; run the sweep first (tlframe-results run {table})"
        )
    records, problems = load_jobs(sweep_dir)
    if problems:
        job, reason = problems[0]
        raise DataError(
            f"{len(problems)} job(s) of {sweep_dir} have no result (first: {job}: {reason}); "
            f"run the sweep again with tlframe-results run {table}"
        )
    if not records:
        raise DataError(f"{sweep_dir} holds no metrics.json; run tlframe-results run {table}")
    records.sort(key=_job_number)
    digest = preset_hash(table)
    settings = job_settings(records)
    return [compact(r, s, table, digest) for r, s in zip(records, settings, strict=True)]


def write_lines(lines: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a half-written table never replaces a whole one


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{number} is not a JSON line ({err.msg}); restore it with git"
            ) from err
    return lines


def is_stale(table: str, lines: list[dict[str, Any]]) -> bool:
    """No data yet, or data from another version of the preset."""
    return not lines or any(line.get("preset") != preset_hash(table) for line in lines)
