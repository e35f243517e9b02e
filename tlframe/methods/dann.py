"""DANN (Ganin & Lempitsky, ICML 2015): domain-adversarial training through gradient reversal.

A domain classifier learns to tell source from target features; the gradient reversal
layer (coefficient lambda_p = 2 / (1 + exp(-gamma p)) - 1) hands the feature extractor the
negated gradient, so the features become indistinguishable across domains while the label
predictor stays accurate:

    loss = CE(source) + trade_off * BCE(domain classifier(GRL_lambda_p(features)), domain)

The learning rate anneals as lr / (1 + 0.001 step)^0.75 (``scheduler=inverse_decay``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.alignment import Alignment, adaptation_stage
from tlframe.models.layers import domain_classifier, reverse_gradient


def domain_adversarial_loss(scores_s: Tensor, scores_t: Tensor, weights: Tensor | None = None):
    """Binary cross-entropy of the domain classifier: source = 1, target = 0."""
    scores = torch.cat([scores_s, scores_t]).squeeze(1)
    labels = torch.cat([torch.ones(len(scores_s)), torch.zeros(len(scores_t))]).to(scores)
    return F.binary_cross_entropy_with_logits(scores, labels, weight=weights)


class DomainAdversarial(Alignment):
    """DANN's domain loss: an MLP domain classifier (``hidden_dims``, batch norm, dropout)
    on the features, behind the gradient reversal layer."""

    def __init__(
        self,
        *,
        model: TransferModel,
        context: StageContext | None = None,
        trade_off: float = 1.0,
        schedule: str = "dann",
        gamma: float = 10.0,
        hidden_dims: Sequence[int] = (1024, 1024),
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__(trade_off=trade_off, schedule=schedule, gamma=gamma)
        self.domain_classifier = domain_classifier(
            model.out_features, hidden_dims=hidden_dims, batch_norm=batch_norm, dropout=dropout
        )

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        f_s, f_t = out.features("source"), out.features("target")
        scores = self.domain_classifier(reverse_gradient(torch.cat([f_s, f_t]), factor))
        n = len(f_s)
        return domain_adversarial_loss(scores[:n], scores[n:])


@method
def dann(alignment: Callable[..., Objective] = DomainAdversarial) -> Method:
    """DANN: labeled source, unlabeled target, same classes."""
    return Method("dann", [adaptation_stage({"alignment": alignment})])
