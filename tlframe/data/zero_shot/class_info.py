"""Class side information: what a zero-shot method knows about classes it has never seen.

Three sources, each giving one row per class (in the domain's class order):

* an attribute table (binary or continuous): a ``{class: [values]}`` mapping written in
  YAML, or a file: ``.csv`` (a header row, first column the class name), ``.npy``
  (``[classes, attributes]``) or MATLAB ``.mat`` (array ``att``; xlsa17 stores it
  ``[attributes, classes]``, which is recognised and transposed);
* word vectors of the class names from a GloVe / word2vec text file (a multi-word name
  such as ``polar+bear`` or ``killer_whale`` is the mean of its words' vectors);
* a sentence-transformers model (by name or local path) embedding the class names: an
  optional extra (``pip install sentence-transformers``), never needed by the tests.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tlframe.data.formats.array_readers import read_mat
from tlframe.errors import ConfigError, DataError

TableSpec = str | Mapping[str, Sequence[float]]


def attribute_table(spec: TableSpec, class_names: Sequence[str], key: str = "att") -> np.ndarray:
    """``[classes, attributes]`` float32 from a YAML mapping or a .csv/.npy/.mat file."""
    if isinstance(spec, Mapping):
        return _rows_by_name({str(k): v for k, v in spec.items()}, class_names, "attributes")
    path = Path(str(spec))
    if not path.is_file():
        raise DataError(f"no attribute file at {path}; give a .csv, .npy or .mat table")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _rows_by_name(_read_csv(path), class_names, str(path))
    if suffix == ".npy":
        table = np.load(path, allow_pickle=False)
    elif suffix == ".mat":
        arrays = read_mat(path)
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r}; arrays: {sorted(arrays)}")
        table = arrays[key]
    else:
        raise DataError(f"cannot read attributes from {path}: expected .csv, .npy or .mat")
    return _orient(np.asarray(table, dtype=np.float32), len(class_names), path)


def _orient(table: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    if table.ndim == 2 and table.shape[0] != num_classes and table.shape[1] == num_classes:
        table = table.T  # [attributes, classes], as MATLAB files keep it
    if table.ndim != 2 or table.shape[0] != num_classes:
        raise DataError(f"{path}: expected one row per class ({num_classes}), got {table.shape}")
    return np.ascontiguousarray(table)


def _read_csv(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    return {row[0].strip(): row[1:] for row in rows[1:]}  # the first row names the attributes


def _rows_by_name(
    rows: Mapping[str, Sequence], class_names: Sequence[str], where: str
) -> np.ndarray:
    missing = [name for name in class_names if name not in rows]
    if missing:
        raise ConfigError(f"{where}: no row for classes {missing[:5]}; one row per class needed")
    widths = {len(rows[name]) for name in class_names}
    if len(widths) != 1:
        raise ConfigError(f"{where}: rows have different lengths {sorted(widths)}")
    try:
        return np.array([[float(v) for v in rows[name]] for name in class_names], np.float32)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: an attribute value is not a number ({err})") from err


def class_words(name: str) -> list[str]:
    """The words of a class name: ``polar+bear``, ``killer_whale``, ``Grey Whale`` -> words."""
    return [w for w in re.split(r"[\s_+\-.]+", name.lower()) if w]


def word_vectors(
    path: str, class_names: Sequence[str], aliases: Mapping[str, str] | None = None
) -> np.ndarray:
    """``[classes, dim]``: each class name's mean word vector from a GloVe/word2vec text
    file; ``aliases`` maps a class to the words to use instead of its name."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"no word-vector file at {file}; give a GloVe or word2vec text file")
    aliases = dict(aliases or {})
    words = {c: class_words(aliases.get(c, c)) for c in class_names}
    wanted = {w for ws in words.values() for w in ws}
    found: dict[str, np.ndarray] = {}
    with file.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            word, _, rest = line.rstrip().partition(" ")
            if word.lower() in wanted and word.lower() not in found:
                found[word.lower()] = np.array(rest.split(), dtype=np.float32)
    missing = [c for c, ws in words.items() if not any(w in found for w in ws)]
    if missing:
        raise DataError(
            f"{file} has no vector for classes {missing[:5]}; name their words with "
            "word_aliases: {class: 'some words'}"
        )
    return np.stack(
        [np.mean([found[w] for w in ws if w in found], axis=0) for ws in words.values()]
    )


def sentence_vectors(model: str, class_names: Sequence[str]) -> np.ndarray:
    """``[classes, dim]`` embeddings of the class names (words joined by spaces)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ConfigError(
            "sentence_model needs the optional sentence-transformers package: "
            "pip install sentence-transformers"
        ) from err
    texts = [" ".join(class_words(name)) for name in class_names]
    return np.asarray(SentenceTransformer(model).encode(texts), dtype=np.float32)
