"""Running a method's stages: plan them, build each stage's engine, fit, select, test.

A method (``tlframe.engine.method``) declares its stages; each is its own ``Trainer.fit``.
The runner builds a stage's model, objectives and evaluator, then hands it the previous
stage's trained parts (``inherit``), never inside a constructor. Finished stages are cached
by a content key (what the stage trains, with which options, on which data, selected how,
after which previous stage, with which code), so sweeps and reruns reuse them.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import pickle
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from tlframe.data.datamodule import TransferDataModule
from tlframe.data.domain import Domain
from tlframe.data.labels import method_setting, parse_regime
from tlframe.data.pairing import protocol
from tlframe.engine import feature_cache
from tlframe.engine.cache import StageCache, code_version, content_key
from tlframe.engine.checkpoints import file_digest, load_weights, resolve_checkpoint
from tlframe.engine.context import DomainInfo, StageContext
from tlframe.engine.distributed import is_rank_zero, job_processes
from tlframe.engine.memory import peak_memory, reset_peak_memory
from tlframe.engine.method import LABELED, Method, Stage, describe, targets_of
from tlframe.engine.module import Engine
from tlframe.engine.selection import Holdout, Selection, holdout_options, resolve_selection
from tlframe.errors import ConfigError, DataError, TlframeError
from tlframe.io import safe_load

log = logging.getLogger(__name__)

# Trainer settings that change what is shown or where it is written, not what is learned.
_DISPLAY_ONLY = {
    "default_root_dir",
    "enable_progress_bar",
    "enable_model_summary",
    "log_every_n_steps",
    "enable_checkpointing",
    "logger",
    "callbacks",
}
# Data settings that do not change training, or whose effect is in the stage's train_on.
_NOT_TRAINING = {
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "eval_batch_size",
    "target_labels",
}


@dataclass
class StageSpec:
    """One stage, fully resolved: what to build, what it trains on, how it is selected."""

    stage: Stage
    train_on: dict[str, Any]
    trainer: DictConfig
    optimizer: DictConfig
    scheduler: DictConfig | None
    selection: Selection
    setting: dict[str, Any] = field(default_factory=dict)  # the method's labels per domain
    holdout: Holdout | None = None  # selection=holdout in a k-shot stage
    key: str = ""
    init_from: Path | None = None  # load this checkpoint instead of training the stage

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class StageResult:
    name: str
    selection: Selection
    module: pl.LightningModule
    metrics: dict[str, Any]
    cached: bool
    fit_seconds: float
    test_seconds: float
    best_checkpoint: str | None = None
    loggers: list = field(default_factory=list)
    selected_step: int | None = None  # the training step whose weights were kept
    train_on: dict[str, Any] = field(default_factory=dict)
    trainable_params: int = 0  # what its optimizer updates (0: the stage trains nothing)
    peak_memory_mb: float | None = None  # while it was fitted and tested (engine.memory)
    peak_memory_measure: str = ""


def build_method(cfg: DictConfig) -> Method:
    """The run's method: ``cfg.method`` instantiated (its builder called with its options),
    with the objectives of ``+objectives=[...]`` added to its last stage and to its name."""
    method = _instantiate(cfg.method)
    extra = {
        str(name): _instantiate(node)
        for name, node in (cfg.get("objectives") or {}).items()
        if node is not None
    }
    if extra:
        *first, last = method.stages
        stages = [*first, last.with_objectives(extra)]
        method = replace(method, name="+".join([method.name, *extra]), stages=stages)
    _check_options(method)
    return method


def _instantiate(node: DictConfig) -> Any:
    """Hydra wraps what a builder raises; a builder's own one-line error is passed on, and
    an option forced in with ``++`` that its class does not take is named."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, TlframeError):
            raise cause from None
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        where = re.search(r"full_key: ([\w.]+)", str(err))
        if unknown and where:
            raise ConfigError(
                f"{where.group(1)}.{unknown.group(1)} is not an option; check its spelling "
                "against tlframe-train --cfg job"
            ) from err
        raise


