"""What a run leaves behind: metrics.json for the report, and the TensorBoard HPARAMS entry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from tlframe.data.labels import richer
from tlframe.engine.distributed import is_rank_zero
from tlframe.engine.provenance import code_version, utc_date
from tlframe.engine.stages import StageResult
from tlframe.io import atomic_write_json

log = logging.getLogger(__name__)

HPARAM_GROUPS = ("method", "source", "target", "backbone", "head", "optimizer", "scheduler", "data")


def final_metrics(results: Sequence[StageResult]) -> dict[str, Any]:
    """The last stage's evaluation is the run's result."""
    return dict(results[-1].metrics) if results else {}


def labels_read(results: Sequence[StageResult], roles: Sequence[str]) -> dict[str, str]:
    """Per domain, the labels the run read to train or to select its checkpoints: ``all``,
    ``<k> per class`` or ``none``, and ``+ validation labels (oracle)`` where an oracle
    selection read more than the setting has."""
    regimes: dict[str, Any] = {role: "none" for role in roles}
    for result in results:
        for role, regime in result.train_on.items():
            regimes[role] = richer(regimes.get(role, "none"), regime)
    read = {role: f"{r} per class" if isinstance(r, int) else str(r) for role, r in regimes.items()}
    for result in results:
        role = result.selection.role
        if result.selection.oracle and role in read and "oracle" not in read[role]:
            read[role] += " + validation labels (oracle)"
    return read


def write_metrics(
    run_dir: Path,
    config: dict[str, Any],
    method: str,
    domain_names: dict[str, str],
    input_shapes: dict[str, list[int]],
    results: Sequence[StageResult],
    timings: dict[str, float],
) -> dict[str, Any]:
    metrics = final_metrics(results)
    record = {
        "status": "completed",
        "method": method,
        "source": domain_names.get("source"),
        "target": domain_names.get("target"),
        "seed": int(config["seed"]),
        "selection": results[-1].selection.label if results else None,
        "selection_metric": results[-1].selection.metric if results else None,
        "labels_read": labels_read(results, list(domain_names)),
        "metrics": metrics,
        "stages": {
            r.name: {
                "metrics": r.metrics,
                "cached": r.cached,
                "selection": r.selection.label,
                "selected_step": r.selected_step,
                "best_checkpoint": r.best_checkpoint,
                "fit_seconds": round(r.fit_seconds, 3),
                "test_seconds": round(r.test_seconds, 3),
                "trainable_params": r.trainable_params,
                "peak_memory_mb": None if r.peak_memory_mb is None else round(r.peak_memory_mb, 1),
                "peak_memory_measure": r.peak_memory_measure,
            }
            for r in results
        },
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "wall_time_s": round(sum(timings.values()), 3),
        "code_version": code_version(),
        "date": utc_date(),
        "input_shapes": input_shapes,  # as read (a grey domain may be read as RGB)
        "config": config,  # as composed
    }
    if is_rank_zero():  # in a DDP run the other processes return the same record unwritten
        atomic_write_json(record, run_dir / "metrics.json")
    return record


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The values a researcher compares runs by: every setting of the groups that define a
    run, flattened (``method.alignment.trade_off``), without Hydra's plumbing (``_target_``,
    ``_partial_``) or what only names files and roles."""
    params: dict[str, Any] = {"seed": int(cfg.seed)}
    for group in HPARAM_GROUPS:
        if cfg.get(group) is not None:
            params.update(_flat(OmegaConf.to_container(cfg[group], resolve=True), f"{group}."))
    return params


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        found: dict[str, Any] = {}
        for key, value in node.items():
            if not str(key).startswith("_") and key not in ("role", "root", "path"):
                found.update(_flat(value, f"{prefix}{key}."))
        return found
    value = str(node) if isinstance(node, list) else node
    return {prefix[:-1]: value}


def log_hparams(cfg: DictConfig, results: Sequence[StageResult]) -> None:
    """One HPARAMS entry per run: the settings that define it and its final test metrics."""
    if not is_rank_zero():
        return
    params = hyperparameters(cfg)
    scalars = {k: v for k, v in final_metrics(results).items() if isinstance(v, float)}
    for logger in results[-1].loggers if results else []:
        if isinstance(logger, TensorBoardLogger):  # the stage's writer is closed: open anew
            writer = TensorBoardLogger(
                logger.save_dir, name=logger.name, version=logger.version, default_hp_metric=False
            )
            writer.log_hyperparams(params, metrics=scalars)
            writer.finalize("success")
