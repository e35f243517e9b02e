"""Progressive neural networks (Rusu et al. 2016): one column per task, earlier ones frozen.

Each stage adds a column (a fresh backbone built from the backbone config, plus a head) for
the domain it trains on. Every earlier column is frozen (``requires_grad=False``, kept in
eval mode so batch-norm statistics stay put, left out of the optimiser), so the earlier
tasks' predictions do not change. The new column's every layer after the first (and its
head) also receives the previous layer's activations of all earlier columns through
non-linear lateral adapters, added to the layer's pre-activation as in the paper:

    h_k^l = f(W_k^l h_k^{l-1} + sum_{j<k} U_{k:j}^l relu(V_{k:j}^l alpha_{k:j}^l h_j^{l-1}))

alpha is a learned scalar (initialised to a small random value), V a projection that keeps
the width (a 1x1 convolution between image activations), U has the geometry of the layer's
own weight W (the same convolution or linear map). The pre-activation is the output of a
block's first convolution or linear layer; a block without one (a ResNet stage) takes its
laterals at its input. Deviation: each earlier column has its own adapter, summed, where
the paper concatenates the earlier columns into one (the same for two columns).

``laterals=input`` is tlframe's earlier form: linear adapters (1x1 convolutions between
image activations) added to the layer's input, h_k^l = f_k^l(h_k^{l-1} + sum U h_j^{l-1}).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import CrossEntropy
from tlframe.errors import ConfigError
from tlframe.models.backbones import Backbone
from tlframe.models.modes import eval_mode

LATERALS = ("adapter", "input")
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def input_adapter(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """Map an earlier column's activation of shape ``source`` onto shape ``target``."""
    if len(source) == 3 and len(target) == 3 and source[1:] == target[1:]:
        return nn.Conv2d(source[0], target[0], kernel_size=1)
    layers: list[nn.Module] = [nn.Flatten()] if len(source) > 1 else []
    layers.append(nn.Linear(math.prod(source), math.prod(target)))
    if len(target) > 1:
        layers.append(nn.Unflatten(1, target))
    return nn.Sequential(*layers)


def weight_split(layer: nn.Module) -> int | None:
    """Where a layer's pre-activation is: after its first convolution or linear map, when
    only reshaping modules (Flatten) come before it; ``None`` otherwise."""
    modules = list(layer) if isinstance(layer, nn.Sequential) else [layer]
    for index, module in enumerate(modules):
        if isinstance(module, WEIGHT_LAYERS):
            return index + 1
        if not isinstance(module, nn.Flatten):
            return None
    return None


def mirrored(weight: nn.Module) -> nn.Module:
    """A fresh map with the geometry of ``weight`` (a Conv2d or Linear), without bias."""
    if isinstance(weight, nn.Conv2d):
        return nn.Conv2d(
            weight.in_channels,
            weight.out_channels,
            weight.kernel_size,
            weight.stride,
            weight.padding,
            weight.dilation,
            bias=False,
        )
    return nn.Linear(weight.in_features, weight.out_features, bias=False)


class NonLinearLateral(nn.Module):
    """U relu(V alpha h_j) for the pre-activation of ``layer``, whose input has the shape
    ``source`` of h_j: the layer's reshaping modules and U shaped like its weight W."""

    def __init__(self, source: tuple[int, ...], layer: nn.Module, split: int):
        """``source``: (C, H, W) or (width,)."""
        super().__init__()
        modules = list(layer) if isinstance(layer, nn.Sequential) else [layer]
        self.alpha = nn.Parameter(0.1 * torch.rand(()))
        width = source[0]
        self.project = nn.Conv2d(width, width, 1) if len(source) == 3 else nn.Linear(width, width)
        reshapes = [copy.deepcopy(m) for m in modules[: split - 1]]
        self.to_layer = nn.Sequential(*reshapes, mirrored(modules[split - 1]))

    def forward(self, h: Tensor) -> Tensor:
        return self.to_layer(torch.relu(self.project(self.alpha * h)))


