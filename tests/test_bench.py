"""The benchmark script runs end to end on a tiny setting (its figures live in docs/)."""

from __future__ import annotations

import torch

from tlframe.engine.stages import build_module
from tlframe.tools import bench
from tlframe.tools.bench import CASES, run


def test_benchmark_runs_and_reports_every_case():
    table = run(steps=6, warmup=2, repeats=1, default_run=False)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert len(rows) == len(CASES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[3]) > 0


def test_both_sides_follow_the_composed_config(monkeypatch):
    """With performance.channels_last both loops feed NHWC batches, of the config's size."""
    seen = []

    def recording_build_module(*args, **kwargs):
        module = build_module(*args, **kwargs)

        def record(backbone, inputs):
            if backbone.training:  # training batches, not tlframe's validation
                seen.append(inputs[0])

        module.model.backbone.register_forward_pre_hook(record)
        return module

    monkeypatch.setattr(bench, "build_module", recording_build_module)
    overrides = ("performance.channels_last=true", "data.batch_size=32")
    color = ("source.channels=3", "target.channels=3")  # NHWC is a no-op for one channel
    table = run(steps=3, warmup=1, repeats=1, default_run=False, overrides=overrides + color)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert rows and all(row.rstrip(" |").endswith("batch 32, channels_last on") for row in rows)
    batches = [x for x in seen if x.dim() == 4]
    assert batches and all(x.shape[1] == 3 for x in batches)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in batches)
    assert all(len(x) in (32, 64) for x in batches)  # 64: DANN's source + target


def test_a_new_report_keeps_the_hand_written_notes(tmp_path):
    report = tmp_path / "PERFORMANCE.md"
    report.write_text("# Performance\n\n| old table |\n\n## Notes\n\nwhy the figures are so\n")
    assert bench.kept_notes(report) == "\n## Notes\n\nwhy the figures are so\n"
    assert bench.kept_notes(tmp_path / "missing.md") == ""


def test_the_sweep_case_runs_its_jobs_two_at_once(tmp_path):
    """The serial side is Hydra's basic launcher, which every other sweep test runs."""
    tiny = (
        "method=source_only",
        "data.steps_per_epoch=2",
        "trainer.max_epochs=1",
        "source.num_train=200",
        "source.num_val=100",
        "source.num_test=100",
        "callbacks.feature_space=null",
    )
    assert bench.sweep_seconds(tmp_path, jobs=2, seeds=2, job=tiny) > 0
    assert len(list((tmp_path / "sweep_2").glob("*/metrics.json"))) == 2


def test_the_image_folder_case_measures_both_pipelines(tmp_path):
    """Tiny: 40 JPEGs of 32x32 (read whole, no crops), batches of 4, one worker."""
    ours, plain, ratio, settings = bench.image_folder_rates(
        tmp_path,
        images=40,
        size=32,
        steps=3,
        warmup=1,
        workers=1,
        overrides=("data.batch_size=4",),
        repeats=2,
    )
    assert ours > 0 and plain > 0 and ratio > 0
    assert "40 JPEGs of 32x32 px, 3x32x32 inputs, batch 4" in settings
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 40
