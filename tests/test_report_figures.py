"""tlframe-report's figures and settings, from hand-made metrics.json files of a sweep."""

from __future__ import annotations

import json
from pathlib import Path

from tlframe.tools.report import report

DOMAINS = ("synth_digits", "hand_digits", "synth_digits_color")


def job(root: Path, num: int, method: str, source: str, target: str, acc: float, **config):
    """A finished job's folder; ``config`` is the resolved config (``a.b=1`` as ``a__b=1``)."""
    folder = root / str(num)
    (folder / ".hydra").mkdir(parents=True)
    resolved: dict = {"seed": 0, "data": {"target_labels": "all"}, "paths": {}}
    resolved["paths"]["output_dir"] = str(folder)
    resolved["trainer"] = {"default_root_dir": str(folder)}  # differs per job, not a setting
    for key, value in config.items():
        *parents, leaf = key.split("__")
        node = resolved
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    record = {
        "status": "completed",
        "method": method,
        "source": source,
        "target": target,
        "seed": resolved["seed"],
        "selection": "val/source/acc",
        "metrics": {"test/target/acc": acc, "test/source/acc": 0.99},
        "config": resolved,
    }
    (folder / "metrics.json").write_text(json.dumps(record))


def test_transfer_matrix_heatmap_with_failed_and_running_jobs(tmp_path: Path):
    num = 0
    for method in ("source_only", "dann"):
        for source in DOMAINS:
            for target in DOMAINS:
                if source != target and (source, target) != ("hand_digits", "synth_digits"):
                    job(tmp_path, num, method, source, target, 0.5 + 0.1 * (method == "dann"))
                    num += 1
    (tmp_path / "97" / ".hydra").mkdir(parents=True)
    (tmp_path / "97" / "error.json").write_text('{"error": "RuntimeError: boom"}')
    (tmp_path / "98" / ".hydra").mkdir(parents=True)  # still running
    (tmp_path / "99" / ".hydra").mkdir(parents=True)
    (tmp_path / "99" / "metrics.json").write_text('{"status": "compl')  # cut off
    text = report(tmp_path)
    assert (tmp_path / "transfer_matrix.png").stat().st_size > 10_000
    assert "![transfer_matrix](transfer_matrix.png)" in text
    assert "RuntimeError: boom" in text and "still running" in text and "incomplete" in text
    assert text.count("| dann |") == 5 and "+10.0" in text
    assert not list(tmp_path.glob("by_*.png"))  # nothing numeric was swept


def test_one_swept_numeric_setting_gives_rows_and_a_line_plot(tmp_path: Path):
    num = 0
    for trade_off, accs in ((0.1, (0.6, 0.7)), (1.0, (0.8, 0.9))):
        for seed, acc in enumerate(accs):
            job(tmp_path, num, "dann", "a", "b", acc, seed=seed, method__trade_off=trade_off)
            num += 1
    job(tmp_path, num, "source_only", "a", "b", 0.5)
    text = report(tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| dann")]
    assert len(lines) == 2  # one row per trade-off, each over its two seeds
    assert "method.trade_off=0.1" in lines[0] and "65.0 ± 7.1" in lines[0]
    assert "method.trade_off=1.0" in lines[1] and "85.0 ± 7.1" in lines[1]
    assert (tmp_path / "by_method.trade_off.png").is_file()
    assert not (tmp_path / "transfer_matrix.png").exists()  # a single pair


def test_an_empty_or_all_failed_sweep_still_reports(tmp_path: Path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / "error.json").write_text("not json")
    text = report(tmp_path)
    assert "unreadable error.json" in text
