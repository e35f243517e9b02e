"""Feature extractors as ordered blocks with a known output width.

Every builder has the signature ``builder(input_shape, **options) -> Backbone``. The blocks
are the unit of layer transfer: ``blocks[:n]`` are "the first n layers" for any backbone.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.models.registry import BACKBONES


class Backbone(nn.Module):
    """Ordered named blocks; the output of the last block is the feature vector."""

    def __init__(self, blocks: OrderedDict[str, nn.Module], out_features: int):
        super().__init__()
        self.blocks = nn.Sequential(blocks)
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def _bottleneck(in_features: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU())


def _with_bottleneck(
    blocks: OrderedDict[str, nn.Module], width: int, bottleneck_dim: int | None
) -> Backbone:
    if bottleneck_dim:
        blocks["bottleneck"] = _bottleneck(width, bottleneck_dim)
        width = bottleneck_dim
    return Backbone(blocks, width)


def _flat_width(module: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *input_shape)).flatten(1).shape[1])


@BACKBONES.register
def lenet(
    input_shape: Sequence[int],
    channels: Sequence[int] = (20, 50),
    hidden_dim: int = 500,
    dropout: float = 0.5,
    bottleneck_dim: int | None = 256,
) -> Backbone:
    """The two-convolution LeNet of the DANN digit experiments, for small images."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"lenet needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
            "use backbone=mlp for feature vectors"
        )
    c1, c2 = channels
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(input_shape[0], c1, 5), nn.MaxPool2d(2), nn.ReLU()),
        conv2=nn.Sequential(
            nn.Conv2d(c1, c2, 5), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU()
        ),
    )
    flat = _flat_width(nn.Sequential(*blocks.values()), input_shape)
    blocks["fc"] = nn.Sequential(
        nn.Flatten(), nn.Linear(flat, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
    )
    return _with_bottleneck(blocks, hidden_dim, bottleneck_dim)


@BACKBONES.register
def mlp(
    input_shape: Sequence[int],
    hidden_dims: Sequence[int] = (512, 256),
    dropout: float = 0.2,
    batch_norm: bool = True,
) -> Backbone:
    """Fully connected layers over flattened inputs (feature vectors, tabular data)."""
    width = math.prod(input_shape)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for i, hidden in enumerate(hidden_dims, start=1):
        layers: list[nn.Module] = [nn.Flatten()] if i == 1 else []
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Dropout(dropout)]
        blocks[f"fc{i}"] = nn.Sequential(*layers)
        width = hidden
    if not blocks:
        blocks["flatten"] = nn.Flatten()
    return Backbone(blocks, width)


def pretrained_weights(arch: str, weights: str | None):
    """The torchvision weights of ``arch`` named ``weights`` (``None``: random init).

    Checked right after composition (``tlframe.validate``), before any data is built.
    """
    from torchvision.models import get_model_weights

    try:
        options = get_model_weights(arch)
    except ValueError as err:
        raise ConfigError(
            f"unknown torchvision model backbone.arch={arch}; use e.g. backbone=resnet18"
        ) from err
    if weights is None:
        return None
    try:
        return options.verify(weights)
    except (KeyError, TypeError) as err:
        names = ", ".join(["DEFAULT", *(w.name for w in options)])
        raise ConfigError(
            f"unknown {arch} weights backbone.weights={weights}; use one of {names}, "
            "or null for random initialisation"
        ) from err


def _load_pretrained(arch: str, chosen) -> dict:
    """The weights' state dict from the torch hub cache (downloaded when missing), loaded
    with ``weights_only=True``: a file planted there cannot run code."""
    where = f"{torch.hub.get_dir()}/checkpoints"
    try:
        return torch.hub.load_state_dict_from_url(
            chosen.url, model_dir=where, check_hash=True, weights_only=True
        )
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"refused the {arch} weights file in {where}: it holds more than tensors "
            "(weights-only loading); delete it to download it again"
        ) from err
    except (OSError, RuntimeError) as err:  # no network and no cached file, or a bad hash
        raise ConfigError(
            f"could not load {arch} weights {chosen.name}: {err}; put the file in {where} "
            "or set backbone.weights=null"
        ) from err


@BACKBONES.register
def resnet(
    input_shape: Sequence[int],
    arch: str = "resnet18",
    weights: str | None = None,
    bottleneck_dim: int | None = None,
) -> Backbone:
    """A torchvision ResNet split into stem, layer1..layer4 and pool blocks.

    ``weights`` is a torchvision weights name (e.g. ``IMAGENET1K_V1``); it is loaded from the
    torch hub cache (``$TORCH_HOME``), safely, and downloaded only when the network allows.
    """
    import torchvision

    chosen = pretrained_weights(arch, weights)
    options = {"num_classes": len(chosen.meta["categories"])} if chosen is not None else {}
    net = torchvision.models.get_model(arch, weights=None, **options)
    if chosen is not None:
        net.load_state_dict(_load_pretrained(arch, chosen))
    if input_shape[0] != 3:
        conv = net.conv1
        net.conv1 = nn.Conv2d(input_shape[0], conv.out_channels, 7, 2, 3, bias=False)
        with torch.no_grad():
            net.conv1.weight.copy_(conv.weight.mean(dim=1, keepdim=True))
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
        pool=nn.Sequential(net.avgpool, nn.Flatten()),
    )
    return _with_bottleneck(blocks, net.fc.in_features, bottleneck_dim)
