"""DANN (Ganin & Lempitsky, ICML 2015): domain-adversarial training through gradient reversal.

A domain classifier learns to tell source from target features; the gradient reversal
layer (coefficient lambda_p) hands the feature extractor the negated gradient, so the
features become indistinguishable across domains while the label predictor stays accurate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.methods.adaptation import AdaptationModule
from tlframe.models.layers import reverse_gradient


def domain_adversarial_loss(scores_s: Tensor, scores_t: Tensor, weights: Tensor | None = None):
    """Binary cross-entropy of the domain classifier: source = 1, target = 0."""
    scores = torch.cat([scores_s, scores_t]).squeeze(1)
    labels = torch.cat([torch.ones(len(scores_s)), torch.zeros(len(scores_t))]).to(scores)
    return F.binary_cross_entropy_with_logits(scores, labels, weight=weights)


class DANN(AdaptationModule):
    def __init__(self, *args, domain_classifier: Callable[..., nn.Module], **kwargs):
        super().__init__(*args, **kwargs)
        self.domain_classifier = domain_classifier(in_features=self.backbone.out_features)

    def alignment_loss(self, f_s, f_t, logits_s, logits_t, factor: float) -> Tensor:
        reversed_features = reverse_gradient(torch.cat([f_s, f_t]), factor)
        scores = self.domain_classifier(reversed_features)
        n = len(f_s)
        return domain_adversarial_loss(scores[:n], scores[n:])
