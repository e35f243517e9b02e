"""Model selection: which validation figure picks a stage's checkpoint.

Without target labels a method must not look at target accuracy to choose its weights.
By default a stage with target labels selects on target validation accuracy; a stage that
adapts to an unlabeled target keeps its final weights (its adaptation ramps up over the
schedule, and source validation accuracy, saturated early, cannot see whether it worked:
selecting on it favours earlier, less adapted epochs); any other stage selects on source
validation accuracy. Label-free target criteria are options;
the oracle (target validation accuracy in a setting without target labels) must be asked
for by name and is marked as such in every output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.data.labels import parse_regime
from tlframe.errors import ConfigError


@dataclass(frozen=True)
class Selection:
    metric: str  # the logged key the checkpoint callback monitors
    mode: str  # "max" or "min"
    oracle: bool = False  # True when it reads target labels the setting does not have

    @property
    def label(self) -> str:
        return f"{self.metric} (oracle)" if self.oracle else self.metric

    @property
    def role(self) -> str | None:
        """The domain whose validation split the metric reads (None for ``last``)."""
        return self.metric.split("/")[1] if self.metric.count("/") == 2 else None


# name -> (metric, mode). "auto" picks target accuracy when the stage has target labels,
# the final weights when it adapts to an unlabeled target, else source accuracy.
CRITERIA = {
    "last": ("step", "max"),  # the final weights of the schedule (Lightning's step counter)
    "source": ("val/source/acc", "max"),
    "target": ("val/target/acc", "max"),
    "oracle": ("val/target/acc", "max"),
    "entropy": ("val/target/entropy", "min"),  # mean prediction entropy on target val
    "snd": ("val/target/snd", "max"),  # soft neighbourhood density (Saito et al. 2021)
}


def resolve_selection(choice: str, train_on: dict) -> Selection:
    """Turn ``selection=<name or metric key>`` into what the checkpoint callback needs."""
    target_labeled = "target" in train_on and parse_regime(train_on["target"]) != "none"
    adapts = "target" in train_on and not target_labeled and len(train_on) > 1
    choice = str(choice or "auto")
    if choice == "auto":
        choice = "target" if target_labeled else "last" if adapts else "source"
    if choice in CRITERIA:
        metric, mode = CRITERIA[choice]
    elif choice.count("/") == 2 and choice.split("/")[0] == "val":
        metric, mode = choice, "min" if choice.endswith(("entropy", "loss")) else "max"
    else:
        raise ConfigError(
            f"unknown selection {choice!r}; use auto, {', '.join(CRITERIA)} or a val/... metric"
        )
    if choice == "target" and not target_labeled:
        raise ConfigError(
            "selection=target reads target labels this setting does not have; use "
            "selection=source, entropy or snd, or selection=oracle to do it knowingly"
        )
    oracle = metric == "val/target/acc" and not target_labeled
    return Selection(metric, mode, oracle)


def prediction_entropy(probs: Tensor) -> float:
    """Mean entropy of the predicted class distributions (lower = more confident)."""
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean())


def soft_neighborhood_density(probs: Tensor, temperature: float = 0.05, limit: int = 2000) -> float:
    """SND: entropy of each point's softmax similarity to the others, averaged.

    High when target predictions form dense neighbourhoods, which tracks target accuracy
    without labels (Saito et al., ICCV 2021). At most ``limit`` points are used.
    """
    if len(probs) > limit:
        probs = probs[torch.linspace(0, len(probs) - 1, limit).long()]
    unit = F.normalize(probs, dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(float("-inf"))
    neighbours = F.softmax(similarity / temperature, dim=1)
    return prediction_entropy(neighbours)
