"""Feature extractors as ordered blocks with a known output width.

Every builder has the signature ``builder(input_shape, **options) -> Backbone``. The blocks
are the unit of layer transfer: ``blocks[:n]`` are "the first n layers" for any backbone.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.io import safe_load, state_dict_of
from tlframe.models.registry import BACKBONES

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------- timm
TIMM_BACKBONE = f"{__name__}.timm"  # the _target_ of conf/backbone/timm.yaml


def timm_library() -> ModuleType:
    """timm, an optional extra: without it, one line that names what to install."""
    try:
        import timm as library
    except ImportError as err:
        raise ConfigError(
            "backbone=timm needs the timm package: pip install 'tlframe[timm]'"
        ) from err
    return library


def timm_pretrained_cfg(name: str, model_args: Mapping[str, Any]) -> dict[str, Any]:
    """The pretrained configuration timm builds ``name`` with (``model_args``'
    ``pretrained_cfg_overlay`` applied): where its weights live and what inputs they expect."""
    library = timm_library()
    arch, _, tag = name.partition(".")
    if not library.is_model(name):
        raise ConfigError(
            f"unknown timm model backbone.name={name}; list the names with "
            f"python -c \"import timm; print(timm.list_models('{arch[:6]}*'))\""
        )
    overlay = dict(model_args.get("pretrained_cfg_overlay") or {})
    try:
        cfg = library.models.resolve_pretrained_cfg(arch, tag or None, overlay)
    except RuntimeError as err:  # a tag this architecture has no weights for
        raise ConfigError(
            f'backbone.name={name}: {err} List its weights with python -c "import timm; '
            f"print(timm.list_pretrained('{arch}.*'))\""
        ) from err
    return cfg.to_dict()


def timm_data_config(name: str, model_args: Mapping[str, Any]) -> dict[str, Any]:
    """timm's data configuration of the model (input_size, interpolation, mean, std,
    crop_pct), as timm's own scripts resolve it: a ``model_args.img_size`` sets the size."""
    library = timm_library()
    args = {key: model_args[key] for key in ("img_size", "in_chans") if key in model_args}
    data = library.data.resolve_data_config(args, timm_pretrained_cfg(name, model_args))
    return {**data, "input_size": tuple(data["input_size"])}  # a list when set by an overlay


def timm_weights_file(
    name: str, model_args: Mapping[str, Any], pretrained: bool, checkpoint_path: str | None
) -> Path | None:
    """The file the weights come from: ``checkpoint_path``, else (``pretrained``) the model's
    file in the Hugging Face cache, downloaded only when the network allows; None: random.

    Checked right after composition (``tlframe.validate``), so a missing file stops the run
    before any data is built."""
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"backbone.checkpoint_path={checkpoint_path}: no such file")
        return path
    if not pretrained:
        return None
    cfg = timm_pretrained_cfg(name, model_args)
    if not cfg.get("hf_hub_id"):
        raise ConfigError(
            f"timm has no published weights for {name}; set backbone.checkpoint_path=<file> "
            "or backbone.pretrained=false"
        )
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    repo, _, revision = cfg["hf_hub_id"].partition("@")
    filename = cfg.get("hf_hub_filename") or "model.safetensors"
    cached = try_to_load_from_cache(repo, filename, revision=revision or None)
    if isinstance(cached, str):  # no network asked: without one the hub retries for seconds
        return Path(cached)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision or None))
    except OSError as err:  # offline without the file in the cache, or no such repo
        raise ConfigError(
            f"no {name} weights: {filename} of the Hugging Face repo {repo} is not in the cache "
            f"{constants.HF_HUB_CACHE} and cannot be downloaded ({type(err).__name__}); download "
            f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{filename} and set "
            "backbone.checkpoint_path=<file>, or set backbone.pretrained=false"
        ) from err


