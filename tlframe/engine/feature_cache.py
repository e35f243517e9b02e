"""Frozen backbone blocks' output, computed once per stage instead of at every step.

A stage qualifies when its backbone's first blocks are one fixed function for the whole
stage (``BackboneHead.frozen_prefix``: the first n blocks, or all, frozen, in eval mode,
as in layer transfer of the first n blocks or a linear probe), its objectives and
evaluator read only features and logits (``on_features``), every split is an in-memory
tensor split (no random augmentation: the same input gives the same output) and it runs in
one process. Then each split the fit reads is passed through the prefix
once (eval mode, no grad, in batches), and the stage fits on domains holding that output
while the model runs only the blocks after the prefix on its batches
(``BackboneHead.blocks_after_cache``). The weights, their names and the checkpoints stay those
of the whole model; only the prefix's forward pass is skipped. Testing runs on the inputs,
as without the cache. A prefix ending in an early convolution of large images has a large
output: it is kept in memory and on disk for every example.

Outputs are kept under ``<cache_dir>/features/<key>.pt``, the key a hash of the prefix
(architecture, code and weights) and of the split's inputs, so a rerun or a sweep over the
trained part's settings reuses them. ``performance.feature_cache=false`` runs the whole
backbone at every step instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from tlframe.data.domain import SPLITS, Domain, TensorSplit, batches
from tlframe.engine.cache import code_version, content_key
from tlframe.engine.model import BackboneHead, TransferModel
from tlframe.engine.module import Engine, to_channels_last
from tlframe.errors import ConfigError
from tlframe.io import atomic_save, load_cached
from tlframe.models.backbones import Backbone

log = logging.getLogger(__name__)


def enabled(performance: Mapping) -> bool:
    """``performance.feature_cache``: ``auto`` (default) uses the cache where a stage
    qualifies, ``false`` never does."""
    value = performance.get("feature_cache", "auto")
    if value is not False and value != "auto":
        raise ConfigError(f"performance.feature_cache must be auto or false, got {value!r}")
    return value == "auto"


def qualifies(module: Engine, domains: Mapping[str, Domain], world_size: int) -> bool:
    """Whether the stage's fit, on ``world_size`` processes, may read features computed
    once (see the module's doc)."""
    model = module.model
    return (
        isinstance(model, BackboneHead)
        and model.frozen_prefix() > 0
        and all(objective.on_features for objective in module.objectives.values())
        and module.evaluator.on_features
        and world_size == 1
        and all(isinstance(d.split(s), TensorSplit) for d in domains.values() for s in SPLITS)
    )


def feature_domains(
    module: Engine,
    domains: Mapping[str, Domain],
    train_roles: set[str],
    device: torch.device,
    batch_size: int,
    store: Path | None,
    stage: str,
) -> dict[str, Domain]:
    """The domains with every split the fit reads (the training splits of ``train_roles``,
    every validation split) replaced by the frozen prefix's output of it, read from
    ``store`` where it has them and written there otherwise (``None``: not on disk)."""
    backbone = module.model.backbone
    blocks = module.model.frozen_prefix()
    prefix = backbone.blocks[:blocks]
    nhwc = getattr(module, "channels_last", False)  # the inputs as the training steps see them
    start = time.perf_counter()
    identity = prefix_digest(backbone, blocks)
    result, examples, reused = {}, 0, 0
    for role, domain in domains.items():
        names = ("train", "val") if role in train_roles else ("val",)
        splits = {}
        for name in names:
            split = domain.split(name)
            path = store / f"{content_key([identity, split_digest(split)])}.pt" if store else None
            features = load_cached(path) if path else None
            if isinstance(features, Tensor) and len(features) == len(split):
                reused += 1
            else:
                features = compute_features(prefix, split, device, batch_size, nhwc)
                if path:
                    atomic_save(features, path)
            splits[name] = TensorSplit(features, split.labels)
            examples += len(features)
        result[role] = replace(domain, **splits)
    log.info(
        "stage %s: trains on cached backbone features (the output of its first %d of %d "
        "blocks: %d examples x %s, computed in %.1f s; %d of its splits read from the cache)",
        stage,
        blocks,
        len(backbone.blocks),
        examples,
        "x".join(map(str, features.shape[1:])),
        time.perf_counter() - start,
        reused,
    )
    return result


@torch.no_grad()
def compute_features(
    blocks: nn.Module, split: TensorSplit, device: torch.device, batch_size: int, nhwc: bool
) -> Tensor:
    """The output of ``blocks`` for every example of ``split``, in order, in eval mode (as
    frozen blocks run while training), kept on the CPU beside the other splits."""
    modes = {module: module.training for module in blocks.modules()}
    blocks.to(device).eval()
    try:
        chunks = []
        for x, _ in batches(split, batch_size):
            x = x.to(device)
            chunks.append(blocks(to_channels_last(x) if nhwc else x).cpu())
        return torch.cat(chunks)
    finally:  # each module's own mode: a slice of the backbone's blocks has none to restore
        for module, mode in modes.items():
            module.train(mode)


@contextmanager
def reading_features(model: TransferModel, on: bool) -> Iterator[None]:
    """The model reads its batches as its frozen prefix's output while inside (when
    ``on``)."""
    if not on:
        yield
        return
    model.blocks_after_cache = tuple(model.backbone.blocks)[model.frozen_prefix() :]
    try:
        yield
    finally:
        model.blocks_after_cache = None


def prefix_digest(backbone: Backbone, blocks: int) -> str:
    """A hash of what the backbone's first ``blocks`` blocks compute: their layers (with
    their settings, e.g. an activation without weights), the code of the backbone's
    module, and every weight and buffer."""
    prefix = backbone.blocks[:blocks]
    digest = hashlib.sha256(repr(prefix).encode())
    digest.update(code_version([type(backbone).__module__]).encode())
    for name, tensor in prefix.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_digest(tensor).encode())
    return digest.hexdigest()


def split_digest(split: TensorSplit) -> str:
    """A hash of a split's inputs and of how it turns them into model inputs (an image
    split's channels, mean and std)."""
    settings = {k: v for k, v in vars(split).items() if k not in ("inputs", "labels")}
    return content_key([type(split).__qualname__, settings, tensor_digest(split.inputs)])


def tensor_digest(tensor: Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()
