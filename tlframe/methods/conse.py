"""ConSE: convex combination of semantic embeddings (Norouzi et al. 2014).

An ordinary classifier over the seen classes (backbone + head, cross-entropy). An image
is mapped into the semantic space as the convex combination of its top-T seen classes'
vectors, weighted by their renormalised probabilities,

    f(x) = 1/Z * sum_{t=1..T} p(y_t | x) s(y_t),    Z = sum_{t=1..T} p(y_t | x),

and labeled with the candidate class whose vector is nearest by cosine similarity.
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


class SeenClassifier(ZeroShotModel):
    """A classifier over the seen classes whose top-T probabilities weight the seen classes'
    vectors."""

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        context: StageContext,
        top_t: int,
    ):
        if isinstance(top_t, bool) or not isinstance(top_t, int) or top_t < 1:
            raise ConfigError(f"method.top_t={top_t!r} must be an integer >= 1")
        super().__init__(context=context)
        num_seen = int(self.seen_mask(self.task_role).sum())
        self.backbone = backbone(input_shape=context.task.input_shape)
        self.head = head(in_features=self.backbone.out_features, num_classes=num_seen)
        self.top_t = top_t

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def scores_of(self, features: Tensor, role: str) -> Tensor:
        source = self.task_role
        seen_vectors = self.semantic(source)[self.seen_mask(source)]
        probs = self.head(features).softmax(dim=1)
        embedded = convex_combination(probs, seen_vectors, self.top_t)
        return F.normalize(embedded, dim=1) @ F.normalize(self.semantic(role), dim=1).T


class SeenCrossEntropy(Objective):
    """Cross-entropy over the seen classes, as ``cls_source``."""

    needs_labels = True

    def __init__(self, **parts: Any):
        super().__init__()

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        model, role = out.model, out.model.task_role
        return {"cls_source": F.cross_entropy(model(out.x(role)), model.seen_labels(out.y(role)))}


def convex_combination(probs: Tensor, vectors: Tensor, top_t: int) -> Tensor:
    """``[B, dim]``: each row's top-``top_t`` classes' vectors, weighted by their
    probabilities renormalised to sum to one."""
    top_p, top_i = probs.topk(min(top_t, probs.shape[1]), dim=1)
    weights = top_p / top_p.sum(dim=1, keepdim=True)
    return torch.einsum("bt,btd->bd", weights, vectors[top_i])


@method
def conse(top_t: int = 10) -> Method:
    """Zero-shot learning by ConSE on zero-shot domains (dataset=zsl_digits, zsl_letters or
    zsl_xlsa17; source.zsl_split=NAME). ``top_t``: T, the seen classes combined (the paper's
    T=10; at most all seen)."""
    model = partial(SeenClassifier, top_t=top_t)
    return Method("conse", [seen_stage(model, SeenCrossEntropy)])