class ProgressiveNet(nn.Module):
    """Columns with their heads and lateral adapters; all columns but the last are frozen.
    ``laterals``: ``adapter`` (the paper's, into pre-activations) or ``input``."""

    def __init__(self, laterals: str = "adapter"):
        super().__init__()
        if laterals not in LATERALS:
            raise ConfigError(f"method.laterals must be one of {LATERALS}, got {laterals!r}")
        self.lateral_form = laterals
        self.columns = nn.ModuleList()
        self.heads = nn.ModuleList()
        # laterals[k][l][j]: from column j's output of block l into column k's block l + 1
        # (the head when l is the last block); empty for the first column.
        self.laterals = nn.ModuleList()
        self.roles: list[str] = []

    def add_column(self, column: Backbone, head: nn.Module, role: str, input_shape) -> None:
        """Freeze every existing column, then append ``column`` with laterals from them."""
        for part in (self.columns, self.heads, self.laterals):
            part.requires_grad_(False)
        shapes = _block_output_shapes(column, input_shape)
        earlier = [_block_output_shapes(c, input_shape) for c in self.columns]
        receivers = [*list(column.blocks)[1:], head]  # the layer each level's output feeds
        self.laterals.append(
            nn.ModuleList(
                nn.ModuleList(
                    self._adapter(prior[level], shapes[level], receivers[level])
                    for prior in earlier
                )
                for level in range(len(shapes))
            )
            if earlier
            else nn.ModuleList()
        )
        self.columns.append(column)
        self.heads.append(head)
        self.roles.append(role)
        self._keep_frozen_in_eval()

    def _adapter(self, source, own, receiver: nn.Module) -> nn.Module:
        """The lateral from an earlier column's output (shape ``source``) into the layer
        ``receiver``, whose input (this column's output) has shape ``own``."""
        split = weight_split(receiver)
        if self.lateral_form == "adapter" and split is not None and len(source) in (1, 3):
            return NonLinearLateral(source, receiver, split)
        return input_adapter(source, own)

    @property
    def frozen(self) -> list[nn.Module]:
        """What earlier tasks own: their columns, heads and the laterals into them."""
        last = len(self.columns) - 1
        return [m for part in (self.columns, self.heads, self.laterals) for m in part[:last]]

    def train(self, mode: bool = True) -> ProgressiveNet:
        super().train(mode)
        self._keep_frozen_in_eval()
        return self

    def _keep_frozen_in_eval(self) -> None:
        """Frozen batch-norm/dropout behave as at test time, so earlier tasks' predictions
        stay bit-identical; checked on every forward because Lightning restores recorded
        train/eval flags module by module, bypassing ``train()``."""
        for module in self.frozen:
            for sub in module.modules():
                sub.training = False

    def forward(self, x: Tensor, index: int = -1) -> Tensor:
        """Logits of column ``index`` (its task's head) for inputs ``x``."""
        index = index % len(self.columns)
        if self.training:
            self._keep_frozen_in_eval()
        outputs: list[list[Tensor]] = []  # outputs[j][l]: column j's output of block l
        for k in range(index + 1):
            h, own = x, []
            for level, block in enumerate(self.columns[k].blocks):
                h = block(h) if level == 0 else self._layer(block, h, k, level - 1, outputs)
                own.append(h)
            outputs.append(own)
        last = len(outputs[index]) - 1
        return self._layer(self.heads[index], outputs[index][-1], index, last, outputs)

    def _layer(self, layer: nn.Module, h: Tensor, k: int, level: int, outputs) -> Tensor:
        """Column ``k``'s ``layer`` on its input ``h``, with the laterals from the earlier
        columns' outputs of block ``level`` (at its pre-activation, or at its input)."""
        adapters = list(self.laterals[k][level]) if k else []
        if not adapters:
            return layer(h)
        laterals = [adapter(outputs[j][level]) for j, adapter in enumerate(adapters)]
        if isinstance(adapters[0], NonLinearLateral):
            modules = list(layer) if isinstance(layer, nn.Sequential) else [layer]
            split = weight_split(layer)
            z = nn.Sequential(*modules[:split])(h) + sum(laterals)
            return nn.Sequential(*modules[split:])(z)
        return layer(h + sum(laterals))


class ProgressiveModel(TransferModel):
    """The progressive network of the stages so far: this stage's task gets a new column
    (a backbone built from the backbone config, plus a head); an earlier stage's network,
    taken over with ``inherit``, keeps its columns frozen and feeds the new one laterally."""

    has_features = False  # a column's head reads its laterals too

    def __init__(
        self,
        *,
        backbone: Callable[..., Backbone],
        head: Callable[..., nn.Module],
        context: StageContext,
        laterals: str = "adapter",
    ):
        super().__init__()
        task = context.task
        column = backbone(input_shape=task.input_shape)
        self.input_shape = task.input_shape
        self.role = context.task_role
        self.net = ProgressiveNet(laterals)
        self.net.add_column(
            column,
            head(in_features=column.out_features, num_classes=task.num_classes),
            self.role,
            self.input_shape,
        )

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        """The earlier stages' network, frozen, with this stage's column added to it."""
        net = copy.deepcopy(parts["net"])
        net.add_column(self.net.columns[-1], self.net.heads[-1], self.role, self.input_shape)
        self.net = net

    def parts(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def features_and_logits(self, x: Tensor, role: str) -> tuple[None, Tensor]:
        """A task learned so far is predicted by its own column; any other by the newest.
        No features: a column's head reads its laterals as well."""
        roles = self.net.roles
        return None, self.net(x, roles.index(role) if role in roles else -1)


def _block_output_shapes(column: Backbone, input_shape) -> list[tuple[int, ...]]:
    """Per-example output shape of every block of ``column`` (probed in eval mode)."""
    shapes, h = [], torch.zeros(2, *input_shape)
    with torch.no_grad(), eval_mode(column):
        for block in column.blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


@method
def progressive(shuffle_source_labels: bool = False, laterals: str = "adapter") -> Method:
    """Progressive neural networks: a source column, then a target column with laterals
    (``data.target_labels``: all or k per class). ``shuffle_source_labels``: the control
    whose source column learns nothing useful (labels shuffled within each batch).
    Evaluation reports every task learned so far: test/source/acc through column 1
    (unchanged by the target stage), test/target/acc through column 2. ``laterals``:
    ``adapter`` (the paper's) or ``input`` (tlframe's earlier linear laterals)."""
    model = partial(ProgressiveModel, laterals=laterals)
    source = Stage(
        "source",
        {"source": "all"},
        model=model,
        objectives={"cls": partial(CrossEntropy, shuffle_labels=shuffle_source_labels)},
    )
    target = Stage("target", {"target": LABELED}, model=model, inherits=True)
    return Method("progressive", [source, target], same_classes=False)
