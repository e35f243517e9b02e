"""Checks run right after composition, before any data is built.

Each failure is a ``ConfigError`` whose message names the setting and how to fix it.
"""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig

from tlframe.data.labels import parse_regime
from tlframe.errors import ConfigError


def _integer(cfg: DictConfig, path: str, minimum: int) -> None:
    value = _select(cfg, path)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{path} must be an integer >= {minimum}, got {value!r}; set {path}=N")


def _positive_number(cfg: DictConfig, path: str) -> None:
    value = _select(cfg, path)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{path} must be a positive number, got {value!r}; e.g. {path}=0.01")


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
    parse_regime(cfg.data.get("target_labels"))
    for name, stage in (cfg.method.get("stages") or {}).items():
        if stage is not None:  # a stage dropped by a method that extends another
            _check_stage(cfg, str(name), stage)


def _check_stage(cfg: DictConfig, name: str, stage: DictConfig) -> None:
    method = cfg.method.get("name", "?")
    if not stage.get("train_on") or "module" not in stage:
        raise ConfigError(
            f"method {method} stage {name!r} needs a module and a train_on mapping "
            "such as {source: all}"
        )
    _positive_number(stage, "optimizer.lr")
    try:
        module_class = get_class(stage.module._target_)
    except Exception as err:
        raise ConfigError(
            f"method {method} stage {name!r}: cannot import {stage.module._target_} ({err})"
        ) from err
    regimes = {role: parse_regime(r) for role, r in stage.train_on.items()}
    if getattr(module_class, "needs_labels", True) and set(regimes.values()) == {"none"}:
        raise ConfigError(
            f"method {method} trains on {', '.join(regimes)} with labels, but "
            "none are available; set data.target_labels=all or an integer k"
        )
