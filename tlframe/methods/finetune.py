"""Fine-tuning: the target stage starts from the model the source stage trained.

The backbone is always inherited; the head is inherited too when ``keep_head`` is set (the
target has the source's classes), otherwise it starts fresh for the target's classes.
Conservative training (``conservative.py``) and layer transfer (``layer_transfer.py``)
are variants of this stage.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tlframe.errors import ConfigError
from tlframe.methods.base import TransferModule


class FineTune(TransferModule):
    """Continue training the inherited backbone (and head) on the stage's labeled data."""

    def __init__(
        self,
        *,
        keep_head: bool = True,
        freeze_bn_stats: bool = False,
        inherited: Mapping[str, nn.Module] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.keep_head = keep_head
        self.freeze_bn_stats = freeze_bn_stats
        self.head_inherited = False  # True once a source head was copied in
        self.built_on_source = False
        if inherited:
            self.inherit(inherited)

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        self.backbone.load_state_dict(parts["backbone"].state_dict())
        if self.keep_head:
            try:
                self.head.load_state_dict(parts["head"].state_dict())
            except RuntimeError as err:
                raise ConfigError(
                    "method.keep_head=true but the source head does not fit the target's "
                    f"classes ({len(self.class_names)}); set method.keep_head=false"
                ) from err
            self.head_inherited = True
        self.built_on_source = True

    def on_train_start(self) -> None:
        """With ``freeze_bn_stats``, batch-norm layers run in eval mode while the rest
        trains (Lightning's evaluation loops restore that mode after each validation): they
        normalise with the source's running statistics and keep them, since batches drawn
        from a few labeled examples per class estimate no population's statistics. Their
        scale and shift still train."""
        if self.freeze_bn_stats:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()

    def on_fit_start(self) -> None:
        if not self.built_on_source:
            raise ConfigError(
                f"stage {self.context.name!r} fine-tunes a previous stage's model, but it is "
                "the first stage; declare a source stage before it in the method config"
            )
