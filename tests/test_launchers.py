"""Sweeps through Hydra's launcher plugins (conf/hydra/launcher/): a 2-job sweep with
``hydra/launcher=joblib`` (parallel worker processes) and with ``hydra/launcher=submitit_local``
(submitit's job processes, the SLURM launcher's code path without a cluster), each job with a
tiny budget, as a user runs them from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

TINY_SWEEP = [
    "method=source_only",
    "seed=0,1",
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
    "source.num_train=200",
    "source.num_val=100",
    "source.num_test=100",
    "callbacks.progress_bar=null",
    "callbacks.feature_space.tsne=false",
    "trainer.enable_progress_bar=false",
]


def sweep(launcher: str, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    sweep_dir = tmp_path / "sweep"
    env = subprocess_env(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlframe.train",
            "-m",
            f"hydra/launcher={launcher}",
            *TINY_SWEEP,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc


def completed_seeds(sweep_dir: Path) -> list[int]:
    records = [json.loads((sweep_dir / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert all(r["status"] == "completed" for r in records)
    assert all("test/target/acc" in r["metrics"] for r in records)
    return [r["seed"] for r in records]


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_two_job_sweep_completes_through_the_launcher(launcher, tmp_path):
    sweep_dir, proc = sweep(launcher, tmp_path)
    assert completed_seeds(sweep_dir) == [0, 1]
    log = proc.stdout + proc.stderr
    if launcher == "joblib":
        assert "Joblib.Parallel(n_jobs=2" in log  # both jobs handed to the worker pool
        share = max(1, (os.cpu_count() or 1) // 2)  # two jobs at once share the cores
        for n in (0, 1):
            job_log = (sweep_dir / str(n) / "train.log").read_text()
            assert f"torch threads per job: {share} (2 jobs at once on" in job_log
    else:
        assert "Submitit 'local' sweep output dir" in log
        # submitit ran each job as its own process and kept its logs (submitit_folder)
        outputs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
        assert len(outputs) == 2, sorted((sweep_dir / ".submitit").rglob("*"))


def test_a_lone_run_keeps_torchs_threads_and_an_explicit_count_wins(monkeypatch):
    import torch

    from tlframe.engine.threads import share_cores

    before = torch.get_num_threads()
    share_cores(None)  # not in a parallel sweep: nothing to share
    assert torch.get_num_threads() == before
    try:
        share_cores(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
