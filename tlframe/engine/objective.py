"""Objectives: the loss terms of a training step, as modules that combine.

An objective is built by a factory with the uniform signature
``objective(model=TransferModel, context=StageContext)`` (its own options bound before, e.g.
by Hydra from its config) and called as ``objective(out, progress)`` with the step's
``StepOutputs`` and the training progress p in [0, 1]; it returns named loss terms, which
the engine sums. It may own parameters (a domain classifier), take over an earlier stage's
parts (``inherit``: LwF's frozen teacher, L2-SP's starting point) and report training
values (``scalars``: DANN's lambda). Any method takes further objectives from the command
line (``+objectives=[mcc]``), so they know only the batch and the model's interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.engine.model import TransferModel


class StepOutputs:
    """A training batch and the model's outputs on it, each computed once, when first asked.

    With ``joint`` (an objective aligns domains) every domain of the batch goes through the
    model in one pass over their concatenation, so batch statistics cover all of them;
    otherwise each domain's examples go through on their own.
    """

    def __init__(self, model: TransferModel, batch: Mapping[str, tuple], joint: bool = False):
        self.model = model
        self.batch = batch
        self.joint = joint
        self._outputs: dict[str, tuple[Tensor | None, Tensor]] = {}

    @property
    def roles(self) -> list[str]:
        return list(self.batch)

    def x(self, role: str) -> Tensor:
        return self.batch[role][0]

    def y(self, role: str) -> Tensor | None:
        return self.batch[role][1]

    def labeled_roles(self) -> list[str]:
        return [role for role in self.roles if self.y(role) is not None]

    def features(self, role: str) -> Tensor:
        features = self._outputs_of(role)[0]
        if features is None:
            raise RuntimeError(f"{type(self.model).__name__} gives no features for {role}")
        return features

    def logits(self, role: str) -> Tensor:
        return self._outputs_of(role)[1]

    def _outputs_of(self, role: str) -> tuple[Tensor | None, Tensor]:
        if role not in self._outputs:
            if self.joint:
                roles = self.roles
                joint = self.model.joint_features_and_logits([self.x(r) for r in roles])
                self._outputs.update(zip(roles, joint, strict=True))
            else:
                self._outputs[role] = self.model.features_and_logits(self.x(role), role)
        return self._outputs[role]


ADDABLE: dict[str, type[Objective]] = {}  # objectives any method takes: +objectives=[name]


def addable(name: str):
    """Register an objective that any method may add from the command line or a preset
    (``+objectives=[<name>]``, options ``objectives.<name>.<option>``)."""

    def register(cls: type[Objective]) -> type[Objective]:
        ADDABLE[name] = cls
        return cls

    return register


class Objective(nn.Module):
    """One or more named loss terms of a training step.

    Class attributes say what it needs: ``joint`` (all domains in one forward pass),
    ``needs_labels`` (labeled examples: a stage of such objectives needs labels to learn),
    ``needs_roles`` (domains the stage must train on, e.g. the unlabeled target),
    ``on_features`` (only the model's features and logits, never the batch's inputs or
    the backbone itself: a frozen backbone's features may then be computed once,
    ``tlframe.engine.feature_cache``).
    """

    joint = False
    needs_labels = False
    needs_roles: tuple[str, ...] = ()
    on_features = False

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        raise NotImplementedError

    def inherit(self, parts: Mapping[str, nn.Module], model: TransferModel) -> None:
        """Take over an earlier stage's ``parts`` (the new ``model`` has taken over its own);
        called by the stage runner after construction."""

    def scalars(self, progress: float) -> dict[str, float | Tensor]:
        """Training values logged as ``train/<name>`` on the steps that log."""
        return {}

    def on_train_start(self, engine) -> None:
        """Called once before training, with the engine (its trainer, data module and
        model): for objectives that measure the starting model on a whole split (DELTA's
        channel attention, Co-Tuning's category relationship)."""

    def on_train_epoch_start(self, engine) -> None:
        """Called before each training epoch, with the engine: for objectives that look at
        a whole split as the model is now, such as SHOT's pseudo-labels."""


class CrossEntropy(Objective):
    """Cross-entropy of the model's logits on every domain of the batch that has labels,
    as ``cls_<domain>``. ``shuffle_labels`` shuffles each batch's labels first: a control
    that learns nothing useful from them (progressive nets' useless source column);
    ``label_smoothing`` mixes the targets with the uniform distribution (SHOT's source
    model)."""

    needs_labels = True
    on_features = True

    def __init__(self, *, shuffle_labels: bool = False, label_smoothing: float = 0.0, **parts: Any):
        super().__init__()
        self.shuffle_labels = shuffle_labels
        self.label_smoothing = label_smoothing

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        losses = {}
        for role in out.labeled_roles():
            y = out.y(role)
            if self.shuffle_labels:
                y = y[torch.randperm(len(y), device=y.device)]
            smoothing = self.label_smoothing
            losses[f"cls_{role}"] = F.cross_entropy(out.logits(role), y, label_smoothing=smoothing)
        return losses


def entropy(probs: Tensor) -> Tensor:
    """Entropy of each row's class distribution."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


class TargetTerm(Objective):
    """A term on the unlabeled target's predictions, from the one pass over both domains
    (entropy minimisation, MCC): any method whose last stage reads the target may add one."""

    joint = True
    needs_roles = ("target",)
