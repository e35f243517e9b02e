"""Seeded, stratified splits for data sets that ship without a validation or test split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from tlframe.errors import ConfigError


def _split_off(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, part)``: ``fraction`` of ``indices`` split off, stratified by label when every
    class can give one example to each side (tiny or rare-class data fall back to uniform)."""
    try:
        rest, part = train_test_split(
            indices, test_size=fraction, stratify=labels[indices], random_state=seed
        )
    except ValueError:
        rest, part = train_test_split(indices, test_size=fraction, random_state=seed)
    return np.sort(rest), np.sort(part)


def split_pool(labels, seed: int, **fractions: float) -> dict[str, np.ndarray]:
    """Indices of ``train`` and of each named part, e.g. ``split_pool(y, 0, val=0.1)``;
    each fraction is of the whole pool, and ``train`` keeps the rest."""
    labels = np.asarray(labels)
    if any(not 0 < f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:
        given = " ".join(f"{k}_fraction={v}" for k, v in fractions.items())
        raise ConfigError(f"split fractions must be in (0, 1) and sum below 1, got {given}")
    rest, remaining, parts = np.arange(len(labels)), 1.0, {}
    for name, fraction in fractions.items():
        rest, parts[name] = _split_off(rest, labels, fraction / remaining, seed)
        remaining -= fraction
    return {"train": rest, **parts}
