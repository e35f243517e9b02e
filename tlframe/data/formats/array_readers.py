"""Readers for files of feature vectors and labels: each gives its named numpy arrays.

``.npz``, ``.pt`` (a dict of tensors, or an ``(X, y)`` pair), MATLAB ``.mat`` (v4-v7 through
scipy, v7.3/HDF5 through h5py, sparse matrices densified) hold several named arrays;
``.npy`` holds one (its labels come from a second file); ``.csv``/``.tsv`` is a table whose
label column is picked by name or position.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from tlframe.errors import DataError
from tlframe.io import safe_load

Arrays = dict[str, np.ndarray]


def read_npz(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def read_pt(path: Path) -> Arrays:
    data = safe_load(path)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = {"X": data[0], "y": data[1]}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of tensors or an (X, y) pair, got {type(data)}")
    return {str(k): np.asarray(v) for k, v in data.items() if hasattr(v, "__array__")}


def read_mat(path: Path) -> Arrays:
    """Classic MATLAB files through scipy; v7.3 files are HDF5 and go through h5py."""
    import h5py

    if h5py.is_hdf5(path):
        return _read_mat73(path)
    arrays = {}
    for key, value in scipy.io.loadmat(path).items():  # also __header__ etc. and cell arrays
        if scipy.sparse.issparse(value):
            arrays[key] = value.toarray()
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biufU":
            arrays[key] = value
    return arrays


def _read_mat73(path: Path) -> Arrays:
    """Top-level variables of a v7.3 file. HDF5 stores MATLAB's column-major arrays with
    their axes reversed, so each is transposed back; sparse matrices are CSC groups."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as file:
        for key, node in file.items():
            if isinstance(node, h5py.Dataset) and node.dtype.kind in "biuf":
                arrays[key] = np.asarray(node).T
            elif isinstance(node, h5py.Group) and "MATLAB_sparse" in node.attrs:
                rows, jc = int(node.attrs["MATLAB_sparse"]), np.asarray(node["jc"])
                shape = (rows, len(jc) - 1)
                data = np.asarray(node["data"]) if "data" in node else np.ones(len(node["ir"]))
                arrays[key] = scipy.sparse.csc_matrix((data, node["ir"], jc), shape).toarray()
    return arrays


def read_table(path: Path, labels_key: str | int | None, label_names: tuple[str, ...]) -> Arrays:
    """``{"X", "y"}`` from a delimited table. The label column is ``labels_key`` (a header
    name or a 0-based position), else the first header among ``label_names``, else the
    last column. A first row that is not all numbers is the header."""
    with path.open(newline="") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t ") if sample else csv.excel
        rows = [row for row in csv.reader(handle, dialect) if row]
    if not rows:
        raise DataError(f"{path} is empty")
    header = None if all(_is_number(cell) for cell in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    column = _label_column(path, header, len(rows[0]), labels_key, label_names)
    try:
        features = np.array(
            [[float(c) for i, c in enumerate(row) if i != column] for row in body], np.float32
        )
    except ValueError as err:
        raise DataError(f"{path}: a feature cell is not a number ({err})") from err
    return {"X": features, "y": np.array([row[column].strip() for row in body])}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column(
    path: Path,
    header: list[str] | None,
    width: int,
    labels_key: str | int | None,
    label_names: tuple[str, ...],
) -> int:
    if isinstance(labels_key, int) or (isinstance(labels_key, str) and labels_key.isdigit()):
        return int(labels_key) % width
    if labels_key is not None:
        if not header or labels_key not in header:
            raise DataError(f"{path} has no column {labels_key!r}; columns: {header or width}")
        return header.index(labels_key)
    matches = [header.index(name) for name in label_names if header and name in header]
    return matches[0] if matches else width - 1


READERS: dict[str, Callable[[Path], Arrays]] = {
    ".npz": read_npz,
    ".pt": read_pt,
    ".pth": read_pt,
    ".mat": read_mat,
}
TABLES = (".csv", ".tsv")
SUFFIXES = (*READERS, ".npy", *TABLES)
