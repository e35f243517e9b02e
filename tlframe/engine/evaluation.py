"""Evaluators: what a stage reports on the validation and test splits of both domains.

An evaluator is a module built by a factory with the uniform signature
``evaluator(model=TransferModel, context=StageContext, objectives={name: Objective})`` and
driven by the engine: ``evaluate(engine, batch, batch_idx)`` for each evaluation batch
(tagged with its domain and split), ``finish(engine, testing)`` at the end of a validation
or test pass. It logs through ``engine.log`` under ``{split}/{domain}/{metric}`` names.

``Accuracy`` is the default: top-1 accuracy per domain and split, per-class accuracy on the
test splits, the accuracy on examples held out of a k-shot stage's training
(``val/target/holdout_acc``), and the label-free criteria of the target validation split
(``tlframe.engine.label_free``). A validation figure that reads labels the setting lacks
is named oracle (``tlframe.engine.selection.accuracy_metric``) and never shown in the
progress bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import nn

from tlframe.engine.context import StageContext
from tlframe.engine.label_free import LabelFreeCriteria
from tlframe.engine.model import TransferModel
from tlframe.engine.selection import accuracy_metric

if TYPE_CHECKING:
    import pytorch_lightning as pl


class Evaluator(nn.Module):
    """Logs a stage's evaluation figures; subclasses implement both hooks. ``on_features``:
    it reads only the model's features and logits, never the inputs or the backbone (so
    it may run on a frozen backbone's cached features, as objectives may)."""

    on_features = False

    def evaluate(self, engine: pl.LightningModule, batch: Mapping, batch_idx: int) -> None:
        raise NotImplementedError

    def finish(self, engine: pl.LightningModule, testing: bool) -> None:
        """End of a validation (``testing=False``) or test pass."""

    def results(self) -> dict[str, object]:
        """Figures that are not logged scalars (per-class lists), for metrics.json."""
        return {}


class Accuracy(Evaluator):
    """Top-1 accuracy of the model's predictions on every domain with the task's classes."""

    on_features = True

    def __init__(self, *, model: TransferModel, context: StageContext, objectives=None):
        from torchmetrics.classification import MulticlassAccuracy

        super().__init__()
        self.context = context
        task = context.task
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

    def evaluate(self, engine: pl.LightningModule, batch: Mapping, batch_idx: int) -> None:
        role, split, y = batch["domain"], batch["split"], batch["y"]
        features, logits = engine.model.features_and_logits(batch["x"], role)
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
        engine.log(name, metric, add_dataloader_idx=False, prog_bar=shown)
        if engine.trainer.testing and split == "test":
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

    def finish(self, engine: pl.LightningModule, testing: bool) -> None:
        """``val/target/{im,snd,snd_raw,entropy}`` after every validation; DEV (a domain
        classifier fit) at test time, and on every validation when it selects."""
        with_dev = testing or self.context.selection_metric == "val/target/dev"
        for name, value in self.label_free.compute(with_dev).items():
            engine.log(f"val/target/{name}", value)
        if not testing:
            return
        for role in self.eval_roles:
            metric = self.per_class[role]
            if metric.update_count:
                self.per_class_results[f"test/{role}/acc_per_class"] = metric.compute().tolist()
                metric.reset()

    def results(self) -> dict[str, object]:
        return dict(self.per_class_results)
