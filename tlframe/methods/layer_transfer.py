"""Layer transfer: copy the first or last n blocks of the source backbone, freeze them and
train the rest (the other blocks and a new head, freshly initialised) on the target.

Blocks are the backbone's ordered ``blocks``, so ``layers=2`` means the same for lenet,
mlp and resnet. Which layers transfer well is the question of Yosinski et al. (2014):
``experiment=layer_transfer_study`` sweeps n with frozen and with fine-tuned copies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from itertools import takewhile
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from tlframe.engine.context import StageContext
from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.engine.model import BackboneHead
from tlframe.errors import ConfigError
from tlframe.methods.common import budget, source_stage
from tlframe.models.backbones import Backbone

if TYPE_CHECKING:
    import pytorch_lightning as pl

SIDES = ("first", "last")


def check_block_count(value: object, names: list[str], option: str, allowed: str, low: int):
    """``method.<option>`` must count between ``low`` and all of the backbone's blocks."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= len(names):
        raise ConfigError(
            f"method.{option} must be {allowed} {low} to {len(names)} (the backbone's "
            f"blocks: {', '.join(names)}), got {value!r}"
        )


class CopiedBlocks(BackboneHead):
    """A backbone whose ``layers`` blocks from the ``side`` of the source backbone are copied
    (``None``: all) and frozen until ``unfreeze_at_epoch`` (``None``: never), and a new
    head: it belongs to the part trained on the target, so the classes may differ.

    ``keep_blocks=n`` keeps only the first n blocks and puts the head on their flattened
    output (self-taught learning's ``feature_blocks``).
    """

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        context: StageContext,
        side: str,
        layers: int | None,
        unfreeze_at_epoch: int | None,
        keep_blocks: int | None = None,
    ):
        if side not in SIDES:
            raise ConfigError(f"method.side must be first or last, got {side!r}")
        if unfreeze_at_epoch is not None and (
            isinstance(unfreeze_at_epoch, bool)
            or not isinstance(unfreeze_at_epoch, int)
            or unfreeze_at_epoch < 0
        ):
            raise ConfigError(
                f"method.unfreeze_at_epoch must be null (never) or an epoch >= 0, "
                f"got {unfreeze_at_epoch!r}"
            )
        if keep_blocks is not None:  # the head's width is the kept blocks' output's
            backbone = partial(_first_blocks, backbone, keep_blocks)
        super().__init__(backbone=backbone, head=head, context=context, inherit_head="never")
        names = [name for name, _ in self.backbone.blocks.named_children()]
        names = [name for name in names if name != "flatten"]
        layers = len(names) if layers is None else layers
        check_block_count(layers, names, "layers", "an integer from", low=0)
        self.copied = names[:layers] if side == "first" else names[len(names) - layers :]
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def copied_blocks(self) -> list[nn.Module]:
        return [self.backbone.blocks.get_submodule(name) for name in self.copied]

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        source, blocks = parts["backbone"].blocks, self.backbone.blocks
        for name in self.copied:
            blocks.get_submodule(name).load_state_dict(source.get_submodule(name).state_dict())

    def frozen_prefix(self) -> int:
        """The leading blocks in which every part whose output depends on training
        (parameters, buffers such as batch-norm statistics, dropout) is a copy frozen for
        good (``FreezeBlocks`` keeps the copies in eval mode). With ``side=last`` and not
        every block copied, the first block trains: none."""
        if self.unfreeze_at_epoch is not None:
            return 0
        copied = {id(m) for block in self.copied_blocks() for m in block.modules()}

        def fixed(block: nn.Module) -> bool:
            return all(id(m) in copied or not _trains(m) for m in block.modules())

        return len(list(takewhile(fixed, self.backbone.blocks)))

    def callbacks(self, trainer: pl.Trainer) -> list[pl.Callback]:
        from tlframe.engine.callbacks.freeze_blocks import FreezeBlocks

        if not self.copied:
            return []
        return [FreezeBlocks(self.copied_blocks(), self.unfreeze_at_epoch)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Copies that will be unfrozen join the optimizer now, so that one schedule covers
        them; until then they have no gradients, and the optimizer leaves them untouched."""
        if self.unfreeze_at_epoch is None:
            return super().trainable_parameters()
        return list(self.parameters())


def _trains(module: nn.Module) -> bool:
    """Whether a module's own output changes with training or with train/eval mode."""
    own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return bool(own) or isinstance(module, _DropoutNd)


def _first_blocks(backbone: Callable[..., Backbone], n: int, input_shape) -> Backbone:
    """The backbone cut after its n-th block, flattened (later blocks of a self-supervised
    network grow specific to its pretext task: Gidaris et al. 2018)."""
    full = backbone(input_shape=input_shape)
    names = list(full.blocks._modules)
    check_block_count(n, names, "feature_blocks", "null (all blocks) or", low=1)
    kept = OrderedDict((name, full.blocks.get_submodule(name)) for name in names[:n])
    kept["flatten"] = nn.Flatten()
    with torch.no_grad():  # two examples: batch norm in training mode needs more than one
        width = nn.Sequential(kept)(torch.zeros(2, *input_shape)).shape[1]
    return Backbone(kept, width)


@method
def layer_transfer(
    side: str = "first",
    layers: int = 2,
    unfreeze_at_epoch: int | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    init_from: str | None = None,
    selffer: bool = False,
) -> Method:
    """Train on the labeled source (the shared source stage), then copy ``layers`` blocks
    from one ``side`` of its backbone (first: the general, lowest blocks; last: e.g. speech,
    where input layers differ) and train the rest on the labeled target, the copies frozen
    (``unfreeze_at_epoch=null``), fine-tuned (``0``, Yosinski's AnB+) or frozen for that many
    epochs. The fresh blocks train from scratch: at the full learning rate and budget
    (``lr``, ``epochs``: null = the global ones), as target_only has them. Every block
    copied and frozen is a linear probe of the source features: its head trains on
    features computed once (``tlframe.engine.feature_cache``); with the first blocks
    frozen, the rest train on those blocks' output computed once.
    ``selffer=true`` is Yosinski et al.'s BnB control: the copies come from a network
    trained on the target's own labels instead of the source, which separates the
    co-adaptation of the split layers from the specificity of the source's features."""
    model = partial(CopiedBlocks, side=side, layers=layers, unfreeze_at_epoch=unfreeze_at_epoch)
    limits = budget(epochs, lr, ("method.epochs", "method.lr"))
    first = Stage("base", {"target": LABELED}) if selffer else source_stage(init_from)
    target = Stage("target", {"target": LABELED}, model=model, inherits=True, **limits)
    return Method("layer_transfer", [first, target], same_classes=False)
