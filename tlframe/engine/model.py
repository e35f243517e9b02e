"""The model a stage trains, behind one interface the engine, objectives and tools use.

A model answers two questions about a batch of one domain's examples, ``features`` and
``logits`` (``features_and_logits`` gives both from one pass), names the parts a later stage
builds on (``parts``) and takes over those of an earlier stage (``inherit``, called by the
stage runner once the model is built). Every model is built by a factory with the uniform
signature ``model(backbone=<backbone builder>, head=<head builder>, context=StageContext)``.

``BackboneHead`` is the model of most methods: a backbone (ordered blocks) and a head, plus
task heads added by a method for other domains' tasks (LwF's old-task head).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tlframe.engine.context import StageContext
from tlframe.errors import ConfigError

if TYPE_CHECKING:
    import pytorch_lightning as pl

HEAD_INHERITANCE = ("fit", "required", "never")


class TransferModel(nn.Module):
    """What a method trains; subclasses implement ``features_and_logits`` and ``parts``.
    ``has_features``: whether it gives one feature vector per example, which tools such
    as the feature-space picture read."""

    has_features = True

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor | None, Tensor]:
        """Features (None where the model has no single feature vector) and class logits
        for a batch of ``role``'s examples."""
        raise NotImplementedError

    def logits(self, x: Tensor, role: str) -> Tensor:
        return self.features_and_logits(x, role)[1]

    def features(self, x: Tensor, role: str) -> Tensor:
        features, _ = self.features_and_logits(x, role)
        if features is None:
            raise ConfigError(f"{type(self).__name__} has no single feature vector per example")
        return features

    def joint_features_and_logits(self, xs: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Features and logits of several domains' batches from one pass over their
        concatenation (batch-norm statistics over all of them, as adaptation methods use)."""
        raise ConfigError(f"{type(self).__name__} cannot read several domains in one pass")

    def parts(self) -> dict[str, nn.Module]:
        """The trained parts a later stage may build on."""
        raise NotImplementedError

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        """Take over an earlier stage's parts; called by the stage runner after construction.
        A model that builds on nothing ignores them."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def callbacks(self, trainer: pl.Trainer) -> list[pl.Callback]:
        """Lightning callbacks the model needs while it is fitted (e.g. freezing blocks)."""
        return []

    def on_train_start(self) -> None:
        """Called when fitting starts, after Lightning has put every module in train mode."""


class BackboneHead(TransferModel):
    """A backbone and a head for the stage's task (the first labeled training domain).

    ``inherit_head``: ``fit`` copies an earlier stage's head when its shapes fit, ``required``
    copies it or stops (fine-tuning that keeps the source head), ``never`` keeps the new
    head. ``freeze_bn_stats`` keeps batch-norm layers in eval mode while training (their
    scale and shift still train): they keep the running statistics they inherited, since
    batches drawn from a few labeled examples per class estimate no population's.
    ``train_head=False`` keeps the head as built or inherited (SHOT's source hypothesis).
    ``warmup_epochs``: only the head trains for that many epochs, then everything (LwF's
    warm-up of a new head). ``adapter`` (parameter-efficient fine-tuning, e.g. LoRA:
    ``tlframe.models.adapters``) is injected into the backbone once it holds the inherited
    weights, which it freezes and adapts (injected at construction, the earlier stage's
    weights would no longer load: peft renames the layers it wraps).
    """

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        context: StageContext,
        inherit_head: str = "fit",
        freeze_bn_stats: bool = False,
        train_head: bool = True,
        warmup_epochs: int = 0,
        adapter: Callable[[nn.Module], None] | None = None,
    ):
        super().__init__()
        if inherit_head not in HEAD_INHERITANCE:
            raise ConfigError(
                f"inherit_head must be one of {HEAD_INHERITANCE}, got {inherit_head!r}"
            )
        task = context.task
        self.backbone = backbone(input_shape=task.input_shape)
        self.head = head(in_features=self.backbone.out_features, num_classes=task.num_classes)
        self.task_heads = nn.ModuleDict()  # heads of other domains' tasks, by role
        self.inherit_head = inherit_head
        self.freeze_bn_stats = freeze_bn_stats
        self.head.requires_grad_(train_head)
        self.head_inherited = False
        self.warmup_epochs = warmup_epochs
        self.adapter = adapter
        # Set by the stage runner while it fits on features computed once: batches then
        # hold the output of the backbone's frozen prefix, and only these blocks after it
        # run (tlframe.engine.feature_cache); None: batches hold inputs. A tuple, so the
        # blocks stay registered once, under the backbone.
        self.blocks_after_cache: tuple[nn.Module, ...] | None = None

    @property
    def out_features(self) -> int:
        return self.backbone.out_features

    def head_for(self, role: str) -> nn.Module:
        return self.task_heads[role] if role in self.task_heads else self.head  # noqa: SIM401

    def embed(self, x: Tensor) -> Tensor:
        """The backbone's features of a batch; only its blocks after the cached prefix
        when the batch holds that prefix's output."""
        if self.blocks_after_cache is None:
            return self.backbone(x)
        for block in self.blocks_after_cache:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        features = self.embed(x)
        return features, self.head_for(role)(features)

    def joint_features_and_logits(self, xs: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        features = self.embed(torch.cat(xs))
        logits = self.head(features)
        sizes = [len(x) for x in xs]
        return list(zip(features.split(sizes), logits.split(sizes), strict=True))

    def parts(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, **dict(self.task_heads.items())}

    def frozen_prefix(self) -> int:
        """How many leading backbone blocks stay one fixed function for the whole stage (no
        parameter trains, eval mode throughout), so their output may be computed once (all
        of them: the whole backbone). Here the backbone trains; a model that freezes blocks
        says so."""
        return 0

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        """Start from the earlier stage's trained backbone (adapted, with an ``adapter``),
        and its head as ``inherit_head`` says."""
        self.backbone.load_state_dict(parts["backbone"].state_dict())
        if self.adapter is not None:
            self.adapter(self.backbone)
        if self.inherit_head == "never" or "head" not in parts:
            return
        if self.inherit_head == "fit" and not same_shapes(parts["head"], self.head):
            return
        try:
            self.head.load_state_dict(parts["head"].state_dict())
        except RuntimeError as err:
            raise ConfigError(
                "method.tuning.keep_head=true but the source head does not fit the target's "
                f"classes; set method.tuning.keep_head=false ({str(err).splitlines()[0]})"
            ) from err
        self.head_inherited = True

    def callbacks(self, trainer: pl.Trainer) -> list[pl.Callback]:
        from tlframe.engine.callbacks.freeze_blocks import FreezeBlocks

        if not self.warmup_epochs:
            return []
        warmed = [self.backbone, *self.task_heads.values()]
        return [FreezeBlocks(warmed, self.warmup_epochs, batch_norm_eval=self.freeze_bn_stats)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """With a warm-up, the blocks frozen at first join the optimizer now, so that one
        schedule covers them; until then they have no gradients and stay untouched."""
        if not self.warmup_epochs:
            return super().trainable_parameters()
        head = set(map(id, self.head.parameters()))
        return [p for p in self.parameters() if p.requires_grad or id(p) not in head]

    def on_train_start(self) -> None:
        if self.freeze_bn_stats:  # Lightning's evaluation loops restore this mode afterwards
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()


class FeatureExtractor(TransferModel):
    """A backbone alone, with no classifier: what a pretext task trains, and what k-means
    clusters on. Only the backbone is handed on."""

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module] | None = None,
        context: StageContext,
    ):
        super().__init__()
        self.backbone = backbone(input_shape=context.task.input_shape)

    @property
    def out_features(self) -> int:
        return self.backbone.out_features

    def features(self, x: Tensor, role: str) -> Tensor:
        return self.backbone(x)

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        raise ConfigError("a feature extractor has no classifier to evaluate; use a stage model")

    def parts(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        self.backbone.load_state_dict(parts["backbone"].state_dict())


def same_shapes(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
