"""Crashes and relaunches lose nothing: resume after SIGKILL, finished jobs are not redone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import QUICK, subprocess_env

from tlframe.methods.base import NonFiniteLossError
from tlframe.stages import build_module, domain_infos, plan_stages
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
