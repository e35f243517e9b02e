"""SHOT (Liang et al., ICML 2020): source hypothesis transfer, adaptation without source data.

A setting the map of transfer learning implies: a trained source model, but no source
example at adaptation time. The source stage trains the model with label smoothing
(epsilon = 0.1); the adaptation stage reads only that model and the unlabeled target. It
keeps the source classifier (the hypothesis) fixed and trains the feature extractor so
the target features fit it:

    loss = mean_x H(p(x)) - H(mean_x p(x))          (information maximisation)
           + beta * CE(p(x), pseudo-label(x))      (self-supervised pseudo-labels)

The pseudo-labels come from the target features at the start of each epoch: class
centroids weighted by the predictions, each example labeled with its nearest centroid
(cosine), centroids recomputed from those labels once more; beta = 0.3.
Deviation: the source head is a plain linear layer (the paper's is weight-normalised).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.data.domain import batches
from tlframe.engine.method import Method, Stage, method
from tlframe.engine.model import BackboneHead, TransferModel
from tlframe.engine.objective import CrossEntropy, Objective, StepOutputs, addable, entropy
from tlframe.methods.common import budget
from tlframe.models.layers import Frozen


def information_loss(logits: Tensor) -> Tensor:
    """mean H(p) - H(mean p): confident and diverse predictions minimise it."""
    probs = logits.softmax(dim=1)
    return entropy(probs).mean() - entropy(probs.mean(dim=0, keepdim=True))[0]


@addable("im")
class InformationMaximization(Objective):
    """``trade_off`` times the information loss on the target predictions, as ``im``."""

    needs_roles = ("target",)

    def __init__(self, *, trade_off: float = 1.0, **parts: Any):
        super().__init__()
        self.trade_off = trade_off

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        return {"im": self.trade_off * information_loss(out.logits("target"))}


def cluster_labels(features: Tensor, probs: Tensor, rounds: int = 1) -> Tensor:
    """SHOT's self-supervised labels: centroids weighted by the predictions, nearest
    centroid by cosine, then ``rounds`` of centroids from those labels."""
    features = F.normalize(torch.cat([features, torch.ones(len(features), 1)], dim=1), dim=1)
    weights = probs
    for _ in range(rounds + 1):
        centroids = weights.T @ features / (weights.sum(dim=0)[:, None] + 1e-8)
        labels = (features @ F.normalize(centroids, dim=1).T).argmax(dim=1)
        weights = F.one_hot(labels, probs.shape[1]).float()
    return labels


class PseudoLabels(Objective):
    """``trade_off`` times the cross-entropy with SHOT's pseudo-labels, as ``pseudo``: the
    labels of an epoch come from the model as it was at the epoch's start."""

    needs_roles = ("target",)

    def __init__(self, *, trade_off: float = 0.3, **parts: Any):
        super().__init__()
        self.trade_off = trade_off
        self.centroid_model: list = []  # the epoch's snapshot and centroids (not weights)

    @torch.no_grad()
    def on_train_epoch_start(self, engine) -> None:
        model: TransferModel = engine.model
        split = engine.trainer.datamodule.labeled_train_split("target")
        snapshot = Frozen(model).to(engine.device)
        features, probs = [], []
        for x, _ in batches(split):
            f, logits = snapshot.model.features_and_logits(x.to(engine.device), "target")
            features.append(f.float().cpu())
            probs.append(logits.float().softmax(dim=1).cpu())
        features, probs = torch.cat(features), torch.cat(probs)
        labels = cluster_labels(features, probs)
        normalized = F.normalize(torch.cat([features, torch.ones(len(features), 1)], 1), dim=1)
        one_hot = F.one_hot(labels, probs.shape[1]).float()
        centroids = F.normalize(one_hot.T @ normalized / (one_hot.sum(0)[:, None] + 1e-8), dim=1)
        self.centroid_model = [snapshot, centroids.to(engine.device)]

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        snapshot, centroids = self.centroid_model
        with torch.no_grad():
            snapshot.model.eval()
            f = snapshot.model.features(out.x("target"), "target").float()
            f = F.normalize(torch.cat([f, torch.ones(len(f), 1, device=f.device)], 1), dim=1)
            labels = (f @ centroids.T).argmax(dim=1)
        return {"pseudo": self.trade_off * F.cross_entropy(out.logits("target"), labels)}


@method
def shot(
    information: Callable[..., Objective] = InformationMaximization,
    pseudo_labels: Callable[..., Objective] = PseudoLabels,
    label_smoothing: float = 0.1,
    lr: float | None = None,
    epochs: int | None = None,
) -> Method:
    """SHOT: a labeled source model, then adaptation on the unlabeled target alone (no
    source example); the source head stays fixed. ``lr``, ``epochs``: of the adaptation
    stage (null: the global ones)."""
    source = Stage(
        "source",
        {"source": "all"},
        objectives={"cls": partial(CrossEntropy, label_smoothing=label_smoothing)},
    )
    adapt = Stage(
        "adapt",
        {"target": "none"},
        model=partial(BackboneHead, inherit_head="required", train_head=False),
        objectives={"im": information, "pseudo": pseudo_labels},
        inherits=True,
        **budget(epochs, lr, ("method.epochs", "method.lr")),
    )
    return Method("shot", [source, adapt])
