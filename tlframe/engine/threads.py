"""Each job of a parallel local sweep gets its share of the cores.

Hydra's joblib launcher runs ``n_jobs`` jobs at once in worker processes on one machine.
If each job's torch used every core, two jobs on two cores would slow each other
several-fold; so a job in such a sweep runs ``cores // jobs`` threads unless
``performance.threads_per_job`` says otherwise, and its log says which.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def jobs_at_once() -> int:
    """How many jobs of this sweep run side by side: joblib's ``n_jobs`` (negative counts
    back from the cores, as joblib does), else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return max(1, n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs)


def share_cores(threads_per_job: int | None) -> None:
    """Set torch's intra-op threads for this job: ``threads_per_job``, or the job's share of
    the cores when several jobs run at once; a lone run keeps torch's own choice."""
    import torch

    jobs = jobs_at_once()
    if threads_per_job is None and jobs == 1:
        return
    cores = os.cpu_count() or 1
    threads = threads_per_job or max(1, cores // jobs)
    torch.set_num_threads(threads)
    why = f"{jobs} jobs at once on {cores} cores"
    if threads_per_job:
        why = "performance.threads_per_job"
    log.info("torch threads per job: %d (%s)", threads, why)
