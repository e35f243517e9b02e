"""``tlframe-rank``: score candidate source models for a target before any fine-tuning.

``tlframe-rank target=hand_digits 'sources=[synth_digits,synth_digits_color,synth_letters]'``
(``conf/rank.yaml`` documents every option). Each candidate is a source model: for a domain
in ``sources``, the source stage of ``method=source_only`` on it, taken from the stage cache
``tlframe-train`` fills (or trained and cached now); for an entry of ``checkpoints``, that
checkpoint. The model reads the target's labeled training examples once; its features give
LogME, its softmax predictions LEEP, and its features of both domains the proxy A-distance
(:mod:`tlframe.tools.transferability`). The candidates, ranked by ``rank_by``, go to ``rank.md``
and ``rank.csv`` in the run dir (and to the terminal); ``tlframe-report <sweep> --rank
<rank.csv>`` sets them beside the transfer the sweep measured.

The other command-line overrides (backbone, head, optimizer, data, trainer, seed, the
target's options, ``source.<option>`` for every source) apply to every candidate, exactly as
``tlframe-train method=source_only source=<candidate>`` would read them, so a rank run with
a sweep's overrides reuses the sweep's source models. When a source gives inputs of another
shape than the target (``synth_digits_color`` is RGB, ``hand_digits`` grey), the target is
read with the source's ``channels`` (and ``image_size``), as the ``conf/dataset`` presets do.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import Dataset, Subset

from tlframe.config import config_dir, register_configs
from tlframe.data.domain import Domain, TensorSplit, batches, split_labels
from tlframe.data.labels import k_per_class, parse_regime
from tlframe.engine.cache import StageCache
from tlframe.engine.callbacks.feature_space import extract_features
from tlframe.engine.checkpoints import load_weights
from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stages
from tlframe.errors import ConfigError, TlframeError, as_output_error
from tlframe.tools import transferability as scores
from tlframe.train import _instantiate_domain, build_domains, check_input_shapes
from tlframe.validate import validate

log = logging.getLogger("tlframe")
register_configs()

# Overrides of the rank run that are not passed on to a candidate's config.
_RANK_ONLY = {"sources", "checkpoints", "rank_by", "max_target_examples", "a_distance_points"}
CSV_COLUMNS = (
    "rank",
    "candidate",
    "source",
    "target",
    "logme",
    "leep",
    "a_distance",
    "rank_logme",
    "rank_leep",
    "rank_a_distance",
    "source_classes",
    "target_examples",
    "target_input",
    "model",
    "seconds",
    "rank_by",
)


@dataclass(frozen=True)
class Candidate:
    name: str  # a domain of conf/domain/, or a checkpoint location as given
    kind: str  # "source" | "checkpoint"


# ------------------------------------------------------------------------ the candidates
def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # sources=synth_digits: one candidate
        return [value] if value.strip() else []
    if isinstance(value, ListConfig | list | tuple):
        return [str(v) for v in value]
    raise ConfigError(f"{key} must be a list such as {key}=[a,b], got {value!r}")


def candidates(cfg: DictConfig) -> list[Candidate]:
    """The candidates named by ``sources`` and ``checkpoints``, checked."""
    sources = _as_list(cfg.get("sources"), "sources")
    checkpoints = _as_list(cfg.get("checkpoints"), "checkpoints")
    if not sources and not checkpoints:
        raise ConfigError(
            "no candidates to rank; give source domains, e.g. "
            "'sources=[synth_digits,synth_letters]', or 'checkpoints=[<run dir or .ckpt>]'"
        )
    known = sorted(p.stem for p in (config_dir() / "domain").glob("*.yaml"))
    for name in sources:
        if name not in known:
            raise ConfigError(f"sources: unknown domain {name!r}; choose from {', '.join(known)}")
    for key, names in (("sources", sources), ("checkpoints", checkpoints)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"{key} names {repeated[0]!r} more than once; list it once")
    return [Candidate(n, "source") for n in sources] + [
        Candidate(c, "checkpoint") for c in checkpoints
    ]


def check_rank_config(cfg: DictConfig) -> None:
    """Rank settings that cannot work, reported before any data is built."""
    if cfg.get("rank_by") not in scores.SCORES:
        raise ConfigError(
            f"rank_by must be one of {', '.join(scores.SCORES)}, got {cfg.get('rank_by')!r}"
        )
    for key, minimum in (("max_target_examples", 2), ("a_distance_points", 4)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if parse_regime(cfg.data.get("target_labels")) == "none":
        raise ConfigError(
            "LogME and LEEP need target labels, but data.target_labels=none; "
            "set data.target_labels=all or an integer k (labeled examples per class)"
        )


def _override_key(override: str) -> str:
    return override.lstrip("~+").split("=", 1)[0].strip()


def passed_on(overrides: list[str], drop_source: bool) -> list[str]:
    """The rank run's overrides that also shape each candidate's config."""
    kept = []
    for override in overrides:
        key = _override_key(override)
        if key in _RANK_ONLY or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if drop_source and key == "source":
            continue
        kept.append(override)
    return kept


def _compose(overrides: list[str], candidate: Candidate) -> DictConfig:
    """``conf/rank.yaml`` with ``overrides``, inside a Hydra app or outside one."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="rank", overrides=overrides)
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="rank", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"candidate {candidate.name}: the overrides do not fit its config ({reason}); "
            "a source.<option> override must be an option of every source in sources"
        ) from err