def _read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from ``path``: a safetensors file, or a torch file loaded weights-only,
    so that a file holding pickled objects, which could run code, is refused."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as err:
            raise ConfigError(f"cannot read the safetensors file {path}: {err}") from err
    try:
        checkpoint = safe_load(path)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"refused the weights file {path}: not tensors alone (weights-only loading refuses "
            "pickled objects); save the state dict alone: torch.save(model.state_dict(), path)"
        ) from err
    except (OSError, RuntimeError) as err:
        raise ConfigError(
            f"cannot read the weights file {path}: {' '.join(str(err).split())}"
        ) from err
    return state_dict_of(checkpoint, f"the weights file {path}")


class _Part(nn.Module):
    """One block of a timm model that runs the model's own code: ``shell`` is a copy of the
    model that owns only this block's layers, ``run`` applies the method that calls them."""

    def __init__(self, shell: nn.Module, run: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.shell, self.run = shell, run

    def forward(self, x: Tensor) -> Tensor:
        return self.run(self.shell, x)


def _features(net: nn.Module, x: Tensor) -> Tensor:
    return net.forward_features(x)


def _norm_and_head(net: nn.Module, x: Tensor) -> Tensor:
    return net.forward_head(net.norm(x), pre_logits=True)


def _features_and_head(net: nn.Module, x: Tensor) -> Tensor:
    return net.forward_head(net.forward_features(x), pre_logits=True)


def _shell(net: nn.Module, keep: set[str], direct: bool = False) -> nn.Module:
    """A copy of ``net``, with its code and settings, that owns only the children named in
    ``keep`` (or children of a sequential child: ``"blocks.3"``), the others identities, and
    with ``direct`` its own parameters and buffers (a ViT's class token)."""
    shell = type(net).__new__(type(net))
    nn.Module.__init__(shell)
    shell.__dict__.update({k: v for k, v in vars(net).items() if k not in vars(shell)})
    shell.training = net.training
    for name, child in net.named_children():
        if any(path.startswith(f"{name}.") for path in keep):
            inner = [
                (n, c if f"{name}.{n}" in keep else nn.Identity())
                for n, c in child.named_children()
            ]
            child = nn.Sequential(OrderedDict(inner))
        elif name not in keep:
            child = nn.Identity()
        setattr(shell, name, child)
    if direct:
        for name, param in net._parameters.items():
            shell.register_parameter(name, param)
        for name, buffer in net._buffers.items():
            shell.register_buffer(name, buffer, name not in net._non_persistent_buffers_set)
    return shell


def _token_blocks(net: nn.Module) -> OrderedDict[str, nn.Module] | None:
    """A ViT-like model (patch_embed, a sequence of blocks, norm) as embed (patches, class
    token, position embedding), each transformer block, and pool (final norm and timm's own
    pooling to the pre-logits vector)."""
    if not hasattr(net, "patch_embed") or not isinstance(
        getattr(net, "blocks", None), nn.Sequential
    ):
        return None
    names = [name for name, _ in net.named_children()]
    at = names.index("blocks")
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        embed=_Part(_shell(net, set(names[:at]), direct=True), _features)
    )
    blocks.update((f"blocks_{i}", block) for i, block in enumerate(net.blocks))
    blocks["pool"] = _Part(_shell(net, set(names[at + 1 :])), _norm_and_head)
    return blocks


def _stage_blocks(net: nn.Module) -> OrderedDict[str, nn.Module] | None:
    """A CNN-like model as stem, the stages timm reports in ``feature_info``, and pool (the
    layers after the last stage and timm's own pooling), its layers in registration order
    as timm's feature extraction (``features_only``) takes them."""
    ends = [info["module"] for info in getattr(net, "feature_info", None) or []]
    layers = []
    for name, child in net.named_children():  # opened where a stage ends inside it
        if any(end.startswith(f"{name}.") for end in ends):
            layers += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            layers.append((name, child))
    paths = [path for path, _ in layers]
    if not ends or not set(ends) <= set(paths):
        return None
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    for end in ends:
        stop = paths.index(end) + 1
        part = OrderedDict((p.replace(".", "_"), layer) for p, layer in layers[start:stop])
        blocks["stem" if not blocks else end.replace(".", "_")] = nn.Sequential(part)
        start = stop
    blocks["pool"] = _Part(_shell(net, set(paths[start:])), _features_and_head)
    return blocks


