"""L2-SP (Li, Grandvalet & Davoine 2018), parameter-level conservative training.

Fine-tuning (``method.tuning``: the same stages and options) whose target stage adds

    alpha/2 * ||w - w_source||^2 over the inherited weights + beta/2 * ||w||^2 over a new head

It replaces weight decay, which would pull the weights towards zero instead: the target
stage's ``weight_decay`` is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from tlframe.engine.method import Method, method
from tlframe.engine.model import BackboneHead
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.methods.finetune import FineTuning, fine_tuning_stages
from tlframe.models.layers import Frozen


class StartingPointPenalty(Objective):
    """``alpha/2 ||w - w_source||^2`` over the inherited weights (backbone, and the head
    when kept) as ``l2sp``, and ``beta/2 ||w||^2`` over a new head as ``l2_head``."""

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        beta: float = 0.01,
        **parts: Any,
    ):
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.head_inherited = False

    def inherit(self, parts: Mapping[str, nn.Module], model: BackboneHead) -> None:
        start = {"backbone": parts["backbone"]}
        self.head_inherited = model.head_inherited
        if self.head_inherited:
            start["head"] = parts["head"]
        self.starting_point = Frozen(nn.ModuleDict(start))

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        return self.penalties(out.model)

    def penalties(self, model: BackboneHead) -> dict[str, Tensor]:
        """The two terms, already weighted, for the model's current weights."""
        to_start = 0.0
        for part, start in self.starting_point.model.items():
            current = dict(getattr(model, part).named_parameters())
            for name, w0 in start.named_parameters():
                to_start = to_start + ((current[name] - w0) ** 2).sum()
        terms = {"l2sp": self.alpha / 2 * to_start}
        if not self.head_inherited:
            terms["l2_head"] = self.beta / 2 * sum((w**2).sum() for w in model.head.parameters())
        return terms


@method
def l2sp(
    tuning: FineTuning = FineTuning(), penalty: Callable[..., Objective] = StartingPointPenalty
) -> Method:
    """L2-SP: fine-tuning pulled back towards the source weights."""
    if tuning.adapter is not None:  # they stay frozen at the source's values
        raise ConfigError(
            "l2sp pulls the backbone's weights towards the source's, which "
            f"method.tuning.adapter={tuning.adapter} freezes; use method=finetune with it"
        )
    stages = fine_tuning_stages(tuning, {"l2sp": penalty}, optimizer={"weight_decay": 0.0})
    return Method("l2sp", stages, same_classes=tuning.keep_head)
