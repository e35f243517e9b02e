"""docs/RESULTS.md is rendered from the committed runs in docs/results/, never hand-kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tlframe.errors import DataError
from tlframe.tools.results import cli, data
from tlframe.tools.results.render import render

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_is_what_the_committed_runs_render():
    rendered = render(ROOT / "docs" / "results")
    committed = (ROOT / "docs" / "RESULTS.md").read_text()
    assert rendered == committed, (
        "docs/RESULTS.md differs from what docs/results/ renders: run `tlframe-results render` "
        "(or `make results TABLE=<table>` for a table whose data changed)"
    )


def test_every_committed_table_is_a_current_preset_run_by_known_code():
    for path in sorted((ROOT / "docs" / "results").glob("*.jsonl")):
        lines = data.read_lines(path)
        assert {line["table"] for line in lines} == {path.stem}
        assert not data.is_stale(path.stem, lines), f"{path.stem}: its preset changed since it ran"
        assert all(
            line["code_version"].startswith("0.") and line["date"] != "unknown" for line in lines
        )


def _job(sweep: Path, number: int, method: str, seed: int, acc: float, im: float = 1.0) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    record = {
        "method": method,
        "source": "synth_digits",
        "target": "hand_digits",
        "seed": seed,
        "selection": "step",
        "labels_read": {"source": "all", "target": "none"},
        "metrics": {
            "test/target/acc": acc,
            "test/source/acc": 0.99,
            "val/target/im": im,
            "test/target/acc_per_class": [acc] * 10,
        },
        "stages": {"adapt": {"selected_step": 1000}},
        "code_version": "0.1.0+gabc1234",
        "date": "2026-11-30",
        "config": {
            "seed": seed,
            "data": {"target_labels": "all"},
            "paths": {"output_dir": str(job)},
        },
    }
    (job / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A finished sweep of two methods on three seeds, with known accuracies."""
    sweep = tmp_path / "sweep"
    for number, (method, seed, acc) in enumerate(
        [
            ("source_only", 0, 0.70),
            ("source_only", 1, 0.72),
            ("source_only", 2, 0.74),
            ("dann", 0, 0.85),
            ("dann", 1, 0.70),
            ("dann", 2, 0.89),
        ]
    ):
        _job(sweep, number, method, seed, acc)
    return sweep


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    (results / "index.yaml").write_text("intro: intro.md\ntables:\n  - da_synth2hand\n")
    (results / "intro.md").write_text("# Results\n")
    (results / "da_synth2hand.md").write_text("## Adaptation\n")
    return results


def test_a_sweep_becomes_committed_lines_and_a_table_with_gains_from_its_own_controls(
    sweep: Path, results_dir: Path
):
    cli.keep("da_synth2hand", sweep, results_dir)
    lines = data.read_lines(results_dir / "da_synth2hand.jsonl")
    assert [(line["method"], line["seed"]) for line in lines][:4] == [
        ("source_only", 0),
        ("source_only", 1),
        ("source_only", 2),
        ("dann", 0),
    ]
    # the accuracies and the label-free criteria, not the per-class figures
    kept = {"test/target/acc": 0.7, "test/source/acc": 0.99, "val/target/im": 1.0}
    assert lines[0]["metrics"] == kept
    assert lines[0]["preset"] == data.preset_hash("da_synth2hand")
    page = render(results_dir)
    dann = next(
        line
        for line in page.splitlines()
        if line.startswith("| synth_digits -> hand_digits | dann")
    )
    cells = [cell.strip() for cell in dann.strip("|").split("|")]
    # mean 81.3 ± 10.0 (sample std); +9.3 over source_only's 72.0; better on seeds 0 and 2, not on 1
    assert cells[5:8] == ["81.3 ± 10.0", "+9.3", "2/3"]
    assert cells[-1] == "85.0, 70.0, 89.0"
    assert "measured 2026-11-30 with tlframe 0.1.0+gabc1234" in page
    assert "make results TABLE=da_synth2hand" in page


def test_a_sweep_with_a_failed_job_is_refused_and_the_committed_lines_stay(
    sweep: Path, results_dir: Path
):
    cli.keep("da_synth2hand", sweep, results_dir)
    before = (results_dir / "da_synth2hand.jsonl").read_text()
    (sweep / "6" / ".hydra").mkdir(parents=True)
    (sweep / "6" / "error.json").write_text(json.dumps({"error": "out of memory"}))
    with pytest.raises(DataError, match=r"1 job\(s\) .* out of memory"):
        cli.keep("da_synth2hand", sweep, results_dir)
    assert (results_dir / "da_synth2hand.jsonl").read_text() == before


