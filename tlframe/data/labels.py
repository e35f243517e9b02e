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


def richer(a: LabelRegime, b: LabelRegime) -> LabelRegime:
    """The regime with more labels: all > k > j (k > j) > none."""
    rank = {"none": -1, "all": float("inf")}
    return a if rank.get(a, a) >= rank.get(b, b) else b  # type: ignore[arg-type]


def method_setting(stage_regimes: list[dict[str, LabelRegime]]) -> dict[str, LabelRegime]:
    """The labels a method's setting has per domain: the richest regime any of its stages
    trains on (a domain no stage trains on has none)."""
    setting: dict[str, LabelRegime] = {}
    for regimes in stage_regimes:
        for role, regime in regimes.items():
            setting[role] = richer(setting.get(role, "none"), parse_regime(regime))
    return setting


def hold_out(labels: Tensor, indices: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split the labeled ``indices`` (k per class) into training and held-out ones, per
    class: ``round(k * fraction)`` held out, at least one of each kind, drawn with ``seed``
    (from a stream of its own, so the k drawn do not change with the fraction)."""
    generator = torch.Generator().manual_seed(seed + 7919)
    kept, held = [], []
    for cls in torch.unique(labels[indices]).tolist():
        members = indices[labels[indices] == cls]
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = min(max(round(len(members) * fraction), 1), len(members) - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
