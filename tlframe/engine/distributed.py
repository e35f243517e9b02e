"""Several devices and nodes: Lightning's DDP, started from a Hydra job (``trainer=ddp``).

``trainer=ddp`` selects ``DDPStrategy``: Lightning's ``ddp`` strategy (one process per
device, each running the whole program: it builds its domains, runs every stage, fits and
tests; gradients are averaged across processes after every backward pass). Lightning
starts the extra processes of a node by running the command line again; this subclass
runs *this Hydra job* again instead:

    python -m tlframe.train <the job's own overrides> hydra.run.dir=<the job's output dir>
        hydra.output_subdir=null hydra.job.name=<job name>_rank<N>

Why not Lightning's own Hydra handling (``pytorch_lightning/strategies/launchers/
subprocess_script.py``)? It appends ``hydra.run.dir=<hydra.run.dir>`` to ``sys.argv``. In a
single run that works, but in a sweep (``-m``) ``sys.argv`` still holds ``-m`` and the
comma lists, so every extra process would start the whole sweep again, and
``hydra.run.dir`` is not the job's folder (a multirun job writes to ``hydra.sweep.dir/
<num>``). The job's overrides (``hydra.overrides.task``) and its output dir
(``hydra.runtime.output_dir``) name exactly one job, for any launcher.

Why not ``ddp_spawn``? Its workers run only ``fit`` or ``test`` and hand back weights and
logged metrics: what a module or callback computes during testing (per-class accuracy, the
feature-space picture, clusters) would stay in the worker; every fit and test of every
stage would start the workers again and pickle the module and the in-memory domains to
them; and on a cluster the scheduler, not Python, starts one process per device.

On SLURM (``hydra/launcher=submitit_slurm`` with ``tasks_per_node`` = devices per node) the
scheduler starts every process and Lightning's SLURM environment gives them their ranks;
no process is started here.

A sweep's jobs may run one after another in one process (Hydra's basic launcher, joblib's
reused workers): ``job_processes`` waits for the job's extra processes at its end (stops
them if it failed), closes the process group and restores the environment, so the next job
starts its own.

Only global rank 0 writes files (metrics.json, caches, pictures); Lightning's checkpoint
and TensorBoard writers are rank-0 only themselves.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning_fabric.strategies.launchers.subprocess_script import (
    _basic_subprocess_cmd,
    _ChildProcessObserver,
)
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.strategies import DDPStrategy as LightningDDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)

# Every process evaluates the whole val/test splits with the same weights (the data module
# does not shard evaluation), so epoch-level values logged without sync_dist are already
# equal on all processes; Lightning's advice to sync them is moot here.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")

# What the launcher sets in os.environ; restored when a job ends.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_THREADS_ENV = "OMP_NUM_THREADS"
# Hydra overrides that place or launch the job: the extra processes get their own.
_LAUNCH_OVERRIDES = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.job.name",
    "hydra.job.num",
    "hydra.job.id",
    "hydra.output_subdir",
)
WAIT_FOR_PROCESSES_S = 120.0  # after the job, before the extra processes are stopped


def is_rank_zero() -> bool:
    """True in the process that writes files: global rank 0, or a run without DDP."""
    return getattr(rank_zero_only, "rank", 0) == 0


def child_command(rank: int) -> tuple[list[str], str | None]:
    """Command line and working folder of process ``rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # not started by tlframe-train: Lightning's plain way
        return list(_basic_subprocess_cmd()), None
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "tlframe.train"]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":  # --config-dir
            command.append(f"--config-dir={source.path}")
    if hydra_cfg.job.config_name:
        command.append(f"--config-name={hydra_cfg.job.config_name}")
    command += [str(o) for o in hydra_cfg.overrides.task]
    command += [
        str(o) for o in hydra_cfg.overrides.hydra if _override_key(str(o)) not in _LAUNCH_OVERRIDES
    ]
    command += [
        f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}",
        "hydra.output_subdir=null",  # rank 0 wrote .hydra/; the others leave it alone
        f"hydra.job.name={hydra_cfg.job.name}_rank{rank}",  # its own log file in the run dir
    ]
    return command, hydra_cfg.runtime.cwd


def _override_key(override: str) -> str:
    """The config path an override sets, as far as ``_LAUNCH_OVERRIDES`` needs: hydra.run.dir
    gives hydra.run, hydra/launcher=joblib gives hydra/launcher."""
    key = override.lstrip("~+").split("=", 1)[0]
    parts = key.split(".")
    for length in range(len(parts), 0, -1):
        if ".".join(parts[:length]) in _LAUNCH_OVERRIDES:
            return ".".join(parts[:length])
    return key


def _quoted(value: str) -> str:
    """A Hydra override value that keeps spaces, commas and quotes of a path."""
    return "'" + value.replace("'", "\\'") + "'"  # other backslashes are kept as they are


class _Observer(_ChildProcessObserver):
    """Lightning's watcher (a failed extra process ends the job) that can be stopped."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stopped = False

    def _run(self) -> bool:
        return True if self.stopped else super()._run()


@dataclass
class _Launch:
    """What one launch started and changed, for ``finish_processes``."""

    environment: dict[str, str | None]
    threads: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    observer: _Observer | None = None


_LAUNCHES: list[_Launch] = []


class _JobLauncher(_SubprocessScriptLauncher):
    """``_SubprocessScriptLauncher`` whose processes re-run the Hydra job (``child_command``)."""

    def launch(self, function: Callable, *args: Any, trainer=None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        if not self.cluster_environment.creates_processes_externally:
            launch = _Launch(
                {name: os.environ.get(name) for name in (*_LAUNCH_ENV, _THREADS_ENV)},
                torch.get_num_threads(),
            )
            _LAUNCHES.append(launch)
            self.procs = launch.processes  # filled as they start: stopped even after an error
            self._call_children_scripts()
            launch.observer = _Observer(main_pid=os.getpid(), child_processes=self.procs)
            launch.observer.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            if os.environ.get("PL_GLOBAL_SEED") is None:
                child_env.pop("PL_GLOBAL_SEED", None)
            command, cwd = child_command(env.node_rank() * self.num_processes + local_rank)
            log.debug("starting DDP process %d: %s", local_rank, command)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))


class DDPStrategy(LightningDDPStrategy):
    """Lightning's ``ddp`` (processes started from a script, ``start_method="popen"``) whose
    extra processes re-run the current Hydra job; see the module docstring."""

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        if self._start_method == "popen":
            self._launcher = _JobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )
        else:
            super()._configure_launcher()


@contextmanager
def job_processes() -> Iterator[None]:
    """Around a job's stages: afterwards, end the DDP processes it started and reset."""
    failed = True
    try:
        yield
        failed = False
    finally:
        finish_processes(failed)


def finish_processes(failed: bool, timeout: float = WAIT_FOR_PROCESSES_S) -> None:
    """Wait for (or, after a failure, stop) the processes this one started, close the
    process group and restore the environment the launcher changed."""
    while _LAUNCHES:
        launch = _LAUNCHES.pop()
        if not failed:
            for process in launch.processes:
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("DDP process %d did not finish; stopping it", process.pid)
                    failed = True
        running = [p for p in launch.processes if p.poll() is None]
        if launch.observer is not None:
            launch.observer.stopped = True
            if running:  # let it finish its check first, or it would end this process too
                launch.observer.join(timeout=launch.observer._sleep_period + 1)
        for process in running:
            process.kill()
            process.wait()
        for name, value in launch.environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.set_num_threads(launch.threads)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
