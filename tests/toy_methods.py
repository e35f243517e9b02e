"""A toy module for testing the stage mechanism: it remembers what it inherited."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from tlframe.methods.base import TransferModule


class RecordingModule(TransferModule):
    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        super().inherit(parts)
        self.inherited_state = {
            k: v.detach().clone() for k, v in parts["backbone"].state_dict().items()
        }
