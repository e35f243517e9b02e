"""COIL-20 split into two pose domains (Long et al., ICCV 2013, the JDA protocol).

One MATLAB v7.3 file holds both halves: ``Xs``/``Ys`` (COIL1: the objects at 0-85 and
180-265 degrees) and ``Xt``/``Yt`` (COIL2: 90-175 and 270-355 degrees), 720 grey 32x32
images each, one per row (column-major: ``row.reshape(32, 32).T`` is upright), 20 classes
labeled 1..20. ``half`` chooses the domain; ``as_images`` gives 1x32x32 images for an
image backbone instead of 1,024-long feature vectors for ``backbone=mlp``.

The split is the published reference's: numpy ``default_rng(seed)``, COIL1 first, then
COIL2, for each class a permutation whose first 30% are the test examples. The validation
examples (``val_fraction`` of each class) come from the rest, so selection never sees a
test image. Nothing is downloaded: the file is the user's (``path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlframe.data.domain import Domain, TensorSplit
from tlframe.data.files import override, read
from tlframe.data.formats.array_readers import READERS
from tlframe.data.splits import split_pool
from tlframe.errors import ConfigError, DataError

HALVES = {1: ("Xs", "Ys"), 2: ("Xt", "Yt")}
TEST_FRACTION = 0.3


def reference_test_rows(labels: dict[int, np.ndarray], seed: int) -> dict[int, np.ndarray]:
    """Per half, the indices of its test examples as the reference drew them."""
    rng = np.random.default_rng(seed)
    tests = {}
    for half in sorted(labels):
        rows = []
        for cls in np.unique(labels[half]):
            members = np.flatnonzero(labels[half] == cls)
            order = members[rng.permutation(len(members))]
            rows.append(order[: int(round(TEST_FRACTION * len(members)))])
        tests[half] = np.sort(np.concatenate(rows))
    return tests


def coil20(
    path: str,
    half: int = 1,
    as_images: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    role: str | None = None,
) -> Domain:
    """The COIL``half`` domain of the file at ``path``."""
    if half not in HALVES:
        raise ConfigError(
            f"coil20 half must be 1 or 2, got {half!r}; set {override(role, 'half', '1')}"
        )
    file = Path(path)
    name = f"COIL{half}"
    if not file.is_file():
        raise DataError(
            f"{name}: no file at {file}; set {override(role, 'path', 'FILE')} to "
            "COIL1_vs_COIL2.mat (COIL-20 split by pose, as in JDA)"
        )
    arrays = read(name, file, lambda: READERS[".mat"](file), "is it the COIL1_vs_COIL2.mat file?")
    labels = {
        h: np.asarray(arrays[y]).reshape(-1).astype(np.int64) - 1 for h, (_, y) in HALVES.items()
    }
    features = np.asarray(arrays[HALVES[half][0]], dtype=np.float32)
    if features.shape[0] != len(labels[half]):  # stored one column per image
        features = np.ascontiguousarray(features.T)
    test = reference_test_rows(labels, seed)[half]
    rest = np.setdiff1d(np.arange(len(features)), test)
    parts = split_pool(labels[half][rest], seed, val=val_fraction / (1 - TEST_FRACTION))
    index = {"train": rest[parts["train"]], "val": rest[parts["val"]], "test": test}
    if as_images:  # rows are column-major 32x32 images: transpose to upright
        inputs = torch.from_numpy(features.reshape(-1, 32, 32).transpose(0, 2, 1).copy())[:, None]
    else:
        inputs = torch.from_numpy(features)
    y = torch.from_numpy(labels[half])
    splits = {split: TensorSplit(inputs[rows], y[rows]) for split, rows in index.items()}
    return Domain(
        name=name,
        class_names=[str(c) for c in range(1, 21)],
        input_shape=tuple(inputs.shape[1:]),
        **splits,
        info={"path": str(file), "half": half},
    )
