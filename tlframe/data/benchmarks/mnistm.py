"""MNIST-M: MNIST digits blended onto colour patches of natural photos (Ganin & Lempitsky).

Two ways to get it:

- ``download=true`` fetches the widely used release (github.com/liyxi/mnist-m: 59,001
  train / 9,001 test images, torch-saved ``(uint8 [N, 28, 28, 3], labels)``), each archive
  checked against its md5, into ``root``;
- ``build=true`` makes it here from MNIST (in ``mnist_root``; with ``download=true`` MNIST
  is fetched first) and patches of the photos in ``photos`` (a folder, e.g. BSDS500's
  images/train as in the paper; null = the two photos scikit-learn ships), cached in
  ``root/embedded``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.utils import download_and_extract_archive

from tlframe.data.benchmarks.torchvision_digits import Arrays, digit_domain, load_mnist
from tlframe.data.domain import Domain
from tlframe.data.files import fetch, override, read, relocate_hint, require
from tlframe.data.synthetic.color_blend import blend, folder_photos, sample_photos
from tlframe.data.synthetic.embedded import cache_path, split_seed
from tlframe.io import atomic_save, load_cached, safe_load

VERSION = 1  # of the build procedure: bump when it changes, so old builds are not reused
RELEASE = "https://github.com/liyxi/mnist-m/releases/download/data"
RESOURCES = {  # split: (file in root, archive url, archive md5)
    "train": (
        "mnist_m_train.pt",
        f"{RELEASE}/mnist_m_train.pt.tar.gz",
        "191ed53db9933bd85cc9700558847391",
    ),
    "test": (
        "mnist_m_test.pt",
        f"{RELEASE}/mnist_m_test.pt.tar.gz",
        "e11cb4d7fff76d7ec588b1134907db59",
    ),
}


def mnistm(
    root: str,
    mnist_root: str,
    download: bool = False,
    build: bool = False,
    photos: str | None = None,
    role: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    mean: float | list[float] = 0.5,
    std: float | list[float] = 0.5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Domain:
    """MNIST-M from the release files in ``root``, or built from MNIST when ``build``."""
    folder = Path(root)
    if build:
        data = _built(folder, Path(mnist_root), download, photos, seed, role)
    else:
        data = _released(folder, download, role)
    return digit_domain(
        "mnistm", data["train"], data["test"], image_size, channels, mean, std, val_fraction,
        seed, {"root": str(root), "built": build},
    )  # fmt: skip


def _released(folder: Path, download: bool, role: str | None) -> dict[str, Arrays]:
    for name, url, md5 in RESOURCES.values():
        if download and not (folder / name).is_file():
            fetch(
                "mnistm",
                folder,
                lambda url=url, md5=md5: download_and_extract_archive(url, str(folder), md5=md5),
            )
    fixes = [
        f"add {override(role, 'download', 'true')} to download them (md5-checked)",
        f"or {override(role, 'build', 'true')} to build MNIST-M from MNIST",
        relocate_hint(role),
    ]
    require("mnistm", folder, [name for name, _, _ in RESOURCES.values()], fixes)
    return {
        split: read("mnistm", folder, lambda name=name: _load_release(folder / name))
        for split, (name, _, _) in RESOURCES.items()
    }


def _load_release(path: Path) -> Arrays:
    """The release's ``(uint8 [N, 28, 28, 3], labels)`` as ``[N, 3, 28, 28]`` images."""
    images, labels = safe_load(path)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    return images.permute(0, 3, 1, 2).contiguous(), labels.long()


def _built(
    folder: Path, mnist_root: Path, download: bool, photos: str | None, seed: int, role: str | None
) -> dict[str, Arrays]:
    fixes = [
        f"add {override(role, 'download', 'true')} to download MNIST",
        f"or point {override(role, 'mnist_root', 'DIR')} at a folder holding MNIST/raw/",
    ]
    args = {"seed": seed, "photos": photos}
    path = cache_path(folder, "mnistm_built", VERSION, args)

    data = load_cached(path)
    if not (isinstance(data, dict) and {"train", "test"} <= set(data)):
        mnist = load_mnist(mnist_root, download, fixes)
        patches = sample_photos() if photos is None else folder_photos(photos)
        data = {}
        for split, (digits, labels) in mnist.items():
            generator = torch.Generator().manual_seed(split_seed("mnistm", seed, split))
            data[split] = (blend(digits, patches, generator), labels)
        atomic_save(data, path)
    return data
