"""CDAN (Long et al., NeurIPS 2018): conditional domain-adversarial training.

The domain classifier sees the multilinear map of features and class predictions
(f outer g), so it aligns the joint distribution rather than the features alone. With
entropy conditioning (CDAN+E) confident examples weigh more: w = 1 + exp(-H(g)).
Above ``max_joint_dim`` the map is replaced by its randomized version.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tlframe.methods.adaptation import AdaptationModule
from tlframe.methods.dann import domain_adversarial_loss
from tlframe.models.layers import reverse_gradient


class MultilinearMap(nn.Module):
    """f (x) g, flattened; or (f R_f) * (g R_g) / sqrt(d) with fixed random R when too wide."""

    def __init__(self, feature_dim: int, num_classes: int, max_joint_dim: int = 4096):
        super().__init__()
        self.randomized = feature_dim * num_classes > max_joint_dim
        self.out_features = max_joint_dim if self.randomized else feature_dim * num_classes
        if self.randomized:
            self.register_buffer("r_f", torch.randn(feature_dim, max_joint_dim))
            self.register_buffer("r_g", torch.randn(num_classes, max_joint_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / self.out_features**0.5
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def entropy_weights(probs: Tensor) -> Tensor:
    """1 + exp(-H(p)) per example, normalised to sum to the batch size."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
    weights = 1.0 + torch.exp(-entropy)
    return weights / weights.sum() * len(weights)


class CDAN(AdaptationModule):
    def __init__(
        self,
        *args,
        domain_classifier: Callable[..., nn.Module],
        entropy_conditioning: bool = True,
        max_joint_dim: int = 4096,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        num_classes = len(self.class_names)
        self.joint = MultilinearMap(self.backbone.out_features, num_classes, max_joint_dim)
        self.domain_classifier = domain_classifier(in_features=self.joint.out_features)
        self.entropy_conditioning = entropy_conditioning

    def alignment_loss(self, f_s, f_t, logits_s, logits_t, factor: float) -> Tensor:
        probs = torch.cat([logits_s, logits_t]).softmax(dim=1).detach()
        joint = self.joint(torch.cat([f_s, f_t]), probs)
        scores = self.domain_classifier(reverse_gradient(joint, factor))
        n = len(f_s)
        weights = entropy_weights(probs) if self.entropy_conditioning else None
        return domain_adversarial_loss(scores[:n], scores[n:], weights)
