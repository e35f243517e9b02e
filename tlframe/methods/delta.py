"""DELTA (Li et al., ICLR 2019): deep learning transfer using feature maps with attention.

Fine-tuning (``method.tuning``) whose target stage keeps the network's behaviour, not its
weights, close to the source model's: the outer feature maps (here the backbone's blocks
with image-shaped outputs, e.g. LeNet's two convolutions) stay near the frozen source
model's on the same inputs, channel by channel, weighted by how much each channel matters
to the target task; a new head is kept small by an L2 penalty:

    loss = CE(target) + alpha * sum_layers sum_j W_j ||FM_j(w, x) - FM_j(w0, x)||^2
                      + beta * ||w_head||^2 / 2

with the squared distance averaged over the map's positions, and alpha = beta = 0.01.
The attention W_j is measured once, before training, on the labeled target examples: a
logistic-regression head fitted on the source model's features, then the increase of its
loss when channel j's map is zeroed; the increases are standardised and passed through a
softmax at temperature 5 (the reference implementation's normalisation), and scaled by
the number of channels so that uniform attention weighs every channel 1.

Deviation: a channel is removed by zeroing its output map (the paper zeroes its filter,
which leaves the bias).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.data.domain import batches
from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.model import BackboneHead
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.methods.finetune import FineTuning, fine_tuning_stages
from tlframe.models.layers import Frozen
from tlframe.models.modes import eval_mode

MAX_ATTENTION_EXAMPLES = 1024  # enough to rank channels; a bound on the one-off cost


def feature_maps(blocks: nn.Sequential, x: Tensor, levels: list[int]) -> list[Tensor]:
    """The outputs of ``blocks`` at ``levels`` for inputs ``x``."""
    maps, h = [], x
    for level, block in enumerate(blocks):
        h = block(h)
        if level in levels:
            maps.append(h)
        if level >= max(levels):
            break
    return maps


def image_levels(blocks: nn.Sequential, x: Tensor) -> list[int]:
    """The blocks whose outputs are image-shaped feature maps, for inputs like ``x``."""
    levels, h = [], x
    for level, block in enumerate(blocks):
        h = block(h)
        if h.dim() == 4:
            levels.append(level)
    if not levels:
        raise ConfigError(
            "method=delta regularises convolutional feature maps, and this backbone has no "
            "block with image-shaped outputs; use method=l2sp for fully connected backbones"
        )
    return levels


def labeled_examples(split, limit: int) -> tuple[Tensor, Tensor]:
    """At most ``limit`` examples of a labeled split, with their labels."""
    xs, ys, count = [], [], 0
    for x, y in batches(split):
        xs.append(x), ys.append(torch.as_tensor(y))
        count += len(x)
        if count >= limit:
            break
    return torch.cat(xs)[:limit], torch.cat(ys)[:limit]


@torch.no_grad()
def measure_attention(
    blocks: nn.Sequential, x: Tensor, y: Tensor, levels: list[int]
) -> list[Tensor]:
    """Per level, the attention of its channels: the loss increase of a logistic-regression
    head on the final features when the channel's map is zeroed."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    features = blocks(x).flatten(1)
    with threadpool_limits(1):
        fitted = LogisticRegression(max_iter=1000).fit(features.cpu().numpy(), y.cpu().numpy())
    weight = torch.as_tensor(fitted.coef_, dtype=features.dtype, device=x.device)
    bias = torch.as_tensor(fitted.intercept_, dtype=features.dtype, device=x.device)
    classes = torch.as_tensor(fitted.classes_, device=x.device)
    if len(classes) == 2:  # sklearn's binary form: one score for the second class
        weight, bias = torch.cat([-weight, weight]) / 2, torch.cat([-bias, bias]) / 2
    target = torch.searchsorted(classes, y)

    def loss_without(level: int | None, channel: int = 0) -> float:
        h = x
        for index, block in enumerate(blocks):
            h = block(h)
            if index == level:
                h = h.clone()
                h[:, channel] = 0
        return F.cross_entropy(h.flatten(1) @ weight.T + bias, target).item()

    base = loss_without(None)
    attention = []
    for level in levels:
        channels = feature_maps(blocks, x[:1], [level])[0].shape[1]
        losses = torch.tensor([loss_without(level, j) for j in range(channels)])
        attention.append(channel_attention(losses, base).to(x.device))
    return attention


def map_distance(student: Tensor, teacher: Tensor, attention: Tensor) -> Tensor:
    """sum_j attention_j * mean over positions of (student_j - teacher_j)^2, averaged over
    the batch, for [N, C, H, W] maps."""
    per_channel = (student - teacher).pow(2).flatten(2).mean(dim=2)  # [N, C]
    return (per_channel * attention).sum(dim=1).mean()


def channel_attention(losses: Tensor, base: float, temperature: float = 5.0) -> Tensor:
    """Attention from the loss with each channel removed: standardised increases, softmax at
    ``temperature``, times the channel count."""
    increase = losses - base
    spread = increase.std()
    z = (increase - increase.mean()) / (spread if spread > 0 else 1.0)
    return len(losses) * F.softmax(z / temperature, dim=0)


class FeatureMapRegularization(Objective):
    """DELTA's two terms: ``alpha`` times the attention-weighted feature-map distance to the
    source model (``delta``) and ``beta / 2`` times a new head's squared norm
    (``l2_head``; none for a head kept from the source)."""

    needs_labels = True

    def __init__(
        self,
        *,
        model: BackboneHead,
        context: StageContext,
        alpha: float = 0.01,
        beta: float = 0.01,
        **parts: Any,
    ):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        with torch.no_grad(), eval_mode(model.backbone):  # refuse a backbone without maps now
            probe = torch.zeros(2, *context.task.input_shape)
            self.levels = image_levels(model.backbone.blocks, probe)
        self.attention: list[Tensor] = []  # measured before training

    def inherit(self, parts: Mapping[str, nn.Module], model: BackboneHead) -> None:
        self.source = Frozen(parts["backbone"])

    @torch.no_grad()
    def on_train_start(self, engine) -> None:
        split = engine.trainer.datamodule.labeled_train_split("target")
        x, y = labeled_examples(split, MAX_ATTENTION_EXAMPLES)
        blocks = self.source.model.to(engine.device).eval().blocks
        x, y = x.to(engine.device), y.to(engine.device)
        self.attention = measure_attention(blocks, x, y, self.levels)

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        role = out.labeled_roles()[0]
        x = out.x(role)
        student = feature_maps(out.model.backbone.blocks, x, self.levels)
        with torch.no_grad():
            self.source.model.eval()
            teacher = feature_maps(self.source.model.blocks, x, self.levels)
        distance = sum(
            map_distance(s, t, a) for s, t, a in zip(student, teacher, self.attention, strict=True)
        )
        terms = {"delta": self.alpha * distance}
        if not out.model.head_inherited:
            head = sum((w**2).sum() for w in out.model.head.parameters())
            terms["l2_head"] = self.beta / 2 * head
        return terms


@method
def delta(
    tuning: FineTuning = FineTuning(keep_head=False),
    regularization: Callable[..., Objective] = FeatureMapRegularization,
) -> Method:
    """DELTA: fine-tuning with a new head, its feature maps kept near the source model's
    where the target task needs them."""
    stages = fine_tuning_stages(tuning, {"delta": regularization}, optimizer={"weight_decay": 0.0})
    return Method(tuning.named("delta"), stages, same_classes=tuning.keep_head)
