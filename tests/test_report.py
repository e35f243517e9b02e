"""tlframe-report: tables from hand-made metrics.json files, failed jobs listed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tlframe.tools.report import load_jobs, main, report, summarise


def job(
    root: Path,
    num: int,
    method: str,
    seed: int,
    target_acc: float,
    source_acc: float,
    labels_read: dict | None = None,
):
    folder = root / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("{}")
    record = {
        "status": "completed",
        "method": method,
        "source": "a",
        "target": "b",
        "seed": seed,
        "selection": "val/source/acc",
        "metrics": {"test/target/acc": target_acc, "test/source/acc": source_acc},
        "config": {"data": {"target_labels": "all"}},
        **({"labels_read": labels_read} if labels_read else {}),
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_report_means_stds_gains_and_failures(tmp_path: Path):
    job(tmp_path, 0, "dann", 0, 0.80, 0.99)
    job(tmp_path, 1, "dann", 1, 0.90, 0.97)
    job(tmp_path, 2, "source_only", 0, 0.70, 0.99)
    job(tmp_path, 3, "source_only", 1, 0.70, 0.99)
    failed = tmp_path / "4"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "error.json").write_text(json.dumps({"error": "ConfigError: bad lr"}))
    (tmp_path / "5" / ".hydra").mkdir(parents=True)  # still running
    text = report(tmp_path)
    dann_line = next(line for line in text.splitlines() if line.startswith("| dann"))
    assert "85.0 ± 7.1" in dann_line  # mean 0.85, sample std 0.0707
    assert "+15.0" in dann_line  # gain over source_only (0.70)
    assert "ConfigError: bad lr" in text and "still running" in text
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    dann = next(r for r in rows if r["method"] == "dann")
    assert float(dann["test/target/acc_mean"]) == pytest.approx(0.85)
    assert dann["seeds"] == "2"


def test_negative_transfer_is_flagged(tmp_path: Path):
    job(tmp_path, 0, "dann", 0, 0.60, 0.99)
    job(tmp_path, 1, "source_only", 0, 0.70, 0.99)
    assert "negative transfer" in report(tmp_path)


def test_missing_folder_is_one_clear_line(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("tlframe-report: error:")


def test_a_gain_compares_runs_that_read_the_same_target_labels(tmp_path: Path):
    """target_only with every target label is a reference, not a source_only gain."""
    unlabeled = {"source": "all", "target": "none"}
    job(tmp_path, 0, "source_only", 0, 0.70, 0.99, labels_read=unlabeled)
    job(tmp_path, 1, "target_only", 0, 0.99, 0.50, labels_read={"source": "none", "target": "all"})
    job(tmp_path, 2, "dann", 0, 0.85, 0.99, labels_read=unlabeled)
    rows = {row["method"]: row for row in summarise(load_jobs(tmp_path)[0])}
    assert rows["dann"]["gain_vs_source_only"] == pytest.approx(0.15)
    assert "gain_vs_source_only" not in rows["target_only"]
