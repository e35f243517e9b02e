"""Progressive neural networks (Rusu et al. 2016): one column per task, earlier ones frozen.

Each stage adds a column (a fresh backbone built from the backbone config, plus a head) for
the domain it trains on. Every earlier column is frozen (``requires_grad=False``, kept in
eval mode so batch-norm statistics stay put, left out of the optimiser), so the earlier
tasks' predictions do not change. The new column's every layer after the first (and its
head) also receives, through trained lateral adapters, the previous layer's activations of
all earlier columns: ``h_k^l = f_k^l(h_k^{l-1} + sum_{j<k} U_{k:j}^l h_j^{l-1})``.
Adapters are 1x1 convolutions between image activations and linear maps otherwise
(flattening a conv activation that feeds a fully connected layer).
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
from tlframe.models.backbones import Backbone
from tlframe.models.modes import eval_mode


def lateral_adapter(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """Map an earlier column's activation of shape ``source`` onto shape ``target``."""
    if len(source) == 3 and len(target) == 3 and source[1:] == target[1:]:
        return nn.Conv2d(source[0], target[0], kernel_size=1)
    layers: list[nn.Module] = [nn.Flatten()] if len(source) > 1 else []
    layers.append(nn.Linear(math.prod(source), math.prod(target)))
    if len(target) > 1:
        layers.append(nn.Unflatten(1, target))
    return nn.Sequential(*layers)


class ProgressiveNet(nn.Module):
    """Columns with their heads and lateral adapters; all columns but the last are frozen."""

    def __init__(self):
        super().__init__()
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
        self.laterals.append(
            nn.ModuleList(
                nn.ModuleList(lateral_adapter(prior[level], shapes[level]) for prior in earlier)
                for level in range(len(shapes))
            )
            if earlier
            else nn.ModuleList()
        )
        self.columns.append(column)
        self.heads.append(head)
        self.roles.append(role)
        self._keep_frozen_in_eval()

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
                if level > 0:
                    h = self._with_laterals(h, k, level - 1, outputs)
                h = block(h)
                own.append(h)
            outputs.append(own)
        features = self._with_laterals(outputs[index][-1], index, len(outputs[index]) - 1, outputs)
        return self.heads[index](features)

    def _with_laterals(self, h: Tensor, k: int, level: int, outputs) -> Tensor:
        for j, adapter in enumerate(self.laterals[k][level] if k else ()):
            h = h + adapter(outputs[j][level])
        return h


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
    ):
        super().__init__()
        task = context.task
        column = backbone(input_shape=task.input_shape)
        self.input_shape = task.input_shape
        self.role = context.task_role
        self.net = ProgressiveNet()
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
def progressive(shuffle_source_labels: bool = False) -> Method:
    """Progressive neural networks: a source column, then a target column with laterals
    (``data.target_labels``: all or k per class). ``shuffle_source_labels``: the control
    whose source column learns nothing useful (labels shuffled within each batch).
    Evaluation reports every task learned so far: test/source/acc through column 1
    (unchanged by the target stage), test/target/acc through column 2."""
    source = Stage(
        "source",
        {"source": "all"},
        model=ProgressiveModel,
        objectives={"cls": partial(CrossEntropy, shuffle_labels=shuffle_source_labels)},
    )
    target = Stage("target", {"target": LABELED}, model=ProgressiveModel, inherits=True)
    return Method("progressive", [source, target], same_classes=False)
