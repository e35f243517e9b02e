"""Crashes and relaunches lose nothing: resume after SIGKILL, finished jobs are not redone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUICK, subprocess_env

from tlframe.engine import stages
from tlframe.engine.module import NonFiniteLossError
from tlframe.engine.stages import build_module, domain_infos, plan_stages
from tlframe.train import build_domains, train

# Three epochs of 12 steps on a small source; deterministic kernels; no stage cache, so
# every run really trains.
RUN = [
    "method=source_only",
    "source.num_train=600",
    "data.steps_per_epoch=12",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "cache_stages=false",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "callbacks.feature_space=null",
]


def launch(run_dir: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tlframe.train", f"hydra.run.dir={run_dir}", *RUN, *extra],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_killed_mid_training_resumes_to_the_same_result(tmp_path: Path):
    reference = launch(tmp_path / "reference", tmp_path)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())["metrics"]

    killed_dir = tmp_path / "killed"
    killed = launch(killed_dir, tmp_path)
    last = killed_dir / "checkpoints" / "source" / "last.ckpt"
    deadline = time.time() + 600
    while not last.is_file() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # during the second epoch
    killed.wait(timeout=60)
    assert last.is_file() and not (killed_dir / "metrics.json").exists()

    resumed = launch(killed_dir, tmp_path, "resume=true")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    got = json.loads((killed_dir / "metrics.json").read_text())["metrics"]
    assert got == expected


def test_a_relaunched_job_that_finished_is_not_trained_again(make_cfg, tmp_path: Path):

    cfg = make_cfg(*QUICK, "source.num_train=300", "cache_stages=false")
    first = train(cfg)
    again = train(cfg)
    assert again["timings"] == first["timings"]  # the stored record, not a new run


def test_a_nan_loss_stops_training_naming_the_term_and_step(make_cfg):
    cfg = make_cfg("method=source_only", "source.num_train=200")
    domains = build_domains(cfg)
    module = build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None)
    x, y = domains["source"].train[list(range(8))]
    with pytest.raises(NonFiniteLossError, match=r"'cls_source' became nan at step 0"):
        module.training_step({"source": (torch.full_like(x, float("nan")), y)}, 0)


def test_finite_loss_terms_whose_sum_overflows_stop_training(make_cfg, monkeypatch):
    cfg = make_cfg("method=source_only", "source.num_train=200")
    domains = build_domains(cfg)
    module = build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None)
    huge = {"a": torch.tensor(3e38), "b": torch.tensor(3e38)}  # each finite in float32
    monkeypatch.setattr(module, "losses", lambda batch: huge)
    with pytest.raises(NonFiniteLossError, match=r"the total loss became inf at step 0"):
        module.training_step({}, 0)


class Crash(RuntimeError):
    """Stands in for a kill: the process stops mid-epoch, leaving what is on disk."""


class CrashInTargetStage(pl.Callback):
    """Records the (stage, epoch) of every training batch; crashes once in the target stage."""

    def __init__(self, batches: list, crash: bool):
        self.batches, self.crash = batches, crash

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches.append((pl_module.context.name, trainer.current_epoch))
        if self.crash and pl_module.context.name == "target" and trainer.current_epoch == 2:
            raise Crash  # mid-epoch: last.ckpt holds the end of epoch 1


@pytest.mark.parametrize("cache_stages", [True, False])
def test_a_two_stage_run_killed_in_its_second_stage_resumes_there(
    make_cfg, tmp_path: Path, monkeypatch, cache_stages: bool
):
    """The finished first stage is reused (from the stage cache, or else from its own
    last.ckpt, which is past its last epoch); the second continues where it stopped."""
    build = stages.build_callbacks
    batches: list = []
    crash = {"on": False}
    monkeypatch.setattr(
        stages,
        "build_callbacks",
        lambda *a: [*build(*a), CrashInTargetStage(batches, crash["on"])],
    )
    run = [
        *QUICK,
        "method=finetune",
        "method.tuning.epochs=3",
        "source.num_train=300",
        "source.num_val=200",
        "source.num_test=200",
        "data.target_labels=5",
        "trainer.deterministic=true",
        "callbacks.feature_space=null",
        f"cache_stages={str(cache_stages).lower()}",
    ]
    reference = make_cfg(*run, "cache_stages=false", run_dir=tmp_path / "ref")
    expected = train(reference)["metrics"]

    crash["on"] = True
    with pytest.raises(Crash):
        train(make_cfg(*run, run_dir=tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "target" / "last.ckpt").is_file()

    crash["on"] = False
    batches.clear()
    record = train(make_cfg(*run, "resume=true", run_dir=tmp_path / "run"))
    assert record["stages"]["source"]["cached"] == cache_stages
    assert not record["stages"]["target"]["cached"]
    assert batches == [("target", 2)] * 4  # only the unfinished epoch of the target stage
    assert record["metrics"] == expected
