"""A frozen backbone's features, computed once per stage instead of at every step.

A stage qualifies when its backbone is one fixed function for the whole stage
(``BackboneHead.frozen_backbone``: every block frozen, in eval mode), its objectives and
evaluator read only features and logits (``on_features``), every split is an in-memory
tensor split (no random augmentation: the same input gives the same features) and it runs
in one process. Then each split the fit reads is passed through the backbone once (eval
mode, no grad, in batches), and the stage fits on domains holding those features while the
model reads its batches as features (``BackboneHead.reads_features``). The weights, their
names and the checkpoints stay those of the whole model; only the backbone's forward pass
is skipped. Testing runs on the inputs, as without the cache.

Features are kept under ``<cache_dir>/features/<key>.pt``, the key a hash of the backbone
(architecture, code and weights) and of the split's inputs, so a rerun or a sweep over the
head's settings reuses them. ``performance.feature_cache=false`` runs the backbone at every
step instead.
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
        and model.frozen_backbone()
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
    every validation split) replaced by the backbone's features of it, read from ``store``
    where it has them and written there otherwise (``None``: not on disk)."""
    backbone = module.model.backbone
    nhwc = getattr(module, "channels_last", False)  # the inputs as the training steps see them
    start = time.perf_counter()
    identity = backbone_digest(backbone)
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
                features = compute_features(backbone, split, device, batch_size, nhwc)
                if path:
                    atomic_save(features, path)
            splits[name] = TensorSplit(features, split.labels)
            examples += len(features)
        result[role] = replace(domain, **splits)
    log.info(
        "stage %s: trains on cached backbone features (%d examples x %d dims, computed in "
        "%.1f s; %d of its splits read from the cache)",
        stage,
        examples,
        backbone.out_features,
        time.perf_counter() - start,
        reused,
    )
    return result


@torch.no_grad()
def compute_features(
    backbone: nn.Module, split: TensorSplit, device: torch.device, batch_size: int, nhwc: bool
) -> Tensor:
    """The backbone's features of every example of ``split``, in order, in eval mode (as a
    frozen backbone runs while training), kept on the CPU beside the other splits."""
    mode = backbone.training
    backbone.to(device).eval()
    try:
        chunks = []
        for x, _ in batches(split, batch_size):
            x = x.to(device)
            chunks.append(backbone(to_channels_last(x) if nhwc else x).cpu())
        return torch.cat(chunks)
    finally:
        backbone.train(mode)


@contextmanager
def reading_features(model: TransferModel, on: bool) -> Iterator[None]:
    """The model reads its batches as backbone features while inside (when ``on``)."""
    if not on:
        yield
        return
    model.reads_features = True
    try:
        yield
    finally:
        model.reads_features = False


def backbone_digest(backbone: nn.Module) -> str:
    """A hash of what the backbone computes: its layers (with their settings, e.g. an
    activation without weights), the code of its class, and every weight and buffer."""
    digest = hashlib.sha256(repr(backbone).encode())
    digest.update(code_version([type(backbone).__module__]).encode())
    for name, tensor in backbone.state_dict().items():
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
