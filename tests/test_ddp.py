"""trainer=ddp: per-process training batches, one writer, several processes learn like one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import subprocess_env
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.data import _set_sampler_epoch
from omegaconf import open_dict
from test_datamodule import toy_domain

from tlframe.config import config_dir
from tlframe.data.datamodule import TransferDataModule
from tlframe.data.loaders import EpochSampler
from tlframe.engine.callbacks.freeze_blocks import FreezeBlocks
from tlframe.engine.distributed import (
    _LAUNCHES,
    _Launch,
    _Observer,
    child_command,
    finish_processes,
)
from tlframe.errors import ConfigError


def test_each_process_draws_its_own_slice_of_one_shared_shuffle():
    one = list(EpochSampler(100, 40, seed=3))
    ranks = [list(EpochSampler(100, 20, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [20, 20]  # same number of steps on every process
    assert not set(ranks[0]) & set(ranks[1])  # different examples
    shared = EpochSampler(100, 20, seed=3, world_size=2).epoch_order(0)
    assert torch.equal(shared, torch.tensor(one)[0::2])  # slices of the same shuffle
    assert list(EpochSampler(100, 20, seed=3, rank=1, world_size=2)) == ranks[1]  # seeded
    assert list(EpochSampler(100, 20, seed=4, rank=1, world_size=2)) != ranks[1]
    assert list(EpochSampler(100, 20, seed=3, stream=1, rank=1, world_size=2)) != ranks[1]


def test_epochs_reshuffle_and_small_sets_are_cycled_evenly():
    sampler = EpochSampler(10, 20, seed=0, rank=1, world_size=4)
    first, second = list(sampler), list(sampler)  # advances by itself without set_epoch
    assert first != second
    sampler.set_epoch(0)  # what Lightning calls before each epoch (and after a resume)
    assert list(sampler) == first
    every = [i for r in range(4) for i in EpochSampler(10, 20, seed=0, rank=r, world_size=4)]
    assert torch.bincount(torch.tensor(every)).tolist() == [8] * 10  # 8 whole permutations


@pytest.mark.parametrize("world_size", [1, 2])
def test_datamodule_gives_every_process_different_batches_of_both_domains(world_size: int):
    domains = {"source": toy_domain("a", n=200), "target": toy_domain("b", n=200, offset=5.0)}
    seen = []
    for rank in range(world_size):
        dm = TransferDataModule(
            domains, {"source": "all", "target": "none"}, batch_size=8, steps_per_epoch=5
        )
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        loader = dm.train_dataloader()
        iter(loader)
        for dl in loader.flattened:  # Lightning's call at the start of every epoch
            _set_sampler_epoch(dl, 1)
        items = [batch for batch, *_ in loader]
        assert len(items) == 5  # steps_per_epoch on every process
        assert all(b["target"][1] is None and len(b["source"][0]) == 8 for b in items)
        seen.append({role: torch.cat([b[role][0] for b in items]) for role in domains})
    for role in domains:
        rows = torch.cat([s[role] for s in seen])
        assert len(rows.unique(dim=0)) == len(rows) == 40 * world_size  # no example twice


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
def test_extra_processes_rerun_exactly_this_hydra_job(tmp_path: Path, mode: str):
    out = tmp_path / "sweep dir" / "3"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", ["trainer=ddp", "seed=1"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.name = "train"
        cfg.hydra.overrides.hydra = [
            f"hydra.mode={mode}",
            f"hydra.sweep.dir={tmp_path}",
            "hydra/launcher=joblib",
            "hydra.verbose=true",
        ]
    HydraConfig.instance().set_config(cfg)
    try:
        command, cwd = child_command(1)
    finally:
        HydraConfig.instance().cfg = None
    assert command[:3] == [sys.executable, "-m", "tlframe.train"] and cwd == str(tmp_path)
    assert not {"-m", "--multirun"} & set(command[3:])  # never the whole sweep again
    assert {"trainer=ddp", "seed=1", "hydra.verbose=true"} <= set(command)
    assert not [c for c in command if c.startswith(("hydra.mode", "hydra.sweep", "hydra/"))]
    assert f"hydra.run.dir='{out}'" in command  # the job's own folder, spaces kept
    assert {"hydra.output_subdir=null", "hydra.job.name=train_rank1"} <= set(command)


@pytest.mark.parametrize("failed", [False, True])
def test_a_job_ends_its_processes_and_leaves_a_clean_environment(monkeypatch, failed: bool):
    """What lets the next job of a sweep (same process) start its own DDP processes."""
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    launch = _Launch({"MASTER_PORT": "1234", "LOCAL_RANK": None}, torch.get_num_threads())
    _LAUNCHES.append(launch)
    os.environ.update(MASTER_PORT="5678", LOCAL_RANK="0")  # as the launcher leaves them
    seconds = "0" if not failed else "60"  # after a failure the others would wait forever
    launch.processes.append(
        subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    )
    launch.observer = _Observer(os.getpid(), launch.processes, sleep_period=0.2)
    launch.observer.start()  # kills this process if it sees a stopped child: must be stopped first
    start = time.perf_counter()
    finish_processes(failed=failed)
    assert time.perf_counter() - start < 10
    assert launch.processes[0].poll() is not None and not _LAUNCHES
    assert os.environ["MASTER_PORT"] == "1234" and "LOCAL_RANK" not in os.environ
    assert launch.observer.stopped
    if failed:
        assert not launch.observer.is_alive()


def test_layer_transfer_refuses_blocks_that_ddp_would_not_synchronise():
    """DDP syncs the parameters trainable when it wraps the model: copies unfrozen later
    would train apart on every process; copies trained throughout are never frozen."""
    trainer = SimpleNamespace(world_size=2, strategy=None)
    block = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="unfreeze_at_epoch=1 cannot run on 2 processes"):
        FreezeBlocks([block], 1).setup(trainer, None, "fit")
    FreezeBlocks([block], 0).setup(trainer, None, "fit")
    assert all(p.requires_grad for p in block.parameters())
    FreezeBlocks([block], None).setup(trainer, None, "fit")
    assert not any(p.requires_grad for p in block.parameters())


# A budget at which DANN learns the source well above chance (seen: 0.68-0.76 for 10 classes)
# and one and two processes agree within ~2 points (seeds 0-2), in ~15 s + ~35 s on 2 cores.
DDP_RUN = [
    "method=dann",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "source.num_train=500",
    "data.steps_per_epoch=20",
    "trainer.max_epochs=2",
    "seed=0",
    "cache_stages=false",
    "callbacks.progress_bar=null",
    "callbacks.feature_space.tsne=false",
    "trainer.enable_progress_bar=false",
]
ACCURACIES = ("test/source/acc", "test/target/acc", "val/source/acc", "val/target/oracle_acc")


def test_two_processes_learn_like_one_and_write_once(tmp_path: Path):
    """One sweep, two jobs in one process: trainer.devices=1, then 2 (gloo on CPU).

    Catches: a crash or hang across processes; extra processes that start the sweep again
    or write elsewhere (only the jobs' own metrics.json may exist, the summary is printed
    once per job); a job that leaves the process group or launcher environment behind for
    the next one; a run that does not learn (source accuracy must be well above the 0.10 of
    chance); and both processes training on the same batches: DDP then averages two equal
    gradients, which reproduces the one-process run bit for bit, so the metrics must differ.
    The effective batch doubles with two processes, so accuracies may differ by noise
    (seen: at most 2 points); more than 10 points means the processes do not train together.
    """
    sweep = tmp_path / "sweep"
    env = subprocess_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlframe.train",
            "-m",
            *DDP_RUN,
            "trainer.devices=1,2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert sorted(tmp_path.rglob("metrics.json")) == [
        sweep / "0/metrics.json",
        sweep / "1/metrics.json",
    ]
    assert proc.stdout.count("run dir:") == 2
    assert "MEMBER: 2/2" in output and (sweep / "1" / "train_rank1.log").is_file()
    one, two = (json.loads((sweep / j / "metrics.json").read_text())["metrics"] for j in "01")
    for metrics in (one, two):
        assert metrics["test/source/acc"] > 0.5
    for key in ("test/source/acc", "test/target/acc"):
        assert abs(one[key] - two[key]) <= 0.10, (key, one[key], two[key])
    assert [one[k] for k in ACCURACIES] != [two[k] for k in ACCURACIES]
