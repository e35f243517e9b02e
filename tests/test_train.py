"""The train entrypoint in-process: every method runs, the controls learn, outputs exist."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from conftest import METHOD_DATA, QUICK, SMALL_SOURCE
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray

import tlframe
from tlframe.engine.method import load_methods
from tlframe.errors import ConfigError
from tlframe.train import train

METHODS = sorted(load_methods())


@pytest.mark.parametrize("method", METHODS)
def test_every_method_survives_a_fast_dev_run(make_cfg, method: str):
    cfg = make_cfg(
        f"method={method}",
        "trainer.fast_dev_run=true",
        "data.target_labels=5",
        *METHOD_DATA.get(method, SMALL_SOURCE),
    )
    metrics = train(cfg)["metrics"]  # clustering methods score clusters, not predictions
    assert {"test/target/acc", "test/target/cluster_acc"} & metrics.keys()


def test_run_dir_holds_metrics_tensorboard_hparams_and_checkpoints(make_cfg, tmp_path: Path):
    run = tmp_path / "run"
    record = train(make_cfg(*QUICK, "method=source_only", "source.num_train=500", run_dir=run))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"] == record["metrics"]
    # source_only has no target label: its target validation accuracy is named oracle
    names = ("test/target/acc", "test/source/acc", "val/source/acc", "val/target/oracle_acc")
    assert set(names) <= saved["metrics"].keys() and "val/target/acc" not in saved["metrics"]
    assert saved["labels_read"] == {"source": "all", "target": "none"}
    assert len(saved["metrics"]["test/target/acc_per_class"]) == 10
    assert saved["selection"] == "val/source/acc" and saved["seed"] == 0
    assert saved["method"] == "source_only"
    # provenance for the committed results: this checkout's commit, today's date
    assert saved["code_version"].startswith(f"{tlframe.__version__}+g")
    assert saved["date"] == datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert set(saved["timings"]) == {"data", "fit", "test", "report"}
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files"
    tags = {
        value.tag
        for event_file in events
        for event in EventFileLoader(str(event_file)).Load()
        for value in event.summary.value
    }
    assert "_hparams_/session_start_info" in tags, "HPARAMS tab is empty"
    assert "train/loss" in tags and "val/source/acc" in tags
    assert "val/target/oracle_acc" in tags and "val/target/acc" not in tags
    logged = {  # the final test figure, through Lightning's logger rather than metrics.json
        value.tag: float(make_ndarray(value.tensor))
        for event_file in events
        for event in EventFileLoader(str(event_file)).Load()
        for value in event.summary.value
        if value.tag == "test/target/acc"
    }
    assert logged["test/target/acc"] == pytest.approx(saved["metrics"]["test/target/acc"])
    assert (run / "checkpoints" / "source" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "source" / "best.ckpt").is_file()


def test_target_only_with_all_labels_learns_hand_digits(make_cfg):
    record = train(
        make_cfg(
            "method=target_only",
            "data.steps_per_epoch=50",
            "trainer.max_epochs=3",
            "cache_stages=false",
        )
    )
    assert record["selection"] == "val/target/acc"
    assert record["metrics"]["test/target/acc"] > 0.80


def test_source_only_transfers_clearly_above_chance(make_cfg):
    record = train(
        make_cfg(
            "method=source_only",
            "data.steps_per_epoch=50",
            "trainer.max_epochs=4",
            "cache_stages=false",
        )
    )
    assert record["metrics"]["test/source/acc"] > 0.90
    assert record["metrics"]["test/target/acc"] > 0.35  # chance is 0.10


def test_same_seed_gives_identical_metrics_and_another_seed_differs(make_cfg, tmp_path):
    overrides = (*QUICK, "source.num_train=500", "cache_stages=false")
    first = train(make_cfg(*overrides, run_dir=tmp_path / "a"))["metrics"]
    second = train(make_cfg(*overrides, run_dir=tmp_path / "b"))["metrics"]
    other = train(make_cfg(*overrides, "seed=1", run_dir=tmp_path / "c"))["metrics"]
    assert first == second
    assert other != first


def test_target_only_without_target_labels_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="data.target_labels"):
        train(make_cfg("method=target_only", "data.target_labels=none"))


def test_channels_last_gives_the_same_predictions(make_cfg, tmp_path: Path):
    overrides = (*QUICK, "source.num_train=300", "cache_stages=false", "method=source_only")
    plain = train(make_cfg(*overrides, run_dir=tmp_path / "a"))["metrics"]
    nhwc = train(make_cfg(*overrides, "performance.channels_last=true", run_dir=tmp_path / "b"))
    assert nhwc["metrics"]["test/target/acc"] == pytest.approx(plain["test/target/acc"], abs=0.02)


def test_raw_pixel_control_with_a_parameterless_backbone_is_tested_like_any_run(make_cfg):
    """``backbone=mlp backbone.hidden_dims=[]`` has no parameters; the feature-space
    callback must still find the device and record the A-distance."""
    overrides = ["method=target_only", "backbone=mlp", "backbone.hidden_dims=[]"]
    cfg = make_cfg(*overrides, *QUICK, "data.target_labels=5", "callbacks.feature_space.tsne=false")
    metrics = train(cfg)["metrics"]
    # raw pixels of font-rendered and handwritten digits are easy to tell apart
    assert metrics["test/target/a_distance"] > 1.0
    assert metrics["test/target/acc"] > 0.1
