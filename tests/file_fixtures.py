"""Tiny files in the real formats of the benchmark data sets, written by the tests.

Each digit image encodes its label (the top rows hold ``LEVEL * (label + 1)``, the rest is
black), so a test can check that images and labels stay paired and upright after loading.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import struct
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image

LEVEL = 20  # grey level step between classes in the label-coded digit images
TOP = 0.25  # fraction of rows, from the top, that carry the label code


def coded_digits(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[n, size, size]`` images whose top rows encode ``labels = arange(n) % 10``."""
    labels = np.arange(n) % 10
    images = np.zeros((n, size, size), np.uint8)
    images[:, : int(size * TOP)] = (LEVEL * (labels + 1))[:, None, None]
    return images, labels


def decode_label(image: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> int:
    """The label a normalised ``[C, H, W]`` coded image carries (read off its top-left)."""
    value = (float(image[0, 0, 0]) * std + mean) * 255
    return round(value / LEVEL) - 1


def _idx(array: np.ndarray) -> bytes:
    """The IDX format of MNIST's files: magic (uint8 type 0x08, ndim), big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> Path:
    """``root/MNIST/raw`` with the four idx files (gzip'd when ``gz``) as torchvision keeps."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = coded_digits(n, 28)
        for name, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx(array)
            path = raw / f"{prefix}-{name}-ubyte"
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
            else:
                path.write_bytes(data)
    return raw


def write_usps(folder: Path, n_train: int = 40, n_test: int = 20) -> None:
    """``usps.bz2`` / ``usps.t.bz2``: LIBSVM lines ``label 1:v ... 256:v``, labels 1..10 and
    pixel values in [-1, 1], bz2-compressed, as the LIBSVM site serves them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        images, labels = coded_digits(n, 16)
        lines = []
        for image, label in zip(images, labels, strict=True):
            values = image.reshape(-1).astype(np.float64) / 255 * 2 - 1
            pairs = " ".join(f"{j}:{v:.6f}" for j, v in enumerate(values, start=1))
            lines.append(f"{label + 1} {pairs}\n")
        (folder / name).write_bytes(bz2.compress("".join(lines).encode()))


def write_svhn(folder: Path, n_train: int = 40, n_test: int = 20) -> dict[str, str]:
    """``train_32x32.mat`` / ``test_32x32.mat``: X ``[32, 32, 3, N]`` uint8, y ``[N, 1]`` with
    10 for the digit 0. The label code is in the red channel (green 0, blue 255). Returns the
    files' md5 sums (torchvision checks them against the official ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        grey, labels = coded_digits(n, 32)
        rgb = np.stack([grey, np.zeros_like(grey), np.full_like(grey, 255)], axis=-1)
        y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)
        path = folder / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": rgb.transpose(1, 2, 3, 0), "y": y})
        sums[split] = hashlib.md5(path.read_bytes()).hexdigest()
    return sums


def write_mnistm_release(folder: Path, n_train: int = 40, n_test: int = 20) -> None:
    """``mnist_m_{train,test}.pt``: torch-saved ``(uint8 [N, 28, 28, 3], int64 [N])``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        grey, labels = coded_digits(n, 28)
        rgb = torch.from_numpy(np.repeat(grey[..., None], 3, axis=-1))
        torch.save((rgb, torch.from_numpy(labels)), folder / f"mnist_m_{split}.pt")


def write_image_tree(
    root: Path, classes: dict[str, int], size: int = 12, grey: bool = False
) -> list[Path]:
    """``root/<class>/<i>.png``: ``classes[name]`` small RGB images per class, each class a
    different colour (so a model can learn them), or grey ones, each class its own pattern.
    Returns the image paths."""
    paths = []
    for index, (name, count) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = np.zeros((size, size, 3), np.uint8)
        colour[..., index % 3] = 200
        colour[: size // 2, :, (index + 1) % 3] = 60 * (index // 3)
        for i in range(count):
            path = root / name / f"{i:03d}.png"
            noisy = np.clip(
                colour.astype(int) + np.random.default_rng(i).integers(0, 30, colour.shape), 0, 255
            )
            image = Image.fromarray(noisy.astype(np.uint8))
            (image.convert("L") if grey else image).save(path)
            paths.append(path)
    return paths


def blobs(n: int, classes: int, dims: int, seed: int, shift: float = 0.0):
    """Separable Gaussian clusters: float64 ``[n, dims]`` features and int labels."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(0, 4, (classes, dims))
    labels = np.arange(n) % classes
    return centres[labels] + rng.normal(0, 1, (n, dims)) + shift, labels


def write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 behind a 512-byte header, each variable
    stored column-major (axes reversed), 1-D vectors as MATLAB's N x 1 columns."""
    with h5py.File(path, "w", userblock_size=512) as file:
        for key, value in arrays.items():
            value = value.reshape(-1, 1) if value.ndim == 1 else value
            dataset = file.create_dataset(key, data=value.T)
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    with path.open("r+b") as handle:
        handle.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: tlframe tests".ljust(128)
        )
