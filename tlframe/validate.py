"""Checks run right after composition, before any data is built.

Each failure is a ``ConfigError`` whose message names the setting and how to fix it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from tlframe.data.labels import method_setting, parse_regime
from tlframe.data.pairing import protocol
from tlframe.engine.method import Method, Stage
from tlframe.engine.selection import holdout_options, resolve_selection
from tlframe.engine.stages import build_method, stage_regimes, stage_settings
from tlframe.errors import ConfigError
from tlframe.models.backbones import TIMM_BACKBONE, pretrained_weights, timm_weights_file

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


def validate(cfg: DictConfig) -> Method:
    """Reject settings that cannot work, with the override that fixes them; the method, built."""
    _integer(cfg, "seed", 0)
    for key in ("batch_size", "eval_batch_size", "steps_per_epoch"):
        _integer(cfg, f"data.{key}", 1)
    if _select(cfg, "data.num_workers") != "auto":
        _integer(cfg, "data.num_workers", 0)
    _integer(cfg, "trainer.max_epochs", 1)
    _positive_number(cfg, "optimizer.lr")
    for group in ("trainer", "optimizer"):
        _check_arguments(cfg.get(group), group)
    parse_regime(cfg.data.get("target_labels"))
    _check_backbone_weights(cfg)
    method = build_method(cfg)
    regimes = [stage_regimes(cfg, stage) for stage in method.stages]
    setting = method_setting(regimes)
    for stage, train_on in zip(method.stages, regimes, strict=True):
        _check_stage(cfg, method.name, stage, train_on, setting)
    holdout_options(cfg.get("holdout"))
    _check_optimized_metric(cfg.get("optimized_metric"))
    return method


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
    """An unknown model or weights name, or weights that are nowhere to be found, is
    reported now, not after the data is loaded."""
    node = cfg.get("backbone")
    if not isinstance(node, DictConfig):
        return
    if node.get("_target_") in _TORCHVISION_BACKBONES:
        pretrained_weights(node.get("arch", "resnet18"), node.get("weights"))
    elif node.get("_target_") == TIMM_BACKBONE:
        model_args = node.get("model_args") or {}
        timm_weights_file(node.name, model_args, node.pretrained, node.checkpoint_path)


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


def _check_stage(cfg: DictConfig, method: str, stage: Stage, train_on: dict, setting: dict) -> None:
    where = f"method {method} stage {stage.name!r}: "
    own = OmegaConf.create({"trainer": dict(stage.trainer), "optimizer": dict(stage.optimizer)})
    own.merge_with(stage_settings(cfg, stage))
    _positive_number(own, "optimizer.lr", where)
    for group in ("trainer", "optimizer"):  # a stage's own arguments, for the global target
        _check_arguments(own.get(group), group, cfg.get(group), where)
    needs_labels = any(_part_class(f).needs_labels for f in stage.objectives.values())
    # A stage that learns nothing (k-means at test time) may train 0 epochs.
    _integer(own, "trainer.max_epochs", 1 if stage.objectives else 0, where)
    transductive = protocol(cfg) == "transductive"
    resolve_selection(stage.selection or cfg.get("selection"), train_on, setting, transductive)
    if needs_labels and set(train_on.values()) == {"none"}:
        raise ConfigError(
            f"method {method} trains on {', '.join(train_on)} with labels, but "
            "none are available; set data.target_labels=all or an integer k"
        )
    for name, factory in stage.objectives.items():
        missing = [role for role in _part_class(factory).needs_roles if role not in train_on]
        if missing:
            raise ConfigError(
                f"objective {name} needs {' and '.join(missing)} examples, but method {method} "
                f"stage {stage.name!r} trains on {', '.join(train_on)} only; add it to a "
                "method whose last stage reads them"
            )


def _part_class(factory: Any) -> type:
    return factory.func if isinstance(factory, functools.partial) else factory
