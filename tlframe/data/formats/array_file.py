"""A domain from a file of precomputed feature vectors and labels (use with ``backbone=mlp``).

This is how precomputed CNN features (DeCAF, ResNet), SURF histograms, text bag-of-words and
tabular data enter tlframe. Formats are read by ``array_readers``; within a file, the
features and labels are the arrays named ``features_key``/``labels_key``, found among
common names when not given. A file may carry its own split as ``<key>_train``,
``<key>_val``, ``<key>_test``; a split it lacks is drawn (stratified, with ``seed``) from the
training rows. Class names are the distinct label values (after ``label_offset``), so two
files whose labels mean the same classes pair; set ``class_names`` to name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tlframe.data.domain import SPLITS, Domain, TensorSplit
from tlframe.data.files import override, read
from tlframe.data.formats.array_readers import READERS, SUFFIXES, TABLES, Arrays, read_table
from tlframe.data.splits import split_pool
from tlframe.errors import ConfigError, DataError

FEATURE_KEYS = ("X", "x", "features", "fts", "feas", "feats", "data", "Xs", "Xt")
LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "target", "gnd", "Ys", "Yt")
PAIRS = {"Xs": "Ys", "Xt": "Yt", "fts": "labels", "feas": "label", "X": "y", "x": "y"}


def array_file(
    path: str,
    name: str | None = None,
    role: str | None = None,
    features_key: str | None = None,
    labels_key: str | int | None = None,
    labels_path: str | None = None,
    label_offset: float = 0,
    class_names: Sequence[str] | None = None,
    normalize: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Domain:
    """Feature vectors ``[N, D]`` and labels from ``path`` as an in-memory domain."""
    file = Path(path)
    name = name or file.stem
    if not file.is_file():
        raise DataError(
            f"{name}: no file at {file}; set {override(role, 'path', 'FILE')} to a "
            f"{'/'.join(SUFFIXES)} file of features and labels"
        )
    arrays, keys = _read(file, name, role, features_key, labels_key, labels_path)
    parts = _parts(file, arrays, *keys)
    features, labels, names = _encode_all(file, parts, label_offset, class_names)
    if "all" in features:
        index = split_pool(labels["all"], seed, test=test_fraction, val=val_fraction)
        features = {s: features["all"][i] for s, i in index.items()}
        labels = {s: labels["all"][i] for s, i in index.items()}
    else:
        _carve_missing(features, labels, val_fraction, test_fraction, seed)
    features = _scale_rows(features, normalize)
    splits = {
        split: TensorSplit(torch.from_numpy(features[split]), torch.from_numpy(labels[split]))
        for split in SPLITS
    }
    return Domain(
        name=name,
        class_names=names,
        input_shape=(features["train"].shape[1],),
        **splits,
        info={"path": str(file), "features_key": keys[0], "labels_key": keys[1]},
    )


def _read(
    file: Path,
    name: str,
    role: str | None,
    features_key: str | None,
    labels_key: str | int | None,
    labels_path: str | None,
) -> tuple[Arrays, tuple[str, str]]:
    """The file's arrays and the names of its features and labels."""
    suffix = file.suffix.lower()
    advice = f"is it a valid {suffix} file?"
    if suffix in TABLES:
        table = read(name, file, lambda: read_table(file, labels_key, LABEL_KEYS), advice)
        return table, ("X", "y")
    if suffix == ".npy":
        labels = Path(labels_path) if labels_path else _sibling_labels(file, name, role)
        arrays = {"X": read(name, file, lambda: np.load(file, allow_pickle=False), advice)}
        arrays["y"] = read(name, labels, lambda: np.load(labels, allow_pickle=False), advice)
        return arrays, ("X", "y")
    if suffix not in READERS:
        raise DataError(f"{name}: cannot read {file}: expected one of {', '.join(SUFFIXES)}")
    arrays = read(name, file, lambda: READERS[suffix](file), advice)
    features = _pick(file, arrays, features_key, FEATURE_KEYS, "features", role)
    if labels_key is None and PAIRS.get(features) and _has(arrays, PAIRS[features]):
        return arrays, (features, PAIRS[features])
    return arrays, (features, _pick(file, arrays, labels_key, LABEL_KEYS, "labels", role))


def _sibling_labels(file: Path, name: str, role: str | None) -> Path:
    """Labels beside a features ``.npy``: ``<stem>_labels.npy``, ``<stem>_y.npy``, or a file
    named like a label array (``y.npy``, ``labels.npy``, ...)."""
    names = [f"{file.stem}_labels.npy", f"{file.stem}_y.npy"] + [f"{k}.npy" for k in LABEL_KEYS]
    for candidate in names:
        if (file.parent / candidate).is_file():
            return file.parent / candidate
    raise DataError(
        f"{name}: no labels beside {file} (looked for {', '.join(names[:4])}, ...); set "
        f"{override(role, 'labels_path', 'FILE')}"
    )


