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
(cosine, among the classes the model predicts at all), the centroids recomputed from
those labels, and each example labeled with its nearest one again; beta = 0.3.
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


def augmented(features: Tensor) -> Tensor:
    """Features with a constant 1 appended, L2-normalised (SHOT's cosine geometry)."""
    ones = torch.ones(len(features), 1, device=features.device, dtype=features.dtype)
    return F.normalize(torch.cat([features, ones], dim=1), dim=1)


def nearest(features: Tensor, centroids: Tensor, present: Tensor) -> Tensor:
    """The nearest centroid by cosine among the ``present`` classes."""
    similarity = augmented(features) @ F.normalize(centroids, dim=1).T
    return similarity.masked_fill(~present, float("-inf")).argmax(dim=1)


def shot_centroids(features: Tensor, probs: Tensor, rounds: int = 1) -> tuple[Tensor, Tensor]:
    """SHOT's class centroids of the target features: weighted by the predictions, then
    ``rounds`` times recomputed from the nearest-centroid labels; and the classes the
    model predicts for at least one example (the others get no label)."""
    present = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]) > 0
    weights, normalized = probs, augmented(features)
    for _ in range(rounds):
        centroids = weights.T @ normalized / (weights.sum(dim=0)[:, None] + 1e-8)
        weights = F.one_hot(nearest(features, centroids, present), probs.shape[1]).float()
    return weights.T @ normalized / (weights.sum(dim=0)[:, None] + 1e-8), present


def cluster_labels(features: Tensor, probs: Tensor, rounds: int = 1) -> Tensor:
    """SHOT's self-supervised label of each example: its nearest final centroid."""
    return nearest(features, *shot_centroids(features, probs, rounds))


class PseudoLabels(Objective):
    """``trade_off`` times the cross-entropy with SHOT's pseudo-labels, as ``pseudo``: the
    labels of an epoch come from the model as it was at the epoch's start (the same label
    for an example throughout the epoch, as SHOT labels the data set once per epoch)."""

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
        centroids, present = shot_centroids(torch.cat(features), torch.cat(probs))
        self.centroid_model = [snapshot, centroids.to(engine.device), present.to(engine.device)]

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        snapshot, centroids, present = self.centroid_model
        with torch.no_grad():  # the epoch-start model's features: the epoch's fixed labels
            snapshot.model.eval()
            f = snapshot.model.features(out.x("target"), "target").float()
            labels = nearest(f, centroids, present)
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
