"""Stages that start from a saved checkpoint instead of being trained (``init_from``).

A stage config may name a ``.ckpt`` file or an earlier run dir (whose
``checkpoints/<stage>/best.ckpt`` is used). The stage is then loaded, not trained; its
content key covers the file's bytes, so later stages built on it are cached correctly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from tlframe.errors import ConfigError
from tlframe.io import safe_load, state_dict_of


def resolve_checkpoint(location: str | Path, stage: str) -> Path:
    """The checkpoint file meant by ``location``: a file, or a run dir's selected one."""
    path = Path(location).expanduser()
    if path.is_dir():
        best = path / "checkpoints" / stage / "best.ckpt"
        if not best.is_file():
            raise ConfigError(
                f"init_from={location}: no checkpoints/{stage}/best.ckpt in that run dir (a "
                "stage reused from the cache writes none); point it at the run that trained "
                "the stage or at a .ckpt file"
            )
        return best.resolve()
    if not path.is_file():
        raise ConfigError(f"init_from={location}: no such file or run dir")
    return path.resolve()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: what a stage loaded from it depends on."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a Lightning checkpoint (or a bare state dict) into ``module``, safely.

    Extra entries (parts of another method, e.g. a domain classifier) are ignored; every
    weight of ``module`` must be present with its shape.
    """
    try:
        checkpoint = safe_load(path)
    except Exception as err:  # not a torch file, or one that needs pickled code
        raise ConfigError(
            f"init_from={path}: not a loadable weights-only checkpoint ({err})"
        ) from err
    state = state_dict_of(checkpoint, f"init_from={path}:")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ: another backbone, head or class count
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"init_from={path} does not fit this model: {first}") from err
    if result.missing_keys:
        raise ConfigError(
            f"init_from={path} lacks {len(result.missing_keys)} of this model's weights "
            f"(e.g. {result.missing_keys[0]}); was it trained with the same backbone and head?"
        )
