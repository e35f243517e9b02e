"""The Hydra entrypoint: compose -> build domains -> run the method's stages -> metrics.

``tlframe-train`` (or ``python -m tlframe.train``) with Hydra overrides, e.g.
``tlframe-train method=target_only data.target_labels=10 seed=1``.

torch and Lightning (whose import pulls in torchmetrics, torchvision, scipy and matplotlib:
about 7 s) are imported when a job starts, not with this module, so that ``--help``,
``--cfg job`` and a mistyped override answer in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tlframe.config import config_dir, register_configs
from tlframe.errors import ConfigError, TlframeError, as_output_error

if TYPE_CHECKING:
    from tlframe.data.domain import Domain
    from tlframe.engine.method import Method

log = logging.getLogger("tlframe")
register_configs()

# Lightning's advice for large streamed data sets; in-memory domains need no workers.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # inside Lightning
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
# conf/hydra/launcher/ presets keep the launcher plugins' names and are checked against them.
warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema.*")


def build_domains(cfg: DictConfig) -> dict[str, Domain]:
    """Instantiate the source and target domains (once, if both name the same data) and
    pair them: one input shape, one scale of feature vectors (``tlframe.data.pairing``)."""
    from tlframe.data.pairing import pair

    domains: dict[str, Domain] = {}
    for role in ("source", "target"):
        other = "target" if role == "source" else "source"
        if other in domains and cfg[other] == cfg[role]:
            domains[role] = domains[other]
        else:
            domains[role] = _instantiate_domain(cfg[role])
    pair(cfg, domains, _instantiate_domain)
    return domains


def _instantiate_domain(node: DictConfig) -> Domain:
    """Hydra wraps what a builder raises; a builder's own one-line error is passed on as is."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, TlframeError):
            raise cause from None
        output_error = as_output_error(cause) if cause is not None else None
        if output_error is not None:  # e.g. paths.data_dir cannot be written
            raise output_error from cause
        raise


def check_classes(method: Method, domains: dict[str, Domain]) -> None:
    """Methods that share one head across domains need the same classes on both sides."""
    if not method.same_classes:
        return
    source, target = domains["source"], domains["target"]
    if list(source.class_names) != list(target.class_names):
        only_s = sorted(set(source.class_names) - set(target.class_names))
        only_t = sorted(set(target.class_names) - set(source.class_names))
        raise ConfigError(
            f"method {method.name} needs the same classes in source and target; "
            f"{source.name} only: {only_s or '-'}, {target.name} only: {only_t or '-'}"
            + ("" if only_s or only_t else " (same names, different order)")
        )


def check_input_shapes(domains: dict[str, Domain], same_shape: bool = True) -> None:
    """One backbone reads both domains, so their examples must have one shape (unless the
    method sets ``same_input_shape: false``: it builds an input layer per domain)."""
    source, target = domains["source"], domains["target"]
    if same_shape and tuple(source.input_shape) != tuple(target.input_shape):
        raise ConfigError(
            f"source {source.name} gives inputs of shape {tuple(source.input_shape)} but "
            f"target {target.name} gives {tuple(target.input_shape)}; make them equal with the "
            f"domains' options, e.g. {_shape_fix(source.input_shape, target.input_shape)}"
        )


def _shape_fix(shape_s: tuple[int, ...], shape_t: tuple[int, ...]) -> str:
    """The overrides that raise the smaller image side to the larger one's channels/size."""
    if len(shape_s) != 3 or len(shape_t) != 3:
        return "the same feature width on both sides"
    (c_s, h_s, _), (c_t, h_t, _) = shape_s, shape_t
    fixes = []
    if c_s != c_t:
        fixes.append(f"{'source' if c_s < c_t else 'target'}.channels={max(c_s, c_t)}")
    if h_s != h_t:
        fixes.append(f"{'source' if h_s < h_t else 'target'}.image_size={max(h_s, h_t)}")
    return " ".join(fixes)


def check_label_counts(cfg: DictConfig, method: Method, domains: dict[str, Domain]) -> None:
    """k labeled examples per class need k training examples in every class: checked as soon
    as the domains are loaded, not when the stage that draws them starts training."""
    from tlframe.data.domain import split_labels
    from tlframe.data.labels import k_per_class
    from tlframe.engine.stages import stage_regimes

    for stage in method.stages:
        for role, k in stage_regimes(cfg, stage).items():
            if isinstance(k, int) and role in domains:
                domain = domains[role]
                k_per_class(split_labels(domain.train), k, int(cfg.seed), domain=domain.name)


