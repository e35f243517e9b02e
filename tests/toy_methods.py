"""A toy method for testing the stage mechanism: its model remembers what it inherited."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from tlframe.engine.method import LABELED, Method, Stage
from tlframe.engine.model import BackboneHead


class RecordingModel(BackboneHead):
    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        super().inherit(parts)
        self.inherited_state = {
            k: v.detach().clone() for k, v in parts["backbone"].state_dict().items()
        }


def two_stages() -> Method:
    """Supervised on the source, then on the target labels, each stage a recording model."""
    return Method(
        "toy_two_stage",
        [
            Stage("pretrain", {"source": "all"}, model=RecordingModel),
            Stage(
                "adapt",
                {"target": LABELED},
                model=RecordingModel,
                trainer={"max_epochs": 1},
                inherits=True,
            ),
        ],
    )
