"""Self-taught learning (Raina et al. 2007): features learned on unlabeled data, possibly of
other classes, then a classifier on a few labeled target examples.

The pretraining stage trains the backbone with a pretext task (``tlframe.methods.pretext``,
``method/pretext=contrastive|rotation|autoencoder``) on the UNLABELED source (it may have
other classes, e.g. ``source=synth_letters target=hand_digits``) and selects its
checkpoint by the task's loss on the source validation split (``val/source/loss``). It
does not depend on the target or on k, so a sweep over them trains it once per seed. The
second stage trains a new head on the k labeled target examples (``data.target_labels``)
over the frozen backbone, or fine-tunes both.
Controls: ``method=target_only`` (lenet from scratch) and raw pixels, a linear classifier
on the input: ``method=target_only backbone=mlp backbone.hidden_dims=[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import torch

from tlframe.engine.context import StageContext
from tlframe.engine.evaluation import Evaluator
from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.engine.model import FeatureExtractor, TransferModel
from tlframe.engine.objective import Objective
from tlframe.methods.common import budget
from tlframe.methods.layer_transfer import CopiedBlocks
from tlframe.methods.pretext import PRETEXT

if TYPE_CHECKING:
    import pytorch_lightning as pl

EVAL_SEED = 1234  # validation corruptions/views are the same every epoch: comparable losses


class PretextLoss(Evaluator):
    """The pretext task's loss on the validation and test splits of the domains the stage
    trains on: ``{split}/{domain}/loss`` (the pretraining stage selects on the source's)."""

    def __init__(
        self,
        *,
        model: TransferModel | None = None,
        context: StageContext,
        objectives: Mapping[str, Objective],
    ):
        super().__init__()
        self.context = context
        self.pretext = [objectives["pretext"]]  # not a submodule: the engine owns it

    def evaluate(self, engine: pl.LightningModule, batch: Mapping, batch_idx: int) -> None:
        role, split, x = batch["domain"], batch["split"], batch["x"]
        if role not in self.context.train_on:
            return
        generator = torch.Generator(device=x.device).manual_seed(EVAL_SEED + batch_idx)
        loss = sum(self.pretext[0].loss(engine.model.backbone, x, generator).values())
        engine.log(f"{split}/{role}/loss", loss, batch_size=len(x), add_dataloader_idx=False)


def pretrain_stage(
    pretext: Callable[..., Objective], epochs: int | None, lr: float | None
) -> Stage:
    """The label-free first stage shared by self_taught and self_taught_clustering."""
    return Stage(
        "pretrain",
        {"source": "none"},
        model=FeatureExtractor,
        objectives={"pretext": pretext},
        evaluator=PretextLoss,
        selection="val/source/loss",
        **budget(epochs, lr, ("method.epochs_pretrain", "method.lr_pretrain")),
    )


@method
def self_taught(
    pretext: Callable[..., Objective] = PRETEXT,
    finetune: bool = False,
    feature_blocks: int | None = None,
    epochs_pretrain: int | None = None,
    lr_pretrain: float | None = None,
    epochs_target: int | None = None,
    lr_target: float | None = None,
) -> Method:
    """Pretrain on the unlabeled source, then a head on the target labels. ``finetune``:
    false trains only the head on frozen features (computed once:
    ``tlframe.engine.feature_cache``), true the backbone too.
    ``feature_blocks``: null puts the head on the whole backbone's features, n on the
    flattened output of its first n blocks (later blocks specialise in the pretext task: 2
    = lenet's conv features, RotNet's best layer). Epochs and learning rates: null = the
    global ``trainer.max_epochs`` and ``optimizer.lr``."""
    head = partial(
        CopiedBlocks,
        side="first",
        layers=None,
        unfreeze_at_epoch=0 if finetune else None,
        keep_blocks=feature_blocks,
    )
    limits = budget(epochs_target, lr_target, ("method.epochs_target", "method.lr_target"))
    target = Stage("target", {"target": LABELED}, model=head, inherits=True, **limits)
    stages = [pretrain_stage(pretext, epochs_pretrain, lr_pretrain), target]
    return Method("self_taught", stages, same_classes=False)
