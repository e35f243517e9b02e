"""The xlsa17 zero-shot benchmark format (Xian et al. 2018: AwA2, CUB, SUN, aPY, AwA1).

A folder holds ``res101.mat`` (``features`` ``[2048, N]`` ResNet-101 features, ``labels``
1-based) and ``att_splits.mat`` (``att`` ``[attributes, classes]``, ``allclasses_names``,
1-based ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc``). The proposed split is
used as published: training on ``trainval_loc`` (the seen classes) less a stratified
``val_fraction`` kept for checkpoint selection, testing on ``test_seen_loc`` +
``test_unseen_loc``. Use with ``backbone=mlp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io
import torch

from tlframe.data.domain import Domain, TensorSplit
from tlframe.data.files import override, read, require
from tlframe.data.formats.array_readers import read_mat
from tlframe.data.splits import split_pool
from tlframe.data.zero_shot.text_encoder import class_text_embeddings
from tlframe.errors import DataError

FILES = ("res101.mat", "att_splits.mat")
LOCS = ("trainval_loc", "test_seen_loc", "test_unseen_loc")


def xlsa17(
    root: str,
    name: str | None = None,
    attributes_key: str = "att",
    val_fraction: float = 0.1,
    l2_normalize: bool = False,
    seed: int = 0,
    role: str | None = None,
    class_text: str | None = None,
    text_encoder: Mapping[str, str | None] | None = None,
) -> Domain:
    """The features, class attributes and proposed split in ``root`` as a zero-shot domain;
    ``class_text=names`` embeds ``allclasses_names`` with ``text_encoder`` instead."""
    folder = Path(root)
    name = name or folder.name
    where = override(role, "root", "<e.g. xlsa17/data/AWA2>")
    fixes = [f"download xlsa17 (Xian et al. 2018) and set {where}"]
    require(name, folder, FILES, fixes)
    features_file, splits_file = folder / FILES[0], folder / FILES[1]
    arrays = read(name, features_file, lambda: read_mat(features_file), "is it a .mat file?")
    splits = read(name, splits_file, lambda: read_mat(splits_file), "is it a .mat file?")
    missing = [k for k in ("features", "labels") if k not in arrays]
    missing += [k for k in (*LOCS, attributes_key) if k not in splits]
    if missing:
        raise DataError(f"{name}: {folder} lacks the xlsa17 arrays {missing}")
    labels = np.asarray(arrays["labels"]).reshape(-1).astype(np.int64) - 1
    features = np.asarray(arrays["features"], dtype=np.float32)
    if features.shape[0] != len(labels):
        features = features.T  # stored [dim, N]
    if l2_normalize:
        features /= np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    attributes = np.asarray(splits[attributes_key], dtype=np.float32)
    num_classes = int(labels.max()) + 1
    if attributes.shape[0] != num_classes:
        attributes = attributes.T  # stored [attributes, classes]
    names = _class_names(splits_file, num_classes)
    if class_text is not None and names is None:
        raise DataError(f"{name}: {splits_file} has no allclasses_names to embed for class_text")
    text = class_text_embeddings(class_text, text_encoder, names or [])
    if text is not None:
        attributes = text
    rows = {k: np.asarray(splits[k]).reshape(-1).astype(np.int64) - 1 for k in LOCS}
    carve = split_pool(labels[rows["trainval_loc"]], seed, val=val_fraction)
    parts = {
        "train": rows["trainval_loc"][carve["train"]],
        "val": rows["trainval_loc"][carve["val"]],
        "test": np.concatenate([rows["test_seen_loc"], rows["test_unseen_loc"]]),
    }

    def split(index: np.ndarray) -> TensorSplit:
        return TensorSplit(torch.from_numpy(features[index]), torch.from_numpy(labels[index]))

    return Domain(
        name=name,
        class_names=names or [str(i) for i in range(num_classes)],
        input_shape=(features.shape[1],),
        **{part: split(index) for part, index in parts.items()},
        class_attributes=torch.from_numpy(np.ascontiguousarray(attributes)),
        info={"root": str(folder)},
        seen_classes=sorted(set(labels[rows["trainval_loc"]].tolist())),
    )


def _class_names(path: Path, num_classes: int) -> list[str] | None:
    """``allclasses_names`` (a cell array, which the numeric readers skip), if present."""
    cells = scipy.io.loadmat(path).get("allclasses_names")
    if cells is None or cells.size != num_classes:
        return None
    return [str(np.asarray(c).reshape(-1)[0]) for c in cells.reshape(-1)]
