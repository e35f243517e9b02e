"""What a stage's parts are built for: the domains (without their data) and the labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class DomainInfo:
    """What a model needs to know about a domain, without its data."""

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    class_attributes: Tensor | None = field(default=None, compare=False)  # zero-shot side info
    seen_classes: tuple[int, ...] | None = None  # zero-shot: the classes with training data

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class StageContext:
    """The setting a stage's parts are built for: both domains and its label regimes."""

    domains: Mapping[str, DomainInfo]
    train_on: Mapping[str, object]
    name: str = "main"
    setting: Mapping[str, object] | None = None  # the method's labels per domain (all stages)
    selection_metric: str | None = None  # what selects this stage's checkpoint
    seed: int = 0  # the run's seed, for parts that draw with their own generators

    def labeled(self, role: str) -> bool:
        return role in self.train_on and str(self.train_on[role]) != "none"

    def labels_of(self) -> Mapping[str, object]:
        """The setting's label regime per domain (this stage's when none was given)."""
        return self.setting if self.setting is not None else self.train_on

    def has_all_labels(self, role: str) -> bool:
        """Whether the setting has every label of ``role``, its validation split's too."""
        return str(self.labels_of().get(role, "none")) == "all"

    @property
    def task_role(self) -> str:
        """The domain whose classes the model predicts: the first labeled training domain,
        else (a label-free stage) the first training domain."""
        for role in self.train_on:
            if self.labeled(role):
                return role
        if self.train_on:
            return next(iter(self.train_on))
        return "target" if "target" in self.domains else next(iter(self.domains))

    @property
    def task(self) -> DomainInfo:
        return self.domains[self.task_role]
