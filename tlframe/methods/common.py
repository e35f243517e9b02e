"""Stages that several methods share, defined once: a stage cache entry is shared because
the stage is one definition, not because copies agree."""

from __future__ import annotations

from tlframe.engine.method import Stage
from tlframe.errors import ConfigError


def source_stage(init_from: str | None = None) -> Stage:
    """Supervised training on the labeled source domain (the source_only control, and the
    first stage of the fine-tuning family and layer transfer). ``init_from``: a .ckpt file
    or a run dir whose ``checkpoints/source/best.ckpt`` is loaded instead of training."""
    return Stage("source", {"source": "all"}, init_from=init_from)


def budget(epochs: int | None, lr: float | None, names: tuple[str, str]) -> dict[str, dict]:
    """A stage's own epochs and learning rate over the global ones (None: the global), as
    ``Stage`` keywords, checked; ``names``: the options that set them, for the messages."""
    epochs_name, lr_name = names
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
    ):
        raise ConfigError(
            f"{epochs_name} must be an integer >= 1, got {epochs!r}; set {epochs_name}=N"
        )
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"{lr_name} must be a positive number, got {lr!r}; e.g. {lr_name}=0.01")
    return {
        "trainer": {} if epochs is None else {"max_epochs": epochs},
        "optimizer": {} if lr is None else {"lr": lr},
    }
