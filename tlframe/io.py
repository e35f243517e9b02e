"""Crash-safe file writing and safe tensor loading.

Everything tlframe caches (built data sets, finished stages) or reports (metrics.json) is
written to a temporary file in the same folder and renamed into place, so a killed run
never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tlframe.errors import ConfigError


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that either writes the whole file or nothing."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str).encode()
    _atomic_write(Path(path), lambda handle: handle.write(text))


def safe_load(path: str | Path) -> Any:
    """Load tensors without executing pickled code (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_cached(path: str | Path) -> Any | None:
    """A cached object, or ``None`` when it is missing or unreadable (then it is rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return safe_load(path)
    except Exception:  # a truncated or foreign file is not trusted: rebuild it
        return None


def state_dict_of(checkpoint: object, what: str) -> dict:
    """The weights in a loaded file: a Lightning checkpoint's state dict, or a bare one."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{what} holds no state dict")
    return state