def _check_options(method: Method) -> None:
    """An option forced in with ``++`` that a part does not take stops now, not when the
    stage that builds the part starts."""
    for stage in method.stages:
        parts = {"model": stage.model, "evaluator": stage.evaluator, **stage.objectives}
        for name, factory in parts.items():
            if not isinstance(factory, functools.partial):
                continue
            known = inspect.signature(factory.func).parameters
            for option in factory.keywords:
                if option not in known:
                    raise ConfigError(
                        f"{option} is not an option of {factory.func.__qualname__} (method "
                        f"{method.name}, stage {stage.name!r}, part {name}); its options: "
                        f"{', '.join(p for p in known if p not in ('model', 'context'))}"
                    )


def plan_stages(cfg: DictConfig, method: Method | None = None) -> list[StageSpec]:
    """Resolve the method's stages and give each its content key."""
    method = method or build_method(cfg)
    if not method.stages:
        raise ConfigError(f"method {method.name!r} declares no stages")
    regimes = [stage_regimes(cfg, stage) for stage in method.stages]
    setting = method_setting(regimes)
    transductive = protocol(cfg) == "transductive"
    specs, previous = [], None
    for stage, train_on in zip(method.stages, regimes, strict=True):
        choice = stage.selection or cfg.get("selection")
        selection = resolve_selection(choice, train_on, setting, transductive)
        own = stage_settings(cfg, stage)
        spec = StageSpec(
            stage=stage,
            train_on=train_on,
            trainer=_overlay(cfg.trainer, stage.trainer, own.get("trainer")),
            optimizer=_overlay(cfg.optimizer, stage.optimizer, own.get("optimizer")),
            scheduler=cfg.get("scheduler") or None,
            selection=selection,
            setting=setting,
            holdout=holdout_options(cfg.get("holdout")) if selection.holdout else None,
        )
        if stage.init_from:
            spec.init_from = resolve_checkpoint(stage.init_from, spec.name)
        spec.key = _stage_key(cfg, spec, previous)
        specs.append(spec)
        previous = spec.key
    return specs


def stage_regimes(cfg: DictConfig, stage: Stage) -> dict[str, Any]:
    """A stage's ``train_on``: each domain's label regime, normalised (``labeled``: the
    target labels the setting has, ``data.target_labels``)."""
    labeled = cfg.data.get("target_labels")
    return {
        role: parse_regime(labeled if regime == LABELED else regime)
        for role, regime in stage.train_on.items()
    }


def stage_settings(cfg: DictConfig, stage: Stage) -> dict[str, Any]:
    """The user's own trainer/optimizer settings for one stage (``stages.<name>``, e.g.
    ``++stages.target.trainer.val_check_interval=10``)."""
    node = (cfg.get("stages") or {}).get(stage.name)
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _overlay(base: DictConfig, *overrides: Mapping[str, Any] | None) -> DictConfig:
    """A stage's trainer or optimizer settings over the global ones: the method's, then the
    user's. They may set arguments the global config does not list (any Trainer or
    optimizer argument)."""
    merged = copy.deepcopy(base)
    OmegaConf.set_struct(merged, False)
    for override in overrides:
        merged.merge_with(override or {})
    return merged


