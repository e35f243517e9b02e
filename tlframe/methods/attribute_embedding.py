"""Attribute embedding: images and class descriptions projected into one space.

f(x) is the backbone followed by a projection (the ``head`` config, sized to the
embedding), g(a) maps a class's side information into the same space (a linear map, as in
ALE / DeViSE, or the identity: f then predicts the attributes themselves). Training makes
f(x) more compatible with g of its own class than with g of any other seen class:

* ``loss=warp`` (the default): ALE's weighted approximate ranking (Akata et al. 2013,
  2016): with r the number of classes c whose margin violation
  v_c = max(0, margin - s(x, y) + s(x, c)) is positive, the loss is
  (H_r / r) sum_c v_c, H_r = 1 + 1/2 + ... + 1/r: a violation costs more while the true
  class ranks far down, which favours the top of the ranking; ALE's margin is 1 (its 0/1
  loss Delta) with the bilinear (``similarity=dot``) compatibility;
* ``loss=hinge``: the unweighted ranking hinge of DeViSE (Frome et al. 2013),
  sum_c v_c (DeViSE's margin: 0.1 on unit vectors, ``similarity=cosine``);
* ``loss=softmax``: cross-entropy over the seen classes' compatibilities (times ``scale``),
  tlframe's earlier default (with ``similarity=cosine``).

An image's class is the candidate whose g(a) is nearest (most compatible).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.methods.zero_shot import ZeroShotModel, seen_stage

ENCODERS = ("linear", "identity")
SIMILARITIES = ("cosine", "dot")
LOSSES = ("warp", "hinge", "softmax")


def _choose(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"method.{option}={value!r}; choose one of {', '.join(choices)}")


class EmbeddingModel(ZeroShotModel):
    """Compatibility s(x, c) = sim(f(x), g(a_c)) between an image and each class."""

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        context: StageContext,
        embedding_dim: int | None,
        class_encoder: str,
        similarity: str,
    ):
        _choose("class_encoder", class_encoder, ENCODERS)
        _choose("similarity", similarity, SIMILARITIES)
        super().__init__(context=context)
        side_dim = self.semantic(self.task_role).shape[1]
        if class_encoder == "identity" and embedding_dim not in (None, side_dim):
            raise ConfigError(
                f"method.class_encoder=identity embeds into the side information's own "
                f"{side_dim} dimensions; set method.embedding_dim=null"
            )
        dim = embedding_dim or side_dim
        self.backbone = backbone(input_shape=context.task.input_shape)
        self.head = head(in_features=self.backbone.out_features, num_classes=dim)
        self.class_encoder = nn.Linear(side_dim, dim) if class_encoder == "linear" else None
        self.similarity = similarity

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def embed_classes(self, role: str) -> Tensor:
        """g(a) for every class of ``role``'s domain."""
        side = self.semantic(role)
        return side if self.class_encoder is None else self.class_encoder(side)

    def compatibility(self, embedded: Tensor, classes: Tensor) -> Tensor:
        if self.similarity == "cosine":
            embedded, classes = F.normalize(embedded, dim=1), F.normalize(classes, dim=1)
        return embedded @ classes.T

    def scores_of(self, features: Tensor, role: str) -> Tensor:
        return self.compatibility(self.head(features), self.embed_classes(role))


class Compatibility(Objective):
    """Makes an image most compatible with its own seen class (``loss``: ALE's weighted
    ranking or DeViSE's ranking hinge with ``margin``, or softmax over ``scale`` times the
    compatibilities)."""

    needs_labels = True

    def __init__(
        self,
        *,
        loss: str,
        scale: float,
        margin: float,
        **parts: Any,
    ):
        _choose("loss", loss, LOSSES)
        super().__init__()
        self.loss, self.scale, self.margin = loss, scale, margin

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        model, role = out.model, out.model.task_role
        x, y = out.x(role), out.y(role)
        seen = model.embed_classes(role)[model.seen_mask(role)]
        scores, labels = model.compatibility(model(x), seen), model.seen_labels(y)
        if self.loss == "softmax":
            return {"compatibility": F.cross_entropy(self.scale * scores, labels)}
        weighted = self.loss == "warp"
        return {"ranking": ranking_hinge(scores, labels, self.margin, weighted)}


def ranking_hinge(scores: Tensor, labels: Tensor, margin: float, weighted: bool) -> Tensor:
    """Mean over examples of sum_{c != y} max(0, margin - s_y + s_c), each example's sum
    weighted by H_r / r for its r positive violations when ``weighted`` (ALE's WARP)."""
    true = scores.gather(1, labels[:, None])
    violations = (margin - true + scores).clamp_min(0)
    violations = violations.scatter(1, labels[:, None], 0.0)
    total = violations.sum(dim=1)
    if weighted:
        rank = (violations > 0).sum(dim=1)
        steps = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=scores.dtype)
        harmonic = torch.cat([scores.new_zeros(1), (1.0 / steps).cumsum(0)])[rank]
        total = total * harmonic / rank.clamp_min(1)
    return total.mean()


@method
def attribute_embedding(
    embedding_dim: int | None = None,
    class_encoder: str = "linear",
    similarity: str = "dot",
    loss: str = "warp",
    scale: float = 10.0,
    margin: float = 1.0,
) -> Method:
    """Zero-shot learning by attribute embedding (ALE/DeViSE style), on zero-shot domains
    (dataset=zsl_digits, zsl_letters or zsl_xlsa17; source.zsl_split=NAME).
    ``embedding_dim``: the joint space's width (null: the side information's).
    ``class_encoder``: linear (a learned map) or identity (f predicts the side information).
    ``similarity``: dot (ALE's bilinear compatibility) or cosine. ``loss``: warp (ALE's),
    hinge (DeViSE's) or softmax; ``margin`` (warp and hinge: ALE's 1; DeViSE's 0.1 with
    cosine); ``scale`` (softmax only): inverse temperature."""
    model = partial(
        EmbeddingModel,
        embedding_dim=embedding_dim,
        class_encoder=class_encoder,
        similarity=similarity,
    )
    objective = partial(Compatibility, loss=loss, scale=scale, margin=margin)
    return Method("attribute_embedding", [seen_stage(model, objective)])