def candidate_config(overrides: list[str], candidate: Candidate, out_dir: Path) -> DictConfig:
    """The ``tlframe-train method=source_only`` config whose source stage is the candidate:
    the rank run's ``overrides`` with ``source=<candidate>`` (or the checkpoint loaded)."""
    if candidate.kind == "source":
        chosen = [*passed_on(overrides, drop_source=True), f"source={candidate.name}"]
        cand = _compose(chosen, candidate)
    else:
        cand = _compose(passed_on(overrides, drop_source=False), candidate)
        _use_checkpoint(cand, candidate.name)
    with open_dict(cand):
        cand.paths.output_dir = str(out_dir)
    return cand


def _use_checkpoint(cand: DictConfig, location: str) -> None:
    """Load the source stage from ``location``; a run dir's metrics.json names its source
    domain, backbone and head."""
    record = Path(location).expanduser() / "metrics.json"
    config = {}
    if record.is_file():
        try:
            config = json.loads(record.read_text()).get("config") or {}
        except (OSError, json.JSONDecodeError):
            config = {}
    with open_dict(cand):
        for group in ("source", "backbone", "head"):
            if isinstance(config.get(group), dict):
                cand[group] = OmegaConf.create(config[group])
        cand.method.init_from = str(location)


# ----------------------------------------------------------------------- data and model
def matched_domains(cfg: DictConfig) -> dict[str, Domain]:
    """Source and target, the target read with the source's channels and image size when
    they differ (the grey target repeated into RGB for a colour source, and so on)."""
    domains = build_domains(cfg)
    source, target = domains["source"], domains["target"]
    if tuple(source.input_shape) != tuple(target.input_shape):
        changes: dict[str, int] = {}
        shape_s, shape_t = tuple(source.input_shape), tuple(target.input_shape)
        if "channels" in cfg.target and shape_s[0] != shape_t[0]:
            changes["channels"] = int(shape_s[0])
        square = len(shape_s) == 3 and shape_s[1] == shape_s[2]
        if "image_size" in cfg.target and square and shape_s[1:] != shape_t[1:]:
            changes["image_size"] = int(shape_s[1])
        if changes:
            with open_dict(cfg):
                cfg.target.update(changes)
            domains["target"] = _instantiate_domain(cfg.target)
            log.info(
                "target %s read with %s to match source %s",
                target.name,
                ", ".join(f"{k}={v}" for k, v in changes.items()),
                source.name,
            )
    check_input_shapes(domains)
    return domains


def source_model(cfg: DictConfig, domains: dict[str, Domain], out_dir: Path):
    """The candidate's trained source stage and where it came from (checkpoint, cache or
    trained now, then cached as ``tlframe-train`` would)."""
    spec = plan_stages(cfg)[0]
    cache = StageCache(cfg.paths.cache_dir, enabled=bool(cfg.get("cache_stages", True)))
    if spec.init_from is not None:
        module = build_module(cfg, spec, domain_infos(domains), None)
        load_weights(module, spec.init_from)
        return module, str(spec.init_from)
    entry = cache.load(spec.key)
    if entry is not None:
        module = build_module(cfg, spec, domain_infos(domains), None)
        module.load_state_dict(entry["state_dict"])
        return module, f"cache {spec.key}"
    log.info("no cached source stage for %s: training it", domains["source"].name)
    result = run_stages(cfg, domains, out_dir)[0]
    return result.module, f"trained {spec.key}"


def target_examples(cfg: DictConfig, domain: Domain, limit: int) -> Dataset:
    """The target's labeled training examples: ``data.target_labels`` of them (all, or k
    per class drawn with ``seed`` as a training run draws them), evenly spaced to ``limit``."""
    regime = parse_regime(cfg.data.get("target_labels"))
    labels = split_labels(domain.train)
    if isinstance(regime, int):
        indices = k_per_class(labels, regime, int(cfg.seed), domain=domain.name)
    else:
        indices = torch.arange(len(labels))
    if len(indices) > limit:
        indices = indices[torch.linspace(0, len(indices) - 1, limit).long()]
    if isinstance(domain.train, TensorSplit):
        return domain.train.subset(indices)
    return Subset(domain.train, indices.tolist())


