"""The model base of the zero-shot methods and the ZSL/GZSL protocol (Xian et al. 2018).

A zero-shot model trains on the seen classes of the source domain and scores an image
against every class's side information (``class_scores``); ``ZeroShotAccuracy`` evaluates
it. Accuracy is the mean over classes of per-class top-1 accuracy, so large classes do not
dominate:

* ``{split}/{role}/seen_acc``: seen-class examples, candidates the seen classes (the ordinary
  supervised figure; ``{split}/source/acc`` is this, and selects checkpoints);
* ``{split}/{role}/unseen_acc``: unseen-class examples, candidates the unseen classes (ZSL;
  ``{split}/target/acc`` is this);
* ``gzsl_seen``, ``gzsl_unseen``, ``gzsl_h``: every example, candidates all classes (GZSL):
  accuracy on the seen and on the unseen classes' examples, and their harmonic mean H.

A figure is logged only where its examples exist (validation splits hold seen classes only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.evaluation import Evaluator
from tlframe.engine.method import Stage
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective
from tlframe.errors import ConfigError

if TYPE_CHECKING:
    import pytorch_lightning as pl

KINDS = ("seen", "zsl", "gzsl")


def class_mean(per_class: Tensor, classes: Tensor) -> float | None:
    """Mean accuracy over ``classes`` (a boolean mask) that had examples; None if none did."""
    values = per_class[classes]
    values = values[~values.isnan()]
    return float(values.mean()) if len(values) else None


def harmonic_mean(seen: float, unseen: float) -> float:
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def best_among(scores: Tensor, candidates: Tensor) -> Tensor:
    """The highest-scoring class among the ``candidates`` (a boolean mask over classes)."""
    return scores.masked_fill(~candidates, float("-inf")).argmax(dim=1)


class ZeroShotModel(TransferModel):
    """Side information and seen/unseen masks per domain, for a model that scores an image
    against every class's side information (``class_scores``)."""

    def __init__(self, *, context: StageContext):
        super().__init__()
        for role, info in context.domains.items():
            if info.class_attributes is None or info.seen_classes is None:
                raise ConfigError(
                    f"zero-shot methods need class side information and a zsl_split on the "
                    f"{role} domain, which {info.name} lacks; use {role}=zsl_digits, "
                    "zsl_letters or xlsa17 (or dataset=zsl_digits)"
                )
            seen = torch.zeros(info.num_classes, dtype=torch.bool)
            seen[list(info.seen_classes)] = True
            self.register_buffer(f"semantic_{role}", info.class_attributes.float())
            self.register_buffer(f"seen_{role}", seen)
        widths = {role: info.class_attributes.shape[1] for role, info in context.domains.items()}
        if len(set(widths.values())) > 1:
            raise ConfigError(
                f"the domains' class side information differs in width ({widths}); give "
                "source and target the same attribute table or word vectors"
            )
        self.task_role = context.task_role
        seen = self.seen_mask(self.task_role)
        index = torch.full((len(seen),), -1, dtype=torch.long)  # -1: an unseen class
        index[seen] = torch.arange(int(seen.sum()))  # position among the seen classes
        self.register_buffer("seen_index", index)

    def semantic(self, role: str) -> Tensor:
        """``[classes, dim]`` side information of ``role``'s classes."""
        return getattr(self, f"semantic_{role}")

    def seen_mask(self, role: str) -> Tensor:
        return getattr(self, f"seen_{role}")

    def scores_of(self, features: Tensor, role: str) -> Tensor:
        """A score per class of ``role``'s domain, from the backbone's ``features``."""
        raise NotImplementedError

    def class_scores(self, x: Tensor, role: str) -> Tensor:
        return self.features_and_logits(x, role)[1]

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return features, self.scores_of(features, role)

    def parts(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head}

    def seen_labels(self, y: Tensor) -> Tensor:
        """Source labels as positions among the seen classes (training sees no others)."""
        labels = self.seen_index[y]
        if (labels < 0).any():
            raise ConfigError("an unseen class reached a training batch; check the zsl domain")
        return labels


class ZeroShotAccuracy(Evaluator):
    """The ZSL and GZSL figures of every domain, from per-class accuracies."""

    def __init__(self, *, model: ZeroShotModel, context: StageContext, objectives=None):
        from tlframe.engine.metrics import ClassAccuracy

        super().__init__()
        self.context = context
        self.class_accuracy = nn.ModuleDict(
            {
                f"{split}_{role}_{kind}": ClassAccuracy(info.num_classes)
                for split in ("val", "test")
                for role, info in context.domains.items()
                for kind in KINDS
            }
        )

    def evaluate(self, engine: pl.LightningModule, batch: Mapping, batch_idx: int) -> None:
        role, split, y = batch["domain"], batch["split"], batch["y"]
        model = engine.model
        scores = model.class_scores(batch["x"], role)
        seen = model.seen_mask(role)
        is_seen = seen[y]
        for kind, rows, candidates in (
            ("seen", is_seen, seen),
            ("zsl", ~is_seen, ~seen),
            ("gzsl", torch.ones_like(is_seen), torch.ones_like(seen)),
        ):
            if rows.any():
                preds = best_among(scores[rows], candidates)
                self.class_accuracy[f"{split}_{role}_{kind}"].update(preds, y[rows])

    def finish(self, engine: pl.LightningModule, testing: bool) -> None:
        for split in ("val", "test"):
            for role in self.context.domains:
                for name, value in self._figures(engine.model, split, role).items():
                    if value is not None:
                        engine.log(f"{split}/{role}/{name}", value, add_dataloader_idx=False)

    def _figures(self, model: ZeroShotModel, split: str, role: str) -> dict[str, float | None]:
        seen, figures = model.seen_mask(role), {}
        per_kind = {}
        for kind in KINDS:
            metric = self.class_accuracy[f"{split}_{role}_{kind}"]
            if metric.update_count:
                per_kind[kind] = metric.compute()
                metric.reset()
        if "seen" in per_kind:
            figures["seen_acc"] = class_mean(per_kind["seen"], seen)
        if "zsl" in per_kind:
            figures["unseen_acc"] = class_mean(per_kind["zsl"], ~seen)
        if "gzsl" in per_kind:
            s, u = class_mean(per_kind["gzsl"], seen), class_mean(per_kind["gzsl"], ~seen)
            if s is not None and u is not None:
                figures.update(gzsl_seen=s, gzsl_unseen=u, gzsl_h=harmonic_mean(s, u))
        main = "seen_acc" if role == self.context.task_role else "unseen_acc"
        if main in figures:
            figures["acc"] = figures[main]
        return figures


def seen_stage(model: Callable[..., ZeroShotModel], objective: Callable[..., Objective]) -> Stage:
    """The one stage of a zero-shot method: the source's seen classes only (the zsl domain
    holds no others)."""
    return Stage(
        "seen",
        {"source": "all"},
        model=model,
        objectives={"cls": objective},
        evaluator=ZeroShotAccuracy,
    )
