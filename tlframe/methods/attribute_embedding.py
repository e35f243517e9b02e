"""Attribute embedding: images and class descriptions projected into one space.

f(x) is the backbone followed by a projection (the ``head`` config, sized to the
embedding), g(a) maps a class's side information into the same space (a linear map, as in
ALE / DeViSE, or the identity: f then predicts the attributes themselves). Training makes
f(x) more compatible with g of its own class than with g of any other seen class:

* ``loss=softmax``: cross-entropy over the seen classes' compatibilities (times ``scale``);
* ``loss=hinge``: the ranking hinge of DeViSE (Frome et al. 2013) and ALE (Akata et al.
  2013): the sum over wrong classes c of max(0, margin - s(x, y) + s(x, c)).

An image's class is the candidate whose g(a) is nearest (most compatible).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.methods.zero_shot import ZeroShotModule

ENCODERS = ("linear", "identity")
SIMILARITIES = ("cosine", "dot")
LOSSES = ("softmax", "hinge")


class AttributeEmbedding(ZeroShotModule):
    """Compatibility s(x, c) = sim(f(x), g(a_c)) between an image and each class."""

    def __init__(
        self,
        *,
        head: Callable[..., nn.Module],
        embedding_dim: int | None = None,
        class_encoder: str = "linear",
        similarity: str = "cosine",
        loss: str = "softmax",
        scale: float = 10.0,
        margin: float = 0.1,
        **kwargs,
    ):
        for option, value, choices in (
            ("class_encoder", class_encoder, ENCODERS),
            ("similarity", similarity, SIMILARITIES),
            ("loss", loss, LOSSES),
        ):
            if value not in choices:
                raise ConfigError(f"method.{option}={value!r}; choose one of {', '.join(choices)}")
        super().__init__(head=head, **kwargs)
        side_dim = self.semantic(self.context.task_role).shape[1]
        if class_encoder == "identity" and embedding_dim not in (None, side_dim):
            raise ConfigError(
                f"method.class_encoder=identity embeds into the side information's own "
                f"{side_dim} dimensions; set method.embedding_dim=null"
            )
        dim = embedding_dim or side_dim
        self.head = head(in_features=self.backbone.out_features, num_classes=dim)
        self.class_encoder = nn.Linear(side_dim, dim) if class_encoder == "linear" else None
        self.similarity, self.loss, self.scale, self.margin = similarity, loss, scale, margin

    def embed_classes(self, role: str) -> Tensor:
        """g(a) for every class of ``role``'s domain."""
        side = self.semantic(role)
        return side if self.class_encoder is None else self.class_encoder(side)

    def compatibility(self, embedded: Tensor, classes: Tensor) -> Tensor:
        if self.similarity == "cosine":
            embedded, classes = F.normalize(embedded, dim=1), F.normalize(classes, dim=1)
        return embedded @ classes.T

    def class_scores(self, x: Tensor, role: str) -> Tensor:
        return self.compatibility(self(x), self.embed_classes(role))

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        role = self.context.task_role
        x, y = batch[role]
        seen = self.embed_classes(role)[self.seen_mask(role)]
        scores, labels = self.compatibility(self(x), seen), self.seen_labels(y)
        if self.loss == "softmax":
            return {"compatibility": F.cross_entropy(self.scale * scores, labels)}
        return {"ranking": ranking_hinge(scores, labels, self.margin)}


def ranking_hinge(scores: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Mean over examples of sum_{c != y} max(0, margin - s_y + s_c)."""
    true = scores.gather(1, labels[:, None])
    violations = (margin - true + scores).clamp_min(0)
    violations = violations.scatter(1, labels[:, None], 0.0)
    return violations.sum(dim=1).mean()