@torch.no_grad()
def features_and_probs(
    module: torch.nn.Module, dataset: Dataset, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backbone features, softmax predictions of the source head, and labels."""
    module.eval()
    device = next(module.parameters()).device
    features, probs, labels = [], [], []
    for x, y in batches(dataset, batch_size):
        feature, logits = module.model.features_and_logits(x.to(device), "source")
        probs.append(logits.float().softmax(dim=1).cpu())
        features.append(feature.flatten(1).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(features).numpy(), torch.cat(probs).numpy(), torch.cat(labels).numpy()


def _evenly(array: np.ndarray, count: int) -> np.ndarray:
    return array[np.linspace(0, len(array) - 1, min(count, len(array))).astype(int)]


def score_candidate(cfg: DictConfig, candidate: Candidate, out_dir: Path) -> dict[str, Any]:
    """One candidate's row: its three scores and what they were computed from."""
    start = time.perf_counter()
    validate(cfg)
    domains = matched_domains(cfg)
    module, origin = source_model(cfg, domains, out_dir)
    target = domains["target"]
    examples = target_examples(cfg, target, int(cfg.max_target_examples))
    features, probs, labels = features_and_probs(module, examples, int(cfg.data.eval_batch_size))
    source_features, _ = extract_features(
        module.model,
        "source",
        domains["source"].train,
        int(cfg.a_distance_points),
        device=next(module.parameters()).device,
    )
    count = min(len(source_features), len(features), int(cfg.a_distance_points))
    distance = scores.proxy_a_distance(
        _evenly(source_features, count), _evenly(features, count), seed=int(cfg.seed)
    )
    return {
        "candidate": candidate.name,
        "source": domains["source"].name,
        "target": target.name,
        "logme": scores.logme(features, labels),
        "leep": scores.leep(probs, labels),
        "a_distance": distance,
        "source_classes": domains["source"].num_classes,
        "target_examples": len(labels),
        "target_input": "x".join(str(s) for s in target.input_shape),
        "model": origin,
        "seconds": round(time.perf_counter() - start, 1),
    }


# ---------------------------------------------------------------------------- the table
def order(rows: list[dict[str, Any]], rank_by: str) -> list[dict[str, Any]]:
    """Rows with a rank per score (1 = predicted best), sorted by ``rank_by``'s."""
    for name, higher in scores.SCORES.items():
        for row, position in zip(rows, scores.ranks([r[name] for r in rows], higher), strict=True):
            row[f"rank_{name}"] = position
    for row in rows:
        row["rank"] = row[f"rank_{rank_by}"]
        row["rank_by"] = rank_by
    return sorted(rows, key=lambda r: (r["rank"], r["candidate"]))


def to_markdown(rows: list[dict[str, Any]], rank_by: str) -> str:
    target = rows[0]["target"] if rows else "?"
    lines = [
        f"Transferability to {target}, ranked by {scores.SCORE_NAMES[rank_by]} "
        f"({rows[0]['target_examples'] if rows else 0} labeled target training examples):",
        "",
        "| rank | candidate | source | source classes | LogME | LEEP | A-distance | model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['candidate']} | {r['source']} | {r['source_classes']} | "
            f"{r['logme']:.4f} | {r['leep']:.4f} | {r['a_distance']:.3f} | {r['model']} |"
        )
    lines += [
        "",
        "LogME (features) and LEEP (source predictions): higher predicts better transfer. "
        "Proxy A-distance between source and target features: lower = closer domains.",
    ]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], run_dir: Path, rank_by: str) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = to_markdown(rows, rank_by)
    (run_dir / "rank.md").write_text(text)
    with (run_dir / "rank.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return text


# --------------------------------------------------------------------------- entrypoint
def rank(cfg: DictConfig, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Score every candidate and write rank.md / rank.csv into the run dir. ``overrides``
    made ``cfg`` from ``conf/rank.yaml`` (default: this Hydra run's command line)."""
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run_dir = Path(cfg.paths.output_dir)
    chosen = candidates(cfg)
    check_rank_config(cfg)
    rows = []
    for candidate in chosen:
        slug = Path(candidate.name).name if candidate.kind == "checkpoint" else candidate.name
        out_dir = run_dir / "candidates" / slug
        cand_cfg = candidate_config(overrides, candidate, out_dir)
        log.info("scoring %s", candidate.name)
        rows.append(score_candidate(cand_cfg, candidate, out_dir))
    rows = order(rows, str(cfg.rank_by))
    text = write_tables(rows, run_dir, str(cfg.rank_by))
    print(text + f"\nrank.md and rank.csv in {run_dir}", flush=True)
    return rows


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="rank")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        rank(cfg)
    except Exception as err:
        user_error = err if isinstance(err, TlframeError) else as_output_error(err)
        if user_error is None or os.environ.get("TLFRAME_DEBUG"):
            raise
        print(f"tlframe-rank: error: {user_error}", file=sys.stderr, flush=True)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