def _has(arrays: Arrays, key: str) -> bool:
    return key in arrays or f"{key}_train" in arrays


def _pick(
    file: Path,
    arrays: Arrays,
    requested: str | int | None,
    candidates: tuple[str, ...],
    what: str,
    role: str | None,
) -> str:
    fix = override(role, f"{what}_key", "NAME")
    if requested is not None:
        if not _has(arrays, str(requested)):
            raise DataError(
                f"{file} has no array {requested!r} (nor {requested}_train); "
                f"arrays: {sorted(arrays)}; set {fix}"
            )
        return str(requested)
    present = [key for key in candidates if _has(arrays, key)]
    if len(present) != 1:
        problem = f"several {what} arrays {present}" if present else f"no {what} array"
        raise DataError(f"{file} has {problem} (arrays: {sorted(arrays)}); choose one with {fix}")
    return present[0]


def _parts(file: Path, arrays: Arrays, fkey: str, lkey: str) -> dict[str, tuple]:
    """``{"all": (X, y)}`` for an unsplit file, else ``{split: (X, y)}`` for its splits."""
    if fkey in arrays:
        names = {"all": (fkey, lkey)}
    else:
        names = {s: (f"{fkey}_{s}", f"{lkey}_{s}") for s in SPLITS if f"{fkey}_{s}" in arrays}
    missing = [key for pair in names.values() for key in pair if key not in arrays]
    if missing:
        raise DataError(f"{file} has no array {missing[0]!r} to go with its features")
    return {part: _rows(file, arrays[x], arrays[y]) for part, (x, y) in names.items()}


def _rows(file: Path, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features as float32 ``[N, D]`` (a ``D x N`` matrix is transposed), labels as ``[N]``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise DataError(f"{file}: labels must be one per example, got shape {labels.shape}")
    n = len(labels)
    features = np.asarray(features)
    if features.ndim == 2 and features.shape[0] != n and features.shape[1] == n:
        features = features.T
    if features.ndim == 0 or features.shape[0] != n:
        raise DataError(f"{file}: {n} labels but features of shape {features.shape}")
    features = np.ascontiguousarray(features.reshape(n, -1), dtype=np.float32)
    if not np.isfinite(features).all():
        raise DataError(f"{file}: the features contain NaN or infinite values")
    return features, labels


def _label_values(labels: np.ndarray, offset: float) -> np.ndarray:
    return labels.astype(np.float64) - offset if labels.dtype.kind in "biuf" else labels


def _names(parts: dict[str, tuple], offset: float, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return [str(c) for c in class_names]
    values = np.unique(np.concatenate([_label_values(y, offset) for _, y in parts.values()]))
    return [_format(v) for v in values]


def _format(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _encode_all(
    file: Path, parts: dict[str, tuple], offset: float, class_names: Sequence[str] | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Features per part, labels as int64 indices into the class names, and the names."""
    names = _names(parts, offset, class_names)
    lookup = {name: i for i, name in enumerate(names)}
    features, labels = {}, {}
    for part, (x, y) in parts.items():
        values = _label_values(y, offset)
        keys = [_format(v) for v in values]
        if class_names is not None and values.dtype.kind == "f":
            keys = [names[int(v)] if v.is_integer() and 0 <= v < len(names) else v for v in values]
        unknown = sorted({str(k) for k in keys if k not in lookup})
        if unknown:
            raise DataError(
                f"{file}: labels {unknown[:5]} are not among class_names {names} "
                "(numeric labels index class_names; check label_offset)"
            )
        features[part] = x
        labels[part] = np.array([lookup[k] for k in keys], dtype=np.int64)
    return features, labels, names


def _carve_missing(
    features: dict, labels: dict, val_fraction: float, test_fraction: float, seed: int
) -> None:
    """Draw the splits a split file lacks from its training rows."""
    if "train" not in features:
        raise ConfigError(f"a split file needs a _train part, found {sorted(features)}")
    fractions = {"test": test_fraction, "val": val_fraction}
    carve = {s: f for s, f in fractions.items() if s not in features}
    if not carve:
        return
    index = split_pool(labels["train"], seed, **carve)
    pool_x, pool_y = features["train"], labels["train"]
    for split, rows in index.items():
        features[split], labels[split] = pool_x[rows], pool_y[rows]


def _scale_rows(features: dict, normalize: str | None) -> dict:
    """Each feature vector scaled to unit L1 (histograms of counts: bag-of-words, SURF) or L2
    norm; per-feature standardisation follows when the domains are paired
    (``data.standardize``)."""
    orders = {None: None, "none": None, "l1": 1, "l2": 2}
    if normalize not in orders:
        raise ConfigError(f"normalize must be null, l1 or l2, got {normalize!r}")
    order = orders[normalize]
    if order is not None:
        features = {
            s: x / np.linalg.norm(x, ord=order, axis=1, keepdims=True).clip(min=1e-12)
            for s, x in features.items()
        }
    return {s: np.ascontiguousarray(x, dtype=np.float32) for s, x in features.items()}
