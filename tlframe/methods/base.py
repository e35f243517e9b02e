"""The LightningModule every transfer method shares.

It owns what all methods have in common: backbone + head built from config, the optimiser
and schedule from ``_partial_`` configs, evaluation on the val/test splits of both domains
with torchmetrics under ``{split}/{domain}/{metric}`` names, and logging. A method adds
only its own loss terms (``training_losses``) and parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from tlframe.errors import TlframeError
from tlframe.log_steps import logs_this_step
from tlframe.selection import accuracy_metric
from tlframe.validators import LabelFreeCriteria


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
    """The setting a stage's module is built for: both domains and its label regimes."""

    domains: Mapping[str, DomainInfo]
    train_on: Mapping[str, object]
    name: str = "main"
    setting: Mapping[str, object] | None = None  # the method's labels per domain (all stages)
    selection_metric: str | None = None  # what selects this stage's checkpoint

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
        """The domain whose classes the head predicts: the first labeled training domain."""
        for role in self.train_on:
            if self.labeled(role):
                return role
        return "target" if "target" in self.domains else next(iter(self.domains))


class NonFiniteLossError(TlframeError):
    """Raised when a loss term becomes NaN or infinite."""


class TransferModule(pl.LightningModule):
    """Backbone + head trained on the labeled parts of a paired batch (plain supervision).

    ``inherited`` carries the trained parts of the previous stage (``parts()`` of its
    module); the base copies a matching ``backbone`` and ``head`` when present.
    """

    def __init__(
        self,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        context: StageContext,
        scheduler: Callable | None = None,
        inherited: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.context = context
        task = context.domains[context.task_role]
        self.class_names = task.class_names
        self.backbone = backbone(input_shape=task.input_shape)
        self.head = head(in_features=self.backbone.out_features, num_classes=task.num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.eval_roles = [
            role for role, info in context.domains.items() if info.class_names == task.class_names
        ]
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{role}": MulticlassAccuracy(task.num_classes, average="micro")
                for split in ("val", "test", "holdout")
                for role in self.eval_roles
            }
        )
        self.per_class = nn.ModuleDict(
            {role: MulticlassAccuracy(task.num_classes, average="none") for role in self.eval_roles}
        )
        self.per_class_results: dict[str, list[float]] = {}
        self.label_free = LabelFreeCriteria()
        if inherited:
            self.inherit(inherited)

    # ----------------------------------------------------------------- model
    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        """Start from the previous stage's trained backbone (and head, when it fits)."""
        self.backbone.load_state_dict(parts["backbone"].state_dict())
        if "head" in parts and _same_shapes(parts["head"], self.head):
            self.head.load_state_dict(parts["head"].state_dict())

    def parts(self) -> dict[str, nn.Module]:
        """The trained parts a later stage may build on."""
        return {"backbone": self.backbone, "head": self.head}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor | None, Tensor]:
        """Evaluation features and logits for ``role``'s examples; models with a head per
        task override it (features None where no single feature vector exists)."""
        features = self.backbone(x)
        return features, self.head(features)

    def logits_for(self, x: Tensor, role: str) -> Tensor:
        return self.features_and_logits(x, role)[1]

    def use_channels_last(self) -> None:
        """NHWC weights and image batches: faster convolutions on recent CPUs and GPUs."""
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not getattr(self, "channels_last", False):
            return batch
        if "x" in batch:  # an evaluation batch
            return {**batch, "x": to_channels_last(batch["x"])}
        return {role: (to_channels_last(x), y) for role, (x, y) in batch.items()}

    # -------------------------------------------------------------- training
    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        """Cross-entropy on every domain of the batch that carries labels."""
        losses = {}
        for role, (x, y) in batch.items():
            if y is not None:
                losses[f"cls_{role}"] = F.cross_entropy(self(x), y)
        return losses

    def training_scalars(self) -> dict[str, float | Tensor]:
        """Further training values logged as ``train/<name>`` beside the loss terms (e.g.
        DANN's lambda); asked for only on the steps that log (``logs_this_step``)."""
        return {}

    def training_step(self, batch: Mapping[str, tuple], batch_idx: int) -> Tensor:
        losses = self.training_losses(batch)
        if not losses:
            raise TlframeError(
                "this stage has no labeled data to learn from; check data.target_labels"
            )
        loss = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(loss):  # one check (one device sync) for all the terms
            self._raise_non_finite(losses, loss)
        if self.logs_this_step():
            self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()})
            self.log_dict({f"train/{k}": v for k, v in self.training_scalars().items()})
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def logs_this_step(self) -> bool:
        """Whether this training step's values reach the loggers (every
        ``trainer.log_every_n_steps`` steps): only then are they logged, since each
        ``self.log`` costs a fixed ~0.6 ms (``tlframe.log_steps``)."""
        return logs_this_step(self._trainer)

    def _raise_non_finite(self, losses: Mapping[str, Tensor], total: Tensor) -> None:
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"loss term {name!r} became {value.item()} at step {self.global_step}; "
                    "lower the learning rate or the loss weight"
                )
        raise NonFiniteLossError(  # finite terms whose sum overflowed
            f"the total loss became {total.item()} at step {self.global_step}; "
            "lower the learning rate or the loss weights"
        )

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Mapping, prefix: str) -> None:
        role, split, y = batch["domain"], batch["split"], batch["y"]
        features, logits = self.features_and_logits(batch["x"], role)
        if split == "val":  # the label-free criteria read the validation splits
            if role == "target":
                self.label_free.update_target(logits, features)
            elif role == "source" and self.context.has_all_labels(role) and role in self.eval_roles:
                self.label_free.update_source(logits, y, features)
        if role not in self.eval_roles:
            return
        preds = logits.argmax(dim=1)
        metric = self.metrics[f"{split}_{role}"]
        metric.update(preds, y)
        name = self.accuracy_name(split, role)
        shown = split != "test" and "oracle" not in name  # never show what the setting lacks
        self.log(name, metric, add_dataloader_idx=False, prog_bar=shown)
        if prefix == "test" and split == "test":
            self.per_class[role].update(preds, y)

    def accuracy_name(self, split: str, role: str) -> str:
        """``test/<role>/acc``; on validation ``val/<role>/acc`` where the setting has every
        label of ``role``, else ``val/<role>/oracle_acc``; ``val/<role>/holdout_acc`` on the
        examples held out of a k-shot stage's training for its selection."""
        if split == "holdout":
            return f"val/{role}/holdout_acc"
        if split == "val":
            return accuracy_metric(role, self.context.labels_of())
        return f"{split}/{role}/acc"

    def validation_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test")

    def _log_label_free_criteria(self, testing: bool) -> None:
        """``val/target/{im,snd,snd_raw,entropy}`` after every validation; DEV (a domain
        classifier fit) at test time, and on every validation when it selects."""
        with_dev = testing or self.context.selection_metric == "val/target/dev"
        for name, value in self.label_free.compute(with_dev).items():
            self.log(f"val/target/{name}", value)

    def on_validation_epoch_end(self) -> None:
        self._log_label_free_criteria(testing=False)

    def on_test_epoch_end(self) -> None:
        self._log_label_free_criteria(testing=True)
        for role in self.eval_roles:
            metric = self.per_class[role]
            if metric.update_count:
                self.per_class_results[f"test/{role}/acc_per_class"] = metric.compute().tolist()
                metric.reset()

    # ------------------------------------------------------------- optimiser
    def parameter_groups(self) -> Iterable:
        """Trainable parameters; methods override this for per-part learning rates."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1], for schedules such as DANN's lambda."""
        total = self.trainer.estimated_stepping_batches if self._trainer else 0
        return min(self.global_step / total, 1.0) if total else 0.0


def to_channels_last(x: Tensor) -> Tensor:
    """An image batch in NHWC memory order; other tensors as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _same_shapes(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
