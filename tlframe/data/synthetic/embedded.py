"""Helpers shared by the embedded domains: seeded split streams and the build cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tlframe.data.domain import SPLITS, Domain
from tlframe.data.images import image_domain
from tlframe.io import atomic_save, load_cached

CLASS_NAMES = [str(d) for d in range(10)]


def split_seed(name: str, seed: int, split: str) -> int:
    """A seed for one split's random stream, unrelated to every other (name, seed, split)."""
    digest = hashlib.sha256(f"{name}/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def cache_path(root: str | Path, name: str, version: int, args: dict) -> Path:
    """``root/embedded/{name}-v{version}-{hash}.pt``: one file per set of build arguments."""
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "embedded" / f"{name}-v{version}-{key}.pt"


def load_or_build(path: Path, build: Callable[[], dict]) -> dict:
    """The cached ``{split: {"images", "labels"}}`` at ``path``, built and saved if unusable."""
    data = load_cached(path)
    if not (isinstance(data, dict) and all(split in data for split in SPLITS)):
        data = build()
        atomic_save(data, path)
    return data


def digits_domain(
    name: str,
    data: dict,
    image_size: int,
    mean: float,
    std: float,
    path: Path,
    channels: int | None = None,
    class_names: list[str] | None = None,
) -> Domain:
    """An embedded domain from its cached uint8 images (``image_domain``); its classes are
    the digits unless ``class_names`` are given."""
    arrays = {split: (data[split]["images"], data[split]["labels"]) for split in SPLITS}
    names = CLASS_NAMES if class_names is None else class_names
    return image_domain(
        name, arrays, names, image_size, channels, mean, std, info={"cache": str(path)}
    )
