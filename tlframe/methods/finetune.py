"""Two-stage fine-tuning: train backbone + head on the labeled source, then continue
training on the labeled target examples (``data.target_labels``: all, or k per class; 1 is
one-shot). Both stages run from one command; the source stage is the shared
``source_stage``, cached by content, so a sweep over the target stage's options trains it
once. Conservative training (``lwf``, ``l2sp``) adds objectives to the same stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from torch import nn

from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.engine.model import BackboneHead
from tlframe.engine.objective import CrossEntropy, Objective
from tlframe.errors import ConfigError
from tlframe.methods.common import budget, source_stage
from tlframe.models.adapters import lora, require_peft

ADAPTERS = ("lora",)  # method.tuning.adapter's choices; null is full fine-tuning


@dataclass(frozen=True)
class FineTuning:
    """The target stage of the fine-tuning family (finetune, lwf, l2sp).

    ``keep_head``: start from the source head (same classes needed), else a new head for
    the target's classes. ``freeze_bn_stats``: batch-norm layers keep the source's running
    statistics (eval mode; their scale and shift still train), as Keras's fine-tuning guide
    advises: batches of k examples per class are no population estimate. ``lr``: null is
    the source stage's learning rate, as L2-SP's and Yosinski et al.'s fine-tuning use it
    (a tenth forgets less but adapts less; docs/RESULTS.md has both). ``epochs``: half the
    source stage's budget. ``init_from``: a .ckpt file or a run dir to load as the source
    stage instead of training it. ``adapter``: null fine-tunes every weight; ``lora``
    freezes the inherited backbone and trains low-rank updates of its linear and
    convolution layers (rank ``lora_rank``, scaled by ``lora_alpha / lora_rank``, inputs
    dropped with ``lora_dropout``; Hu et al. 2022, through the optional peft library) and
    the head: a few percent of the weights, for little data or a large model.
    """

    keep_head: bool = True
    freeze_bn_stats: bool = True
    lr: float | None = None
    epochs: int = 5
    init_from: str | None = None
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0

    def named(self, family: str) -> str:
        """The run's method name: the family's, with the adapter (``finetune+lora``), so a
        report keeps adapted and fully fine-tuned runs apart."""
        return f"{family}+{self.adapter}" if self.adapter else family


def tuning_adapter(tuning: FineTuning) -> Callable[[nn.Module], None] | None:
    """The adapter ``method.tuning.adapter`` names, with its options bound and checked now,
    not after the source stage has trained; None for full fine-tuning."""
    if tuning.adapter is None:
        return None
    if tuning.adapter not in ADAPTERS:
        raise ConfigError(
            "method.tuning.adapter must be null (full fine-tuning) or one of: "
            f"{', '.join(ADAPTERS)}; got {tuning.adapter!r}"
        )
    if tuning.lora_rank < 1 or not 0 <= tuning.lora_dropout < 1:
        raise ConfigError(
            "method.tuning.lora_rank must be >= 1 and method.tuning.lora_dropout in [0, 1); "
            f"got {tuning.lora_rank} and {tuning.lora_dropout}"
        )
    require_peft(f"method.tuning.adapter={tuning.adapter}")
    return partial(
        lora, rank=tuning.lora_rank, alpha=tuning.lora_alpha, dropout=tuning.lora_dropout
    )


def fine_tuning_stages(
    tuning: FineTuning,
    objectives: Mapping[str, Callable[..., Objective]] | None = None,
    optimizer: Mapping[str, object] | None = None,
    warmup_epochs: int = 0,
) -> list[Stage]:
    """The shared source stage, then the target stage with ``objectives`` added to the
    cross-entropy on the target labels (and ``optimizer`` settings of its own; with
    ``warmup_epochs``, only the head trains at first)."""
    adapter = tuning_adapter(tuning)
    if adapter is not None and warmup_epochs:
        raise ConfigError(
            f"method.tuning.adapter={tuning.adapter} trains its adapter from the first step; "
            f"set method.warmup_epochs=0 (got {warmup_epochs})"
        )
    model = partial(
        BackboneHead,
        inherit_head="required" if tuning.keep_head else "never",
        freeze_bn_stats=tuning.freeze_bn_stats,
        **({"warmup_epochs": warmup_epochs} if warmup_epochs else {}),
        **({"adapter": adapter} if adapter is not None else {}),
    )
    limits = budget(tuning.epochs, tuning.lr, ("method.tuning.epochs", "method.tuning.lr"))
    target = Stage(
        "target",
        {"target": LABELED},
        model=model,
        objectives={"cls": CrossEntropy, **(objectives or {})},
        trainer=limits["trainer"],
        optimizer={**limits["optimizer"], **(optimizer or {})},
        inherits=True,
    )
    return [source_stage(tuning.init_from), target]


@method
def finetune(tuning: FineTuning = FineTuning()) -> Method:
    """Fine-tuning: the source model, trained further on the target labels."""
    return Method(
        tuning.named("finetune"), fine_tuning_stages(tuning), same_classes=tuning.keep_head
    )
