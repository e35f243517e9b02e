"""The digit benchmarks MNIST, USPS and SVHN through torchvision's own dataset classes.

They are small, so each is read once into uint8 tensors (``ImageSplit``) and converted to
the shape its YAML asks for (``channels`` x ``image_size`` x ``image_size``): with the same
``channels`` and ``image_size`` any two digit domains pair. The defaults, 3 x 32 x 32, are
SVHN's native format, so ``source=svhn target=mnist`` works as it stands (grey digits are
repeated into three channels, a view that costs no memory). Data sets without a validation
split get one carved from their training split with a fixed ``seed``.

Nothing is downloaded unless ``download=true``; missing files stop the run at once with a
message naming them, their folder, and the override that fixes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import MNIST, SVHN, USPS
from torchvision.datasets.utils import check_integrity, extract_archive

from tlframe.data.domain import Domain
from tlframe.data.files import fetch, override, read, relocate_hint, require
from tlframe.data.images import image_domain
from tlframe.data.splits import split_pool
from tlframe.data.synthetic.embedded import CLASS_NAMES
from tlframe.errors import ConfigError, DataError

Arrays = tuple[Tensor, Tensor]  # uint8 images [N, C, H, W], int64 labels [N]

MNIST_FILES = [Path(url).stem for url, _ in MNIST.resources]  # as torchvision unpacks them


def digit_domain(
    name: str,
    train: Arrays,
    test: Arrays,
    image_size: int,
    channels: int,
    mean: float | list[float],
    std: float | list[float],
    val_fraction: float,
    seed: int,
    info: dict,
) -> Domain:
    """A 10-class ``Domain`` from uint8 train/test arrays (``image_domain``, kept as uint8);
    validation is carved from train."""
    parts = split_pool(train[1].numpy(), seed, val=val_fraction)
    arrays = {split: (train[0][idx], train[1][idx]) for split, idx in parts.items()}
    arrays["test"] = test
    return image_domain(
        name, arrays, CLASS_NAMES, image_size, channels, mean, std, info, stored="uint8"
    )


def _download_fixes(role: str | None, holding: str, put: str = "put them there") -> list[str]:
    return [
        f"add {override(role, 'download', 'true')} to download them",
        put,
        relocate_hint(role, holding),
    ]


def _raw_or_gz(folder: Path, name: str) -> bool:
    return (folder / name).is_file() or (folder / f"{name}.gz").is_file()


def load_mnist(root: str | Path, download: bool, fixes: list[str]) -> dict[str, Arrays]:
    """MNIST's train and test arrays from ``root/MNIST/raw``; ``.gz`` files are unpacked."""
    root = Path(root)
    raw = root / "MNIST" / "raw"
    if download:
        fetch("mnist", raw, lambda: MNIST(str(root), train=True, download=True))
    require("mnist", raw, MNIST_FILES, fixes, accept=_raw_or_gz)
    for name in MNIST_FILES:
        if not (raw / name).is_file():
            read("mnist", raw, lambda name=name: extract_archive(str(raw / f"{name}.gz")))
    data = {}
    for split in ("train", "test"):
        dataset = read("mnist", raw, lambda split=split: MNIST(str(root), train=split == "train"))
        data[split] = (dataset.data[:, None].contiguous(), dataset.targets.long())
    return data


def _mnist(root: Path, download: bool, role: str | None) -> dict[str, Arrays]:
    """60,000 train / 10,000 test grey 28x28 handwritten digits."""
    fixes = _download_fixes(role, "MNIST/raw/", "put them (or their .gz) there")
    return load_mnist(root, download, fixes)


def _usps(folder: Path, download: bool, role: str | None) -> dict[str, Arrays]:
    """7,291 train / 2,007 test grey 16x16 zip-code digits, from the LIBSVM files
    ``usps.bz2`` and ``usps.t.bz2``."""
    files = {split: USPS.split_list[split][1] for split in ("train", "test")}
    for split, name in files.items():
        if download and not (folder / name).is_file():
            fetch("usps", folder, lambda t=split == "train": USPS(str(folder), t, download=True))
    require("usps", folder, list(files.values()), _download_fixes(role, "usps.bz2"))
    data = {}
    for split in files:
        dataset = read("usps", folder, lambda t=split == "train": USPS(str(folder), t))
        images = torch.from_numpy(dataset.data)[:, None].contiguous()
        data[split] = (images, torch.as_tensor(dataset.targets, dtype=torch.long))
    return data


def _svhn(folder: Path, download: bool, role: str | None) -> dict[str, Arrays]:
    """73,257 train / 26,032 test colour 32x32 house numbers (``extra`` is not used), from
    ``train_32x32.mat`` and ``test_32x32.mat``, checked against their official md5."""
    files = {split: SVHN.split_list[split][1] for split in ("train", "test")}
    for split in files:
        if download:
            fetch("svhn", folder, lambda split=split: SVHN(str(folder), split, download=True))
    require("svhn", folder, list(files.values()), _download_fixes(role, "train_32x32.mat"))
    data = {}
    for split, name in files.items():
        if not check_integrity(str(folder / name), SVHN.split_list[split][2]):
            raise DataError(
                f"svhn: {folder / name} does not match the official md5 (a partial or modified "
                f"file); delete it and add {override(role, 'download', 'true')}"
            )
        dataset = read("svhn", folder, lambda split=split: SVHN(str(folder), split))
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        data[split] = (images, torch.from_numpy(dataset.labels).long())
    return data


LOADERS = {"mnist": _mnist, "usps": _usps, "svhn": _svhn}


def digits(
    name: str,
    root: str,
    download: bool = False,
    role: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    mean: float | list[float] = 0.5,
    std: float | list[float] = 0.5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Domain:
    """The torchvision digit data set ``name`` (mnist, usps or svhn) read from ``root``."""
    if name not in LOADERS:
        raise ConfigError(f"unknown digit data set {name!r}; expected one of {sorted(LOADERS)}")
    data = LOADERS[name](Path(root), download, role)
    return digit_domain(
        name, data["train"], data["test"], image_size, channels, mean, std, val_fraction,
        seed, {"root": str(root)},
    )  # fmt: skip
