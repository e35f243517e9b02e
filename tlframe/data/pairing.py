"""What pairing two domains settles: one input shape, and the scale of feature vectors.

One backbone reads both domains, so their inputs must agree. Each step says in the log
what it chose; ``cfg`` records every choice (a domain option that was left to tlframe
is filled in), so stage keys and metrics.json say what ran.

- ``pretrained_inputs``: a backbone reads inputs as its weights were trained: a timm model
  its own data configuration (``timm_inputs``), a pretrained torchvision one ImageNet's.
- ``match_channels``: a grey image domain paired with a colour one is read as RGB (its
  grey repeated), when its ``channels`` option is left to tlframe (null).
- ``match_sizes``: image domains of different sizes are read at the larger, when their
  ``image_size`` is left to tlframe.
- ``decode_in_memory``: small image folders, read without random crops, are decoded once
  and held in memory (``tlframe.data.formats.image_folder``).
- ``standardize``: feature vectors are scaled per feature to zero mean and unit variance
  (``data.standardize``), fitted on the training inputs of both domains by default, as
  unsupervised adaptation allows: inputs only, never a label.
- ``transductive``: ``data.protocol=transductive``, the protocol of the small benchmarks'
  published tables (Office-31, Office-Caltech, COIL, MNIST-USPS as in JDA): every example
  of each domain trains (the target's without labels) and the target is tested on those
  same examples; selection is then label-free (``tlframe.engine.selection``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import ConcatDataset, Dataset

from tlframe.data.domain import SPLITS, Domain, TensorSplit, split_labels
from tlframe.data.formats.image_folder import decode_in_memory
from tlframe.data.images import IMAGENET_MEAN, IMAGENET_STD
from tlframe.errors import ConfigError
from tlframe.models.backbones import TIMM_BACKBONE, timm_data_config

log = logging.getLogger(__name__)

SCALINGS = ("joint", "source", "domain", "none")
PROTOCOLS = ("split", "transductive")


def pair(cfg: DictConfig, domains: dict[str, Domain], build: Callable[[DictConfig], Domain]):
    """Bring both domains to one input shape and scale; ``build`` re-instantiates a domain
    from its config when an option left to tlframe had to be filled in."""
    pretrained_inputs(cfg, domains, build)
    match_channels(cfg, domains, build)
    match_sizes(cfg, domains, build)
    decode_in_memory(domains)  # the inputs are settled: no folder is decoded twice
    if protocol(cfg) == "transductive":  # after every rebuild, which would split them again
        transductive(domains)
    standardize(domains, str(cfg.data.get("standardize", "joint")))


def _auto(cfg: DictConfig, role: str, option: str) -> bool:
    """Whether ``role``'s domain has ``option`` and left it to tlframe (null)."""
    node = cfg[role]
    return isinstance(node, DictConfig) and option in node and node[option] is None


def _rebuild(cfg, domains, build, role: str, option: str, value) -> None:
    with open_dict(cfg):
        cfg[role][option] = value
    domains[role] = build(cfg[role])


def pretrained_inputs(cfg: DictConfig, domains: dict[str, Domain], build) -> None:
    """A pretrained backbone expects what it was trained on: a timm model its own data
    configuration (``timm_inputs``); with torchvision weights, an image folder whose input
    options were left to tlframe gets ImageNet's recipe whatever its images' size."""
    backbone = cfg.get("backbone")
    if isinstance(backbone, DictConfig) and backbone.get("_target_") == TIMM_BACKBONE:
        timm_inputs(cfg, domains, build, backbone)
        return
    if not isinstance(backbone, DictConfig) or not backbone.get("weights"):
        return
    imagenet = {"channels": 3, "image_size": 224, "resize_size": 256, "augment": True}
    imagenet.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    for role in domains:
        node = cfg[role]
        if not str(node.get("_target_", "")).endswith("image_folder"):
            continue
        left = {k: v for k, v in imagenet.items() if k in node and node[k] is None}
        if left:
            with open_dict(cfg):
                cfg[role].update(left)
            domains[role] = build(cfg[role])
            log.info(
                "%s: ImageNet's inputs for the pretrained backbone (%s)", role, ", ".join(left)
            )


def timm_inputs(cfg: DictConfig, domains: dict[str, Domain], build, backbone: DictConfig) -> None:
    """Image domains read as timm's data configuration of the model says (``timm.data.
    resolve_data_config``: input size, interpolation, mean, std, crop percentage): an image
    folder in the options left to tlframe, with the resize that gives timm's centre crop; an
    in-memory domain (embedded digits, MNIST, ...) in its channels, size and statistics (its
    images are resized once, bilinearly). One log line says what was chosen."""
    data = timm_data_config(backbone.name, backbone.get("model_args") or {})
    channels, size = data["input_size"][0], data["input_size"][-1]
    chosen = {"channels": channels, "image_size": size}
    chosen.update(mean=list(data["mean"]), std=list(data["std"]))
    folder = {"resize_size": math.floor(size / data["crop_pct"]), "augment": True}
    folder.update(interpolation=data["interpolation"], **chosen)
    applied = []
    for role, domain in domains.items():
        node = cfg[role]
        if len(domain.input_shape) != 3 or not isinstance(node, DictConfig):
            continue
        if str(node.get("_target_", "")).endswith("image_folder"):
            left = {k: v for k, v in folder.items() if k in node and node[k] is None}
        else:
            left = {k: v for k, v in chosen.items() if k in node and node[k] != v}
        if left:
            with open_dict(cfg):
                cfg[role].update(left)
            domains[role] = build(cfg[role])
            applied.append(f"{role} {domains[role].name} ({', '.join(left)})")
    keys = ("input_size", "interpolation", "crop_pct", "mean", "std")
    described = ", ".join(f"{key} {data[key]}" for key in keys)
    applied_to = "; ".join(applied) or "no domain (its options are set by hand)"
    log.info(
        "timm %s's data configuration: %s; applied to %s", backbone.name, described, applied_to
    )