def test_a_table_is_stale_when_its_sweep_changes_not_when_its_comments_do(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(data, "PRESETS", tmp_path)
    preset = tmp_path / "mine.yaml"
    preset.write_text("# a sweep\nhydra:\n  sweeper:\n    params:\n      seed: 0,1,2\n")
    lines = [{"preset": data.preset_hash("mine")}]
    assert data.is_stale("mine", []) and not data.is_stale("mine", lines)
    preset.write_text(
        "# the same sweep, explained better\nhydra:\n  sweeper:\n"
        "    params:\n      seed: 0,1,2  # three\n"
    )
    assert not data.is_stale("mine", lines)
    preset.write_text("hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    assert data.is_stale("mine", lines)


def test_run_sweeps_the_preset_with_the_users_overrides_then_keeps_and_renders(
    sweep: Path, results_dir: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    commands = []

    def fake_sweep(command, check):
        commands.append(command)
        target = Path(re.search(r"hydra.sweep.dir=(\S+)", " ".join(command)).group(1))
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep.rename(target)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(cli.subprocess, "run", fake_sweep)
    page = tmp_path / "RESULTS.md"
    cli.main(
        [
            "run",
            "da_synth2hand",
            "--results-dir",
            str(results_dir),
            "--page",
            str(page),
            "--",
            "++source.path=/x",
        ]
    )
    assert commands[0][-3:] == [
        "experiment=da_synth2hand",
        "hydra.sweep.dir=outputs/results/da_synth2hand",
        "++source.path=/x",
    ]
    assert "| synth_digits -> hand_digits | dann" in page.read_text()


def test_a_failed_sweep_keeps_its_tables_data_and_says_so(
    sweep: Path, results_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    cli.keep("da_synth2hand", sweep, results_dir)
    before = (results_dir / "da_synth2hand.jsonl").read_text()
    failing = type("Failed", (), {"returncode": 1})()
    monkeypatch.setattr(cli.subprocess, "run", lambda command, check: failing)
    page = tmp_path / "RESULTS.md"
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "da_synth2hand", "--results-dir", str(results_dir), "--page", str(page)])
    assert stop.value.code == 2
    assert "not re-measured: da_synth2hand" in capsys.readouterr().err
    assert (results_dir / "da_synth2hand.jsonl").read_text() == before
    assert "| synth_digits -> hand_digits | dann" in page.read_text()  # rendered all the same


def test_run_refuses_an_unknown_table_in_one_line(results_dir: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "no_such_table", "--results-dir", str(results_dir)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_check_fails_when_the_page_was_edited_by_hand(results_dir: Path, tmp_path: Path, capsys):
    page = tmp_path / "RESULTS.md"
    cli.main(["render", "--results-dir", str(results_dir), "--page", str(page)])
    cli.main(["render", "--check", "--results-dir", str(results_dir), "--page", str(page)])
    page.write_text(page.read_text() + "a figure typed in by hand\n")
    with pytest.raises(SystemExit):
        cli.main(["render", "--check", "--results-dir", str(results_dir), "--page", str(page)])
    assert "differs" in capsys.readouterr().err


def test_a_validator_study_is_rendered_as_the_criteria_it_judges(tmp_path: Path, results_dir: Path):
    """IM ranks three candidates in the opposite order of their accuracy: its pick is the worst."""
    sweep = tmp_path / "candidates"
    for number, (acc, im) in enumerate([(0.9, 0.5), (0.8, 1.0), (0.6, 2.0)]):
        _job(sweep, number, "dann", 0, acc, im=im)
    (results_dir / "index.yaml").write_text(
        "intro: intro.md\ntables:\n  - name: validators_dev\n    kind: validators\n"
    )
    (results_dir / "validators_dev.md").write_text("## Validators\n")
    cli.keep("validators_dev", sweep, results_dir)
    page = render(results_dir)
    im = next(line for line in page.splitlines() if line.startswith("| im |"))
    cells = [cell.strip() for cell in im.strip("|").split("|")]
    assert cells[4:8] == ["-1.00, -1.00", "60.0", "-", "90.0"]  # rho, its pick, no oracle, best
    assert "seed 0," in page
