"""A zero-shot view of a domain: class side information and a named seen/unseen split.

The unseen classes' examples are removed from the training and validation splits here,
when the domain is built, so no method can train (or select a checkpoint) on them; the test
split keeps every class, for the ZSL (unseen only) and GZSL (all classes) protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from tlframe.data.domain import Domain, TensorSplit, split_labels
from tlframe.data.zero_shot.class_info import (
    TableSpec,
    attribute_table,
    sentence_vectors,
    word_vectors,
)
from tlframe.data.zero_shot.text_encoder import class_text_embeddings
from tlframe.errors import ConfigError

log = logging.getLogger(__name__)


def zero_shot(
    base: Domain,
    zsl_splits: Mapping[str, Sequence[str]],
    zsl_split: str,
    attributes: TableSpec | None = None,
    attribute_names: Sequence[str] | None = None,
    attributes_key: str = "att",
    word_vectors_path: str | None = None,
    word_aliases: Mapping[str, str] | None = None,
    sentence_model: str | None = None,
    l2_normalize: bool = True,
    class_text: str | None = None,
    text_encoder: Mapping[str, str | None] | None = None,
) -> Domain:
    """``base`` with ``class_attributes`` and the seen classes of split ``zsl_split``;
    ``attribute_names`` (documentation of the table's columns) is checked against it.
    ``class_text=names`` embeds the class names with ``text_encoder`` in place of the table."""
    names = [str(c) for c in base.class_names]
    text = class_text_embeddings(class_text, text_encoder, names)
    if text is not None:
        attributes = attribute_names = None
    semantic = class_side_information(
        names, attributes, attributes_key, word_vectors_path, word_aliases, sentence_model, text
    )
    width = semantic[0].shape[1] if attributes is not None else None
    if attribute_names is not None and width is not None and len(attribute_names) != width:
        raise ConfigError(
            f"attribute_names lists {len(attribute_names)} attributes but the table has "
            f"{width} columns"
        )
    if l2_normalize:  # each source on one scale, so concatenated ones weigh alike
        semantic = [v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12) for v in semantic]
    seen = seen_classes(names, zsl_splits, zsl_split)
    table = np.concatenate(semantic, axis=1)
    _warn_unlearnable(table, seen, zsl_split)
    return Domain(
        name=f"{base.name}_{zsl_split}",
        class_names=names,
        input_shape=base.input_shape,
        train=only_classes(base.train, seen),
        val=only_classes(base.val, seen),
        test=base.test,
        class_attributes=torch.from_numpy(table),
        info={**base.info, "zsl_split": zsl_split, "attribute_names": attribute_names},
        seen_classes=seen,
    )


def class_side_information(
    class_names: Sequence[str],
    attributes: TableSpec | None,
    attributes_key: str,
    word_vectors_path: str | None,
    word_aliases: Mapping[str, str] | None,
    sentence_model: str | None,
    text: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The configured sources of side information, each ``[classes, dim]``; ``text``
    (class-name embeddings) comes first, where the attribute table would."""
    parts = [] if text is None else [text]
    if attributes is not None:
        parts.append(attribute_table(attributes, class_names, attributes_key))
    if word_vectors_path:
        parts.append(word_vectors(word_vectors_path, class_names, word_aliases))
    if sentence_model:
        parts.append(sentence_vectors(sentence_model, class_names))
    if not parts:
        raise ConfigError(
            "a zero-shot domain needs class side information: set attributes, "
            "word_vectors_path, sentence_model or class_text"
        )
    return parts


def seen_classes(
    class_names: Sequence[str], zsl_splits: Mapping[str, Sequence[str]], zsl_split: str
) -> list[int]:
    """Indices of the classes not declared unseen by the named split."""
    if zsl_split not in zsl_splits:
        raise ConfigError(f"unknown zsl_split {zsl_split!r}; choose one of {sorted(zsl_splits)}")
    unseen = [str(c) for c in zsl_splits[zsl_split]]
    unknown = sorted(set(unseen) - set(class_names))
    if unknown:
        raise ConfigError(f"zsl_split {zsl_split}: {unknown} are not classes of the domain")
    seen = [i for i, name in enumerate(class_names) if name not in unseen]
    if not unseen or len(seen) < 2:
        raise ConfigError(f"zsl_split {zsl_split} needs unseen classes and at least two seen ones")
    return seen


def _warn_unlearnable(table: np.ndarray, seen: Sequence[int], split: str) -> None:
    """An attribute constant over the seen classes cannot be learned from their examples."""
    flat = np.ptp(table[list(seen)], axis=0) == 0
    if flat.any():
        log.warning(
            "zsl_split %s: dimensions %s of the side information do not vary over the "
            "seen classes; nothing can be learned about them",
            split,
            np.flatnonzero(flat).tolist(),
        )


def only_classes(dataset: Dataset, classes: Sequence[int]) -> Dataset:
    """The examples of ``dataset`` whose label is one of ``classes``."""
    keep = torch.isin(split_labels(dataset), torch.as_tensor(list(classes)))
    indices = torch.nonzero(keep).flatten()
    if isinstance(dataset, TensorSplit):
        return dataset.subset(indices)
    return Subset(dataset, indices.tolist())