def _stage_key(cfg: DictConfig, spec: StageSpec, previous: str | None) -> str:
    roles = set(spec.train_on) | ({spec.selection.role} - {None})

    def plain(node) -> Any:
        return OmegaConf.to_container(node, resolve=True) if node is not None else None

    stage = spec.stage
    parts = {"model": stage.model, "objectives": stage.objectives, "evaluator": stage.evaluator}
    configs = {
        "backbone": plain(cfg.backbone),
        "head": plain(cfg.head),
        "scheduler": plain(spec.scheduler),
        "domains": {role: plain(cfg[role]) for role in sorted(roles) if role in cfg},
        "callbacks": plain(cfg.get("callbacks")),
    }
    material = {
        "stage": spec.name,
        **{name: describe(part) for name, part in parts.items()},
        "train_on": spec.train_on,
        "selection": spec.selection.label,
        "holdout": asdict(spec.holdout) if spec.holdout else None,
        "trainer": {k: v for k, v in plain(spec.trainer).items() if k not in _DISPLAY_ONLY},
        "optimizer": plain(spec.optimizer),
        **{k: v for k, v in configs.items() if k != "callbacks"},
        "data": {k: v for k, v in plain(cfg.data).items() if k not in _NOT_TRAINING},
        "seed": cfg.seed,
        "previous": previous,
        "code": code_version(targets_of(parts) | _config_targets(configs) | {__name__}),
    }
    if spec.init_from:
        material["init_from"] = file_digest(spec.init_from)
    weights = cfg.backbone.get("checkpoint_path")  # a file the backbone's weights come from
    if weights:
        material["backbone_weights"] = file_digest(Path(weights).expanduser())
    return content_key(material)


def _config_targets(node: Any) -> set[str]:
    """The modules named by the ``_target_`` entries of a plain config."""
    if isinstance(node, dict):
        found = {str(node["_target_"]).rsplit(".", 1)[0]} if "_target_" in node else set()
        return found.union(*(_config_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_config_targets(v) for v in node))
    return set()


def domain_infos(domains: dict[str, Domain]) -> dict[str, DomainInfo]:
    return {
        role: DomainInfo(
            d.name,
            tuple(d.class_names),
            tuple(d.input_shape),
            d.class_attributes,
            None if d.seen_classes is None else tuple(d.seen_classes),
        )
        for role, d in domains.items()
    }


def build_callbacks(
    spec: StageSpec, cfg: DictConfig, checkpoint_dir: Path, loggers: list
) -> list[pl.Callback]:
    callbacks = []
    show_progress = spec.trainer.get("enable_progress_bar", True)
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node or (name == "progress_bar" and not show_progress):
            continue
        if node._target_.endswith("LearningRateMonitor") and not loggers:
            continue  # it has nowhere to write with logger=none, and Lightning would refuse
        overrides = {}
        if node.get("monitor") == "auto":
            overrides.update(monitor=spec.selection.metric, mode=spec.selection.mode)
        if name == "model_checkpoint":
            overrides["dirpath"] = str(checkpoint_dir)
        callbacks.append(instantiate(node, **overrides))
    return callbacks


def build_loggers(cfg: DictConfig, version: str) -> list:
    return [
        instantiate(node, version=version)
        for node in (cfg.get("logger") or {}).values()
        if node is not None and "_target_" in node
    ]


def build_module(
    cfg: DictConfig, spec: StageSpec, infos: dict[str, DomainInfo], inherited: dict | None
) -> Engine:
    """The stage's engine: its model, objectives and evaluator built for its context, then
    handed the previous stage's parts (``inherited``)."""
    stage = spec.stage
    if stage.inherits and inherited is None and not spec.init_from:
        raise ConfigError(
            f"stage {spec.name!r} builds on a previous stage's model, but it is the first "
            "stage; declare a stage before it in the method"
        )
    context = StageContext(
        domains=infos,
        train_on=spec.train_on,
        name=spec.name,
        setting=spec.setting,
        selection_metric=spec.selection.metric,
        seed=int(cfg.seed),
    )
    model = stage.model(
        backbone=instantiate(cfg.backbone), head=instantiate(cfg.head), context=context
    )
    objectives = {
        name: factory(model=model, context=context) for name, factory in stage.objectives.items()
    }
    evaluator = stage.evaluator(model=model, context=context, objectives=objectives)
    module = Engine(
        model,
        objectives,
        evaluator,
        optimizer=instantiate(spec.optimizer),
        scheduler=instantiate(spec.scheduler) if spec.scheduler else None,
        context=context,
    )
    if inherited is not None:
        model.inherit(inherited)
        for objective in objectives.values():
            objective.inherit(inherited, model)
    performance = cfg.get("performance") or {}
    if performance.get("channels_last"):
        module.use_channels_last()
    if performance.get("compile"):
        for part in ("backbone", "trunk"):
            if hasattr(model, part):  # in place: parameter names (and caches) stay the same
                getattr(model, part).compile()
    return module