def completed_record(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run dir's metrics.json when it already holds this exact run, finished."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = record.get("config") == OmegaConf.to_container(cfg, resolve=True)
    return record if same and record.get("status") == "completed" else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its metrics.json record."""
    from tlframe.engine.distributed import is_rank_zero
    from tlframe.engine.outputs import log_hparams, write_metrics
    from tlframe.engine.stages import run_stages
    from tlframe.engine.threads import share_cores
    from tlframe.validate import validate

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    composed = OmegaConf.to_container(cfg, resolve=True)  # before tlframe fills anything in
    done = completed_record(cfg, run_dir)
    if done is not None:  # a relaunched sweep: this job finished before
        log.info("%s already holds this finished run; not training again", run_dir)
        return done
    share_cores(cfg.performance.get("threads_per_job"))
    method = validate(cfg)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    domains = build_domains(cfg)
    check_classes(method, domains)
    check_input_shapes(domains, method.same_input_shape)
    check_label_counts(cfg, method, domains)
    timings["data"] = time.perf_counter() - start
    results = run_stages(cfg, domains, run_dir, method)
    timings["fit"] = sum(r.fit_seconds for r in results)
    timings["test"] = sum(r.test_seconds for r in results)
    start = time.perf_counter()
    names = {role: d.name for role, d in domains.items()}
    log_hparams(cfg, results)
    timings["report"] = time.perf_counter() - start
    shapes = {role: list(d.input_shape) for role, d in domains.items()}
    record = write_metrics(run_dir, composed, method.name, names, shapes, results, timings)
    if is_rank_zero():  # once, not once per DDP process
        _print_summary(record, run_dir)
    return record


def _print_summary(record: dict[str, Any], run_dir: Path) -> None:
    metrics = record["metrics"]
    lines = [
        f"{record['method']}: {record['source']} -> {record['target']} (seed {record['seed']})"
    ]
    for key in sorted(k for k, v in metrics.items() if isinstance(v, float)):
        note = "  (oracle: reads labels this setting lacks)" if "oracle" in key else ""
        lines.append(f"  {key:<24} {metrics[key]:.4f}{note}")
    read = ", ".join(f"{role} {labels}" for role, labels in record["labels_read"].items())
    lines.append(f"  labels read: {read}")
    lines.append(f"  selected on {record['selection']}; wall time {record['wall_time_s']:.1f} s")
    name, stage = list(record["stages"].items())[-1]
    memory = stage["peak_memory_mb"]
    lines.append(
        f"  {name} stage: {stage['trainable_params']:,} trainable parameters"
        + (
            f"; peak memory {memory:.0f} MiB ({stage['peak_memory_measure']})"
            if memory is not None
            else ""
        )
    )
    lines.append(f"  run dir: {run_dir}")
    print("\n".join(lines), flush=True)


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(err: BaseException, cfg: DictConfig) -> None:
    """In a sweep a failed job leaves ``error.json`` (for the report) and the others go on."""
    from tlframe.io import atomic_write_json

    detail = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    if not isinstance(err, TlframeError):
        detail["traceback"] = traceback.format_exc()
    try:
        atomic_write_json(detail, Path(cfg.paths.output_dir) / "error.json")
    except OSError as write_err:  # a full disk must not stop the sweep's other jobs
        log.error("could not record the failure in error.json: %s", write_err)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        record = train(cfg)
    except Exception as err:
        user_error = err if isinstance(err, TlframeError) else as_output_error(err)
        if user_error is not None:  # a user mistake: one line, exit code 2
            print(f"tlframe: error: {user_error}", file=sys.stderr, flush=True)
            if _in_sweep():
                _record_failure(user_error, cfg)
                return None
            if os.environ.get("TLFRAME_DEBUG"):
                raise
            sys.exit(2)
        if not _in_sweep():
            raise
        log.exception("job failed; the sweep goes on")
        _record_failure(err, cfg)
        return None
    return _optimized_value(cfg, record)


def _optimized_value(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """What a sweeper such as Optuna optimises: ``optimized_metric`` (null = the selection
    metric). A searching sweeper gets a warning that names the choices when it is missing."""
    key = cfg.get("optimized_metric") or record["selection_metric"]
    value = record["metrics"].get(key)
    if isinstance(value, int | float):
        return float(value)
    if _in_sweep() and _searching_sweeper():
        choices = sorted(
            k
            for k, v in record["metrics"].items()
            if k.startswith("val/") and "oracle" not in k and isinstance(v, float)
        )
        why = " (selection keeps the final weights)" if key == "step" else ""
        log.warning(
            "optimized_metric %s%s is not a metric of this run; set optimized_metric to one of %s",
            key,
            why,
            ", ".join(choices),
        )
    return None


def _searching_sweeper() -> bool:
    """A sweeper that reads the jobs' return values (Optuna), unlike Hydra's basic one."""
    return not str(HydraConfig.get().sweeper.get("_target_")).endswith("BasicSweeper")


def _optuna_installed() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


def _searched_without_plugin(argv: list[str]) -> str | None:
    """The ``hparams_search=...`` option asked for when the Optuna sweeper is not installed."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hparams_search" and value not in ("", "null") and not _optuna_installed():
            return value
    return None


def main() -> None:
    search = _searched_without_plugin(sys.argv[1:])
    if search is not None:  # Hydra would only say that hydra/sweeper/optuna is not found
        print(
            f"tlframe: error: hparams_search={search} needs the Optuna sweeper; install it "
            "with pip install 'tlframe[optuna]' (hydra-optuna-sweeper)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