def match_channels(cfg: DictConfig, domains: dict[str, Domain], build) -> None:
    shapes = {role: tuple(d.input_shape) for role, d in domains.items()}
    if any(len(shape) != 3 for shape in shapes.values()):
        return
    grey = [role for role, shape in shapes.items() if shape[0] == 1]
    colour = [role for role, shape in shapes.items() if shape[0] == 3]
    if len(grey) != 1 or len(colour) != 1 or not _auto(cfg, grey[0], "channels"):
        return
    (role,), (other,) = grey, colour
    _rebuild(cfg, domains, build, role, "channels", 3)
    log.info(
        "%s %s is grey and %s %s colour: reading %s as 3 channels, its grey repeated (set "
        "%s.channels to choose)",
        role, domains[role].name, other, domains[other].name, role, role,
    )  # fmt: skip


def match_sizes(cfg: DictConfig, domains: dict[str, Domain], build) -> None:
    shapes = {role: tuple(d.input_shape) for role, d in domains.items()}
    if len(shapes) != 2 or any(len(shape) != 3 for shape in shapes.values()):
        return
    sizes = {role: shape[1:] for role, shape in shapes.items()}
    if len(set(sizes.values())) == 1:
        return
    larger = max(shape[1] for shape in shapes.values())
    for role, size in sizes.items():
        if size != (larger, larger) and _auto(cfg, role, "image_size"):
            _rebuild(cfg, domains, build, role, "image_size", larger)
            log.info(
                "%s %s: read at %dx%d to pair with the other domain's larger images (set "
                "%s.image_size to choose)",
                role, domains[role].name, larger, larger, role,
            )  # fmt: skip


def standardize(domains: dict[str, Domain], scaling: str) -> None:
    """Per-feature zero mean and unit variance of feature vectors (1-D inputs), fitted on
    the training inputs of ``joint``: both domains, ``source``: the source's, ``domain``:
    each domain its own; ``none`` leaves them. Images are left to their domains."""
    if scaling not in SCALINGS:
        raise ConfigError(f"data.standardize must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    vectors = {
        role: d
        for role, d in domains.items()
        if len(d.input_shape) == 1 and all(isinstance(d.split(s), TensorSplit) for s in SPLITS)
    }
    widths = {d.input_shape for d in vectors.values()}
    if scaling == "none" or len(vectors) != len(domains):
        return
    if len(widths) > 1 and scaling != "domain":
        return  # no common features to fit: the method's shape check names the problem
    if scaling == "domain":
        fits = {role: [d.train.inputs] for role, d in vectors.items()}
    else:
        roles = list(vectors) if scaling == "joint" else ["source"]
        fitted = [vectors[role].train.inputs for role in roles if role in vectors]
        fits = {role: fitted for role in vectors}
    scaled = set()
    for role, domain in vectors.items():
        if id(domain) in scaled:  # one domain playing both roles
            continue
        inputs = torch.cat(fits[role]).double()
        mean, std = inputs.mean(dim=0), inputs.std(dim=0, correction=0)
        std[std == 0] = 1.0
        for part in {id(domain.split(s)): domain.split(s) for s in SPLITS}.values():
            part.inputs = ((part.inputs.double() - mean) / std).float()  # once per split
        scaled.add(id(domain))
    log.info(
        "feature vectors standardized per feature on the training inputs of %s "
        "(data.standardize=%s)",
        {"joint": "both domains", "source": "the source", "domain": "each domain"}[scaling],
        scaling,
    )


def protocol(cfg: DictConfig) -> str:
    """``data.protocol``: split (train, validation and test examples apart) or transductive."""
    chosen = str((cfg.get("data") or {}).get("protocol", "split"))
    if chosen not in PROTOCOLS:
        raise ConfigError(f"data.protocol must be split or transductive, got {chosen!r}")
    return chosen


def transductive(domains: dict[str, Domain]) -> None:
    """Every example of each domain in each split: all of them train (with the labels the
    setting allows), and the figures are on those same examples."""
    done = set()
    for role, domain in domains.items():
        if id(domain) in done:
            continue
        parts = [domain.split(split) for split in SPLITS]
        if all(isinstance(part, TensorSplit) for part in parts):
            labels = [part.labels for part in parts]
            whole: Dataset = parts[0].with_data(
                torch.cat([part.inputs for part in parts]),
                None if any(y is None for y in labels) else torch.cat(labels),
            )
        else:
            whole = LabeledConcat(parts)
        domain.train = domain.val = domain.test = whole
        done.add(id(domain))
        log.info("%s %s: all %d examples train and test (data.protocol=transductive)",
                 role, domain.name, len(whole))  # fmt: skip


class LabeledConcat(ConcatDataset):
    """Streamed splits joined, with their labels (``targets``) for k-per-class draws."""

    @property
    def targets(self) -> list[int]:
        return [int(y) for part in self.datasets for y in split_labels(part)]