def _reproduces(blocks: OrderedDict[str, nn.Module], probe: Tensor, expected: Tensor) -> bool:
    try:
        out = nn.Sequential(blocks)(probe)
    except Exception:  # any failure means this architecture's forward does not split so
        return False
    return out.shape == expected.shape and torch.allclose(out, expected, rtol=1e-4, atol=1e-5)


def _timm_blocks(
    name: str, net: nn.Module, input_shape: Sequence[int]
) -> tuple[OrderedDict[str, nn.Module], int]:
    """The model as ordered blocks and its feature width. A split is kept only when its
    blocks, composed, give the model's own pre-logits features for a probe image (in eval
    mode); a model that neither split reproduces is one block, which layer transfer and
    ``feature_blocks`` cannot cut."""
    probe = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    training = net.training
    net.eval()
    with torch.no_grad():
        expected = net(probe)
        for split in (_token_blocks, _stage_blocks):
            blocks = split(net)
            if blocks is not None and _reproduces(blocks, probe, expected):
                break
        else:
            blocks = OrderedDict(model=net)
            log.info("timm %s is one block: its forward does not split into blocks", name)
    if expected.dim() != 2:
        raise ConfigError(
            f"the timm model gives features of shape {tuple(expected.shape[1:])}, not a vector; "
            "leave backbone.model_args.global_pool unset"
        )
    for block in blocks.values():
        block.train(training)
    return blocks, int(expected.shape[1])


def _timm_overlay(name: str, args: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """timm's ``pretrained_cfg_overlay`` that loads the state dict at ``path`` through timm's
    own loader (its key filters, input-channel adaptation), strictly, all but the
    classifier, which tlframe's head replaces."""
    classifier = timm_pretrained_cfg(name, args).get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    dropped = {f"{head}.{kind}" for head in heads for kind in ("weight", "bias")}
    state = {k: v for k, v in _read_weights(path).items() if k not in dropped}
    overlay = dict(args.get("pretrained_cfg_overlay") or {})
    return {**overlay, "state_dict": state, "num_classes": 0, "label_offset": 0}


@BACKBONES.register
def timm(
    input_shape: Sequence[int],
    name: str = "resnet18",
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    bottleneck_dim: int | None = None,
) -> Backbone:
    """Any timm model, built with ``model_args`` (``timm.create_model`` keywords), as
    ordered blocks: a ViT-like model as embed, blocks_0..blocks_n and pool; a CNN-like one
    as stem, its feature stages and pool; any other as one block (``_timm_blocks``). The
    output is timm's pre-logits feature vector.

    Weights come from ``checkpoint_path`` or, with ``pretrained``, the Hugging Face cache
    (``timm_weights_file``), read weights-only. The image pipeline reads the inputs the way
    the model's data configuration says (``tlframe.data.pairing.timm_inputs``).
    """
    if len(input_shape) != 3:
        raise ConfigError(
            f"backbone=timm needs image inputs (C, H, W), got shape {tuple(input_shape)}"
        )
    library = timm_library()
    args = dict(model_args or {})
    path = timm_weights_file(name, args, pretrained, checkpoint_path)
    if path is not None:
        args["pretrained_cfg_overlay"] = _timm_overlay(name, args, path)
    args.update(num_classes=0, in_chans=input_shape[0])
    try:
        net = library.create_model(name, pretrained=path is not None, **args)
    except TypeError as err:  # a keyword this model does not take
        raise ConfigError(f"backbone.model_args do not fit timm model {name}: {err}") from err
    except RuntimeError as err:  # the weights do not fit the model
        if path is None:
            raise
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(f"the weights in {path} do not fit timm model {name}: {detail}") from err
    blocks, width = _timm_blocks(name, net, input_shape)
    return _with_bottleneck(blocks, width, bottleneck_dim)
