"""Checks run right after composition, before any data is built.

Each failure is a ``ConfigError`` whose message names the setting and how to fix it.
"""

from __future__ import annotations

import inspect

from hydra.utils import get_class, get_object
from omegaconf import DictConfig

from tlframe.data.labels import method_setting, parse_regime
from tlframe.errors import ConfigError
from tlframe.models.backbones import pretrained_weights
from tlframe.selection import holdout_options, resolve_selection

# Backbones whose ``arch`` and ``weights`` name torchvision models and weights.
_TORCHVISION_BACKBONES = {"tlframe.models.backbones.resnet"}


def _integer(cfg: DictConfig, path: str, minimum: int, where: str = "") -> None:
    value = _select(cfg, path)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{where}{path} must be an integer >= {minimum}, got {value!r}; "
            f"set {_origin(cfg, path)}=N"
        )


def _positive_number(cfg: DictConfig, path: str, where: str = "") -> None:
    value = _select(cfg, path)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(
            f"{where}{path} must be a positive number, got {value!r}; "
            f"e.g. {_origin(cfg, path)}=0.01"
        )


def _origin(cfg: DictConfig, path: str) -> str:
    """The setting a user changes to fix ``path``: the option it interpolates, if any
    (a stage's ``optimizer.lr: ${method.lr_target}`` is fixed with method.lr_target)."""
    parent, _, key = path.rpartition(".")
    node = _select(cfg, parent) if parent else cfg
    raw = node._get_node(key)._value() if isinstance(node, DictConfig) else None
    if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}"):
        inner = raw[2:-1]
        if inner.replace(".", "").replace("_", "").isalnum():
            return inner
    return path


def _select(cfg: DictConfig, path: str):
    node = cfg
    for key in path.split("."):
        if not isinstance(node, DictConfig) or key not in node:
            return None
        node = node[key]
    return node


def validate(cfg: DictConfig) -> None:
    """Reject settings that cannot work, with the override that fixes them."""
    _integer(cfg, "seed", 0)
    for key in ("batch_size", "eval_batch_size", "steps_per_epoch"):
        _integer(cfg, f"data.{key}", 1)
    _integer(cfg, "data.num_workers", 0)
    _integer(cfg, "trainer.max_epochs", 1)
    _positive_number(cfg, "optimizer.lr")
    for group in ("trainer", "optimizer"):
        _check_arguments(cfg.get(group), group)
    parse_regime(cfg.data.get("target_labels"))
    _check_backbone_weights(cfg)
    stages = _stages(cfg)
    setting = method_setting(
        [dict(s.train_on) for s in stages.values() if isinstance(s.get("train_on"), DictConfig)]
    )
    for name, stage in stages.items():
        _check_stage(cfg, name, stage, setting)
    holdout_options(cfg.get("holdout"))
    _check_optimized_metric(cfg.get("optimized_metric"))


def _stages(cfg: DictConfig) -> dict[str, DictConfig]:
    """The method's stages, less those a method extending another drops (``<name>: null``)."""
    stages = cfg.method.get("stages") or {}
    return {str(name): stage for name, stage in stages.items() if stage is not None}


def _check_optimized_metric(metric: str | None) -> None:
    """A search optimises only what model selection may read: never the test split, never
    labels the setting lacks (the oracle figures)."""
    if metric is None:
        return
    if str(metric).startswith("test/"):
        raise ConfigError(
            f"optimized_metric={metric} is a test figure: tuning on it makes the test "
            "split choose; optimise a val/ metric, e.g. optimized_metric=val/target/im"
        )
    if "oracle" in str(metric):
        raise ConfigError(
            f"optimized_metric={metric} reads labels this setting does not have; optimise "
            "what it has: val/target/holdout_acc (selection=holdout) with k target labels, "
            "or a label-free val/target/im, snd or dev without target labels"
        )


def _check_backbone_weights(cfg: DictConfig) -> None:
    """An unknown model or weights name is reported now, not after the data is loaded."""
    node = cfg.get("backbone")
    if isinstance(node, DictConfig) and node.get("_target_") in _TORCHVISION_BACKBONES:
        pretrained_weights(node.get("arch", "resnet18"), node.get("weights"))


def _check_arguments(
    node: DictConfig | None, group: str, base: DictConfig | None = None, where: str = ""
) -> None:
    """A misspelt Trainer or optimizer argument is reported now, not as a TypeError once
    the stage that uses it starts. ``base`` (the global config a stage's own settings are
    merged over) gives the ``_target_`` when ``node`` has none."""
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_") or (base.get("_target_") if base is not None else None)
    if target is None:
        return
    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except ImportError as err:
        raise ConfigError(
            f"{where}{group}._target_={target} cannot be imported; name a class or "
            "function by its full module path"
        ) from err
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    known = {p.name for p in parameters} - {"self", "params"}
    unknown = sorted(k for k in node if not str(k).startswith("_") and k not in known)
    if unknown:
        raise ConfigError(
            f"{where}{group}.{unknown[0]} is not an argument of {target}; check its "
            f"spelling against: {', '.join(sorted(known))}"
        )


def _check_stage(cfg: DictConfig, name: str, stage: DictConfig, setting: dict) -> None:
    method = cfg.method.get("name", "?")
    if not stage.get("train_on") or "module" not in stage:
        raise ConfigError(
            f"method {method} stage {name!r} needs a module and a train_on mapping "
            "such as {source: all}"
        )
    # A stage's own settings (often interpolated from method options such as lr_target)
    where = f"method {method} stage {name!r}: "
    _positive_number(stage, "optimizer.lr", where)
    for group in ("trainer", "optimizer"):  # a stage's own arguments, for the global target
        _check_arguments(stage.get(group), group, cfg.get(group), where)
    try:
        module_class = get_class(stage.module._target_)
    except Exception as err:
        raise ConfigError(
            f"method {method} stage {name!r}: cannot import {stage.module._target_} ({err})"
        ) from err
    regimes = {role: parse_regime(r) for role, r in stage.train_on.items()}
    # A stage that needs no labels and sees none (k-means at test time) may train 0 epochs.
    trains = getattr(module_class, "needs_labels", True) or set(regimes.values()) != {"none"}
    _integer(stage, "trainer.max_epochs", 1 if trains else 0, where)
    resolve_selection(stage.get("selection") or cfg.get("selection"), regimes, setting)
    if getattr(module_class, "needs_labels", True) and set(regimes.values()) == {"none"}:
        raise ConfigError(
            f"method {method} trains on {', '.join(regimes)} with labels, but "
            "none are available; set data.target_labels=all or an integer k"
        )
