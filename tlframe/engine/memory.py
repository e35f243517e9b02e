"""A stage's peak memory, recorded beside its accuracy so that methods that trade memory
for accuracy (parameter-efficient fine-tuning) can be compared on both."""

from __future__ import annotations

import sys

import torch


def reset_peak_memory() -> None:
    """Start counting a stage's peak GPU memory (CUDA's count, once CUDA is in use)."""
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: torch.device) -> tuple[float | None, str]:
    """The peak in MiB and what it measures: on a GPU, the memory CUDA tensors held since
    ``reset_peak_memory``; elsewhere the process's peak resident set size so far
    (``ru_maxrss``), which cannot be reset: it includes earlier stages, the data and
    Python itself."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    try:
        import resource
    except ImportError:  # Windows
        return None, "unmeasured"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"
