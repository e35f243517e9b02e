"""ConSE: convex combination of semantic embeddings (Norouzi et al. 2014).

An ordinary classifier over the seen classes (backbone + head, cross-entropy). An image
is mapped into the semantic space as the convex combination of its top-T seen classes'
vectors, weighted by their renormalised probabilities,

    f(x) = 1/Z * sum_{t=1..T} p(y_t | x) s(y_t),    Z = sum_{t=1..T} p(y_t | x),

and labeled with the candidate class whose vector is nearest by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.methods.zero_shot import ZeroShotModule


class ConSE(ZeroShotModule):
    """A seen-class classifier whose top-T probabilities weight the seen classes' vectors."""

    def __init__(self, *, head: Callable[..., nn.Module], top_t: int = 10, **kwargs):
        if isinstance(top_t, bool) or not isinstance(top_t, int) or top_t < 1:
            raise ConfigError(f"method.top_t={top_t!r} must be an integer >= 1")
        super().__init__(head=head, **kwargs)
        num_seen = int(self.seen_mask(self.context.task_role).sum())
        self.head = head(in_features=self.backbone.out_features, num_classes=num_seen)
        self.top_t = top_t

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        x, y = batch[self.context.task_role]
        return {"cls_source": F.cross_entropy(self(x), self.seen_labels(y))}

    def class_scores(self, x: Tensor, role: str) -> Tensor:
        source = self.context.task_role
        seen_vectors = self.semantic(source)[self.seen_mask(source)]
        embedded = convex_combination(self(x).softmax(dim=1), seen_vectors, self.top_t)
        return F.normalize(embedded, dim=1) @ F.normalize(self.semantic(role), dim=1).T


def convex_combination(probs: Tensor, vectors: Tensor, top_t: int) -> Tensor:
    """``[B, dim]``: each row's top-``top_t`` classes' vectors, weighted by their
    probabilities renormalised to sum to one."""
    top_p, top_i = probs.topk(min(top_t, probs.shape[1]), dim=1)
    weights = top_p / top_p.sum(dim=1, keepdim=True)
    return torch.einsum("bt,btd->bd", weights, vectors[top_i])