def run_stage(
    cfg: DictConfig,
    spec: StageSpec,
    domains: dict[str, Domain],
    inherited: dict | None,
    run_dir: Path,
    cache: StageCache,
) -> StageResult:
    """Fit one stage (or take it from the cache), restore its selected weights, test it."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    reset_peak_memory()
    module = build_module(cfg, spec, domain_infos(domains), inherited)
    fraction = spec.holdout.fraction if spec.holdout else None
    datamodule = _datamodule(cfg, spec, domains, fraction)
    loggers = build_loggers(cfg, spec.name)
    trainer = instantiate(
        spec.trainer,
        callbacks=build_callbacks(spec, cfg, run_dir / "checkpoints" / spec.name, loggers),
        logger=loggers or False,
    )
    cacheable = not spec.trainer.get("fast_dev_run")
    entry = cache.load(spec.key) if cacheable else None
    best_path, fit_seconds, selected = None, 0.0, {}
    if spec.init_from:
        load_weights(module, spec.init_from)
        best_path = str(spec.init_from)
        log.info("stage %s: loaded from %s instead of training", spec.name, spec.init_from)
    elif not spec.stage.objectives:
        log.info("stage %s: nothing to train; it evaluates its model", spec.name)
    elif entry is not None:
        module.load_state_dict(entry["state_dict"])
        selected = dict((entry.get("info") or {}).get("selected") or {})
        log.info("stage %s: reused from cache %s", spec.name, cache.path(spec.key))
    else:
        log.info(
            "stage %s: training on %s, selecting on %s",
            spec.name,
            ", ".join(f"{r} (labels: {v})" for r, v in spec.train_on.items()),
            spec.selection.label,
        )
        start = time.perf_counter()
        features = _feature_domains(cfg, spec, module, domains, trainer, cache)
        fit_data = datamodule if features is None else _datamodule(cfg, spec, features, fraction)
        with feature_cache.reading_features(module.model, on=features is not None):
            _fit(trainer, module, fit_data, _resume_point(cfg, spec, run_dir))
            best_path, selected = _restore_best(trainer, module)
        if spec.holdout and spec.holdout.retrain and selected.get("step"):
            module, trainer, best_path = _retrain(
                cfg, spec, domains, inherited, run_dir, selected["step"]
            )
        fit_seconds = time.perf_counter() - start
        if cacheable and is_rank_zero():  # every DDP process holds the same weights
            cache.store(
                spec.key,
                module.state_dict(),
                {"stage": spec.name, "selection": spec.selection.label, "selected": selected},
            )
    start = time.perf_counter()
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics: dict[str, Any] = {}
    for per_loader in results:
        metrics.update({k: float(v) for k, v in per_loader.items()})
    metrics.update(module.evaluator.results())
    if spec.selection.holdout and selected.get("score") is not None:
        metrics[spec.selection.metric] = selected["score"]  # of the selected step, held out
    trains = spec.stage.objectives and not spec.init_from
    peak_mb, measure = peak_memory(module.device)
    return StageResult(
        name=spec.name,
        selection=spec.selection,
        module=module,
        metrics=metrics,
        cached=entry is not None,
        fit_seconds=fit_seconds,
        test_seconds=time.perf_counter() - start,
        best_checkpoint=best_path,
        loggers=trainer.loggers,
        selected_step=selected.get("step"),
        train_on=spec.train_on,
        trainable_params=sum(p.numel() for p in module.trainable_parameters()) if trains else 0,
        peak_memory_mb=peak_mb,
        peak_memory_measure=measure,
    )


def _feature_domains(
    cfg: DictConfig,
    spec: StageSpec,
    module: Engine,
    domains: dict[str, Domain],
    trainer: pl.Trainer,
    cache: StageCache,
) -> dict[str, Domain] | None:
    """The domains as the backbone's features, where the stage's backbone is frozen and
    its inputs fixed (``tlframe.engine.feature_cache``); None where it trains on inputs."""
    performance = cfg.get("performance") or {}
    if not feature_cache.enabled(performance) or not feature_cache.qualifies(
        module, domains, trainer.world_size
    ):
        return None
    return feature_cache.feature_domains(
        module,
        domains,
        set(spec.train_on),
        trainer.strategy.root_device,
        int(cfg.data.eval_batch_size),
        cache.features_dir(),
        spec.name,
    )


def _datamodule(
    cfg: DictConfig, spec: StageSpec, domains: dict[str, Domain], holdout: float | None
) -> TransferDataModule:
    data = OmegaConf.to_container(cfg.data)
    return TransferDataModule(
        domains, spec.train_on, seed=int(cfg.seed), holdout_fraction=holdout, **data
    )


def _retrain(
    cfg: DictConfig,
    spec: StageSpec,
    domains: dict[str, Domain],
    inherited: dict | None,
    run_dir: Path,
    steps: int,
) -> tuple[pl.LightningModule, pl.Trainer, str]:
    """``holdout.retrain``: train the stage again from its start, on all k labeled examples
    per class, for the number of steps the held-out examples selected; keep the final
    weights (saved as the stage's ``best.ckpt``)."""
    log.info("stage %s: retraining on all its labeled examples for %d steps", spec.name, steps)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_module(cfg, spec, domain_infos(domains), inherited)
    loggers = build_loggers(cfg, f"{spec.name}_retrain")
    checkpoint_dir = run_dir / "checkpoints" / spec.name
    callbacks = [
        callback
        for callback in build_callbacks(spec, cfg, checkpoint_dir, loggers)
        if not isinstance(callback, ModelCheckpoint)
    ]
    trainer = instantiate(
        spec.trainer,
        max_steps=steps,
        limit_val_batches=0,
        callbacks=callbacks,
        logger=loggers or False,
    )
    trainer.fit(module, datamodule=_datamodule(cfg, spec, domains, None))
    path = checkpoint_dir / "best.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    return module, trainer, str(path)


def _fit(trainer: pl.Trainer, module, datamodule, resume: Path | None) -> None:
    """``Trainer.fit``, resuming from a checkpoint loaded weights-only (no pickled code)."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except pickle.UnpicklingError as err:
        if resume is None:
            raise
        raise DataError(
            f"resume=true: refused {resume}: it holds more than weights (weights-only "
            "loading); delete it to train the stage from the start"
        ) from err


def _resume_point(cfg: DictConfig, spec: StageSpec, run_dir: Path) -> Path | None:
    """With ``resume=true``, the stage's last checkpoint in this run dir, if it has one."""
    last = run_dir / "checkpoints" / spec.name / "last.ckpt"
    if cfg.get("resume") and last.is_file():
        log.info("stage %s: resuming from %s", spec.name, last)
        return last
    return None


def _restore_best(
    trainer: pl.Trainer, module: pl.LightningModule
) -> tuple[str | None, dict[str, Any]]:
    """Load the checkpoint chosen by the selection metric (safely: weights only); its path,
    and its training step and score."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    if not path:
        return None, {}
    checkpoint = safe_load(path)
    module.load_state_dict(checkpoint["state_dict"])
    score = callback.best_model_score
    selected = {
        "step": int(checkpoint.get("global_step", 0)),
        "score": None if score is None else float(score),
    }
    return str(path), selected


def run_stages(
    cfg: DictConfig, domains: dict[str, Domain], run_dir: Path, method: Method | None = None
) -> list[StageResult]:
    """Run the method's stages in order, each building on the previous one's parts."""
    cache = StageCache(cfg.paths.cache_dir, enabled=bool(cfg.get("cache_stages", True)))
    results: list[StageResult] = []
    inherited = None
    with job_processes():  # trainer=ddp: the processes a stage started end with the job
        for spec in plan_stages(cfg, method):
            result = run_stage(cfg, spec, domains, inherited, run_dir, cache)
            inherited = result.module.parts()
            results.append(result)
    return results
