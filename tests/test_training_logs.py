"""Training values are logged only on the steps Lightning writes, with the same results."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray

from tlframe.engine.module import Engine
from tlframe.train import train

STEPS = 7  # with logs every 3 steps Lightning writes steps 2 and 5 (and the last, 6, not)
SHORT = [
    f"data.steps_per_epoch={STEPS}",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=3",
    "source.num_train=500",
    "cache_stages=false",
    "callbacks.feature_space=null",
]


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted((run / "tensorboard").rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(event_file)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(make_ndarray(value.tensor))
                    series.setdefault(value.tag, []).append((event.step, number))
    return series


@pytest.mark.parametrize("method", ["source_only", "dann"])
def test_training_values_are_logged_only_on_written_steps_with_the_same_values(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
):
    calls: list[str] = []
    log = pl.LightningModule.log

    def counting_log(self, name, *args, **kwargs):
        if self.trainer.training:
            calls.append(name)
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(pl.LightningModule, "log", counting_log)
    sparse = scalars_of_run(make_cfg, tmp_path / "sparse", method)
    logged_steps = len([c for c in calls if c == "train/loss"])

    calls.clear()  # as before: every step logged, Lightning writing every third
    monkeypatch.setattr(Engine, "logs_this_step", lambda self: True)
    dense = scalars_of_run(make_cfg, tmp_path / "dense", method)

    assert logged_steps == 2 and len([c for c in calls if c == "train/loss"]) == STEPS
    expected = {"train/loss", "train/cls_source"}
    if method == "dann":
        expected |= {"train/alignment", "train/lambda"}
    assert expected <= set(sparse)
    assert [step for step, _ in sparse["train/loss"]] == [2, 5]
    assert sparse == dense  # every tag, step and value TensorBoard receives is the same


def scalars_of_run(make_cfg, run: Path, method: str) -> dict[str, list[tuple[int, float]]]:
    train(make_cfg(*SHORT, f"method={method}", run_dir=run))
    return scalars(run)


def test_progress_bar_advances_every_batch_and_rereads_metrics_on_logged_steps(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    full_updates, positions = [], []
    update = RichProgressBar.on_train_batch_end
    advance = RichProgressBar._update

    def counting_update(self, trainer, pl_module, outputs, batch, batch_idx):
        full_updates.append(batch_idx)
        return update(self, trainer, pl_module, outputs, batch, batch_idx)

    def recording_advance(self, bar_id, current, *args, **kwargs):
        if bar_id is not None and bar_id == self.train_progress_bar_id:
            positions.append(current)
        return advance(self, bar_id, current, *args, **kwargs)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", counting_update)
    monkeypatch.setattr(RichProgressBar, "_update", recording_advance)
    cfg = make_cfg(*SHORT, "method=source_only", run_dir=tmp_path / "run")
    cfg.trainer.enable_progress_bar = True
    assert cfg.callbacks.progress_bar._target_ == "tlframe.engine.callbacks.ProgressBar"
    train(cfg)
    assert full_updates == [2, 5]  # the batches whose train/loss is logged
    assert positions == list(range(1, STEPS + 1))  # the bar itself moves every batch
