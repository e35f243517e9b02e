"""CDAN (Long et al., NeurIPS 2018): conditional domain-adversarial training.

The domain classifier sees the multilinear map of features and class predictions
(f outer g), so it aligns the joint distribution rather than the features alone. With
entropy conditioning (CDAN+E) confident examples weigh more: w = 1 + exp(-H(g)).
As in the paper, a map wider than ``max_joint_dim`` = 4096 is replaced by its randomized
version of ``randomized_dim`` = 1024 dimensions (tlframe's earlier variant:
``randomized_dim=4096``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs, entropy
from tlframe.methods.alignment import Alignment, adaptation_stage
from tlframe.methods.dann import domain_adversarial_loss
from tlframe.models.layers import domain_classifier, reverse_gradient


class MultilinearMap(nn.Module):
    """f (x) g, flattened; or, wider than ``max_joint_dim``, (f R_f) * (g R_g) / sqrt(d)
    with fixed Gaussian R of ``randomized_dim`` = d columns."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        max_joint_dim: int = 4096,
        randomized_dim: int = 1024,
    ):
        super().__init__()
        self.randomized = feature_dim * num_classes > max_joint_dim
        self.out_features = randomized_dim if self.randomized else feature_dim * num_classes
        if self.randomized:
            self.register_buffer("r_f", torch.randn(feature_dim, randomized_dim))
            self.register_buffer("r_g", torch.randn(num_classes, randomized_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / self.out_features**0.5
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def entropy_weights(probs: Tensor) -> Tensor:
    """1 + exp(-H(p)) per example, normalised to sum to the batch size."""
    weights = 1.0 + torch.exp(-entropy(probs))
    return weights / weights.sum() * len(weights)


class ConditionalAdversarial(Alignment):
    """CDAN's domain loss on the multilinear map of features and predictions."""

    def __init__(
        self,
        *,
        model: TransferModel,
        context: StageContext,
        trade_off: float = 1.0,
        schedule: str = "dann",
        gamma: float = 10.0,
        entropy_conditioning: bool = True,
        max_joint_dim: int = 4096,
        randomized_dim: int = 1024,
        hidden_dims: Sequence[int] = (1024, 1024),
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__(trade_off=trade_off, schedule=schedule, gamma=gamma)
        self.joint_map = MultilinearMap(
            model.out_features, context.task.num_classes, max_joint_dim, randomized_dim
        )
        self.domain_classifier = domain_classifier(
            self.joint_map.out_features,
            hidden_dims=hidden_dims,
            batch_norm=batch_norm,
            dropout=dropout,
        )
        self.entropy_conditioning = entropy_conditioning

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        f_s, f_t = out.features("source"), out.features("target")
        probs = torch.cat([out.logits("source"), out.logits("target")]).softmax(dim=1).detach()
        joint = self.joint_map(torch.cat([f_s, f_t]), probs)
        scores = self.domain_classifier(reverse_gradient(joint, factor))
        n = len(f_s)
        weights = entropy_weights(probs) if self.entropy_conditioning else None
        return domain_adversarial_loss(scores[:n], scores[n:], weights)


@method
def cdan(alignment: Callable[..., Objective] = ConditionalAdversarial) -> Method:
    """CDAN: labeled source, unlabeled target, same classes."""
    return Method("cdan", [adaptation_stage({"alignment": alignment})])
