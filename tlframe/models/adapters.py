"""Parameter-efficient fine-tuning: adapters that peft injects into an inherited backbone.

An adapter freezes the backbone's weights and adds a few trainable ones, so fine-tuning
updates (and a checkpoint of what changed holds) a small fraction of the model. peft is an
optional extra, imported only when an adapter is asked for.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from tlframe.errors import ConfigError


def require_peft(option: str) -> ModuleType:
    """The peft library, or one line naming the extra that installs it."""
    try:
        import peft
    except ImportError as err:
        raise ConfigError(
            f"{option} needs the peft library; install it with pip install 'tlframe[peft]'"
        ) from err
    return peft


def lora(backbone: nn.Module, *, rank: int, alpha: float, dropout: float) -> None:
    """LoRA (Hu et al. 2022), in place: every linear and ungrouped 2-d convolution of
    ``backbone`` gains a trainable update ``alpha / rank * B A`` whose B starts at zero, so
    training starts from the inherited function; every other backbone parameter freezes
    (peft's default, batch-norm scale and shift included). Grouped (depthwise)
    convolutions stay frozen as they are: peft adapts them only when the rank divides by
    their groups."""
    peft = require_peft("method.tuning.adapter=lora")
    targets = [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
    ]
    if not targets:
        raise ConfigError(
            "method.tuning.adapter=lora: the backbone has no linear or convolution layer to "
            "adapt; use method.tuning.adapter=null"
        )
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    peft.inject_adapter_in_model(config, backbone)
