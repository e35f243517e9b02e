"""Label regimes of a training domain: all labels, none, or k labeled examples per class."""

from __future__ import annotations

import torch
from torch import Tensor

from tlframe.errors import ConfigError

LabelRegime = str | int


def parse_regime(value: object) -> LabelRegime:
    """Normalise a config value to ``"all"``, ``"none"`` or a positive int k."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        raise ConfigError(f"labels must be all, none or an integer k, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        k = int(value)
        if k < 1:
            raise ConfigError(f"labels per class must be >= 1, got {k}; use none for no labels")
        return k
    if isinstance(value, str) and value.lower() in ("all", "none"):
        return value.lower()
    raise ConfigError(
        f"labels must be all, none or an integer k (labeled examples per class), got {value!r}"
    )


def k_per_class(labels: Tensor, k: int, seed: int, domain: str = "target") -> Tensor:
    """Indices of ``k`` examples of every class, drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if len(members) < k:
            raise ConfigError(
                f"{domain} class {cls} has only {len(members)} training examples, fewer than "
                f"data.target_labels={k}; lower it to at most {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values
