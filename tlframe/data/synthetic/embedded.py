"""Helpers shared by the embedded domains: seeded split streams and the build cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tlframe.data.domain import SPLITS, Domain, TensorSplit
from tlframe.data.images import match_channels
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
    """A ``Domain`` from cached uint8 images, normalised to float32 with ``channels``
    channels (None: the images' own; grey is repeated as a view, colour averaged to
    luminance); its classes are the digits unless ``class_names`` are given."""
    channels = channels or int(data["train"]["images"].shape[1])
    splits = {
        split: TensorSplit(
            match_channels((data[split]["images"].float() / 255 - mean) / std, channels),
            data[split]["labels"].long(),
        )
        for split in SPLITS
    }
    return Domain(
        name=name,
        class_names=list(CLASS_NAMES if class_names is None else class_names),
        input_shape=(channels, image_size, image_size),
        **splits,
        info={"cache": str(path)},
    )
