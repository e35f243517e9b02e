"""Hyperparameter searches (conf/hparams_search/, Hydra's Optuna sweeper): every preset runs
a 2-trial search with a tiny budget in this process, as ``tlframe-train hparams_search=<preset>``
does, and records the best trial; each preset searches settings that exist and optimises a
validation metric that its setting may read; without the plugin the user gets one line."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep
from omegaconf import OmegaConf

from tlframe import train as entrypoint
from tlframe.config import config_dir
from tlframe.data.labels import parse_regime
from tlframe.engine.stages import build_method, stage_regimes

PRESETS = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))
TINY = [
    "hydra.sweeper.n_trials=2",
    "source.num_train=200",
    "source.num_val=100",
    "source.num_test=100",
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.feature_space=null",
    "logger=none",
    "trainer.enable_progress_bar=false",
]
needs_optuna = pytest.mark.skipif(
    not entrypoint._optuna_installed(),
    reason="hydra-optuna-sweeper is not installed (pip install 'tlframe[optuna]')",
)


def preset(name: str):
    """The composed config of ``hparams_search=<name>``, with its hydra node."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", [f"hparams_search={name}"], return_hydra_config=True)


def search_space(cfg) -> dict[str, IntervalSweep | ChoiceSweep]:
    parser = OverridesParser.create()
    items = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return {o.get_key_element(): o.value() for o in parser.parse_overrides(items)}


def within(value, space: IntervalSweep | ChoiceSweep) -> bool:
    if isinstance(space, ChoiceSweep):
        return value in space.list
    return space.start <= value <= space.end


def test_presets_exist():
    assert {"dann_optuna", "finetune_optuna", "controls_optuna"} <= set(PRESETS)


@needs_optuna
@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_searches_settings_that_exist_on_a_metric_it_may_read(name):
    cfg = preset(name)
    assert cfg.hydra.mode.name == "MULTIRUN"  # a sweep by itself, no -m needed
    assert cfg.hydra.sweeper.sampler.seed is not None  # the same trials on every run
    for key in cfg.hydra.sweeper.params:
        present = OmegaConf.select(cfg, key, default="<missing>") != "<missing>"
        assert present, f"{name} searches a missing {key}"
    metric = cfg.optimized_metric
    assert metric is None or metric.startswith("val/"), "the test split never selects"
    assert metric is None or "oracle" not in metric, "reads labels the setting lacks"
    last_stage = build_method(cfg).stages[-1]
    regime = stage_regimes(cfg, last_stage).get("target")
    if regime is not None and parse_regime(regime) == "none":  # adapts to unlabeled data
        assert metric is not None, "selection=auto keeps the final weights: no value"
        assert metric.split("/")[1:] != ["target", "acc"], "reads target labels it has not"
    if metric is None:  # the selection metric: held-out labels, never the validation split
        assert cfg.selection == "holdout"


@needs_optuna
@pytest.mark.parametrize("name", PRESETS)
def test_a_two_trial_search_runs_both_trials_and_records_the_best(
    name, tmp_path, monkeypatch, capsys
):
    sweep = tmp_path / "sweep"
    argv = [f"hparams_search={name}", f"hydra.sweep.dir={sweep}", *TINY]
    argv.append(f"paths.cache_dir={tmp_path / 'cache'}")
    code = run_cli(entrypoint.main, "tlframe-train", argv, monkeypatch)
    assert code == 0, capsys.readouterr().err[-3000:]

    cfg = preset(name)
    space = search_space(cfg)
    records = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert all(r["status"] == "completed" for r in records)
    assert not (sweep / "2").exists()  # n_trials=2
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert result.name == "optuna"
    assert set(result.best_params) == set(space)
    for key, value in result.best_params.items():
        assert within(value, space[key]), f"{key}={value} outside {space[key]}"

    # The sweeper's values reached the runs, and it kept the one with the best value.
    metric = cfg.optimized_metric or records[0]["selection_metric"]
    values = [r["metrics"][metric] for r in records]
    best = max(values) if cfg.hydra.sweeper.direction == "maximize" else min(values)
    assert result.best_value == pytest.approx(best)
    best_runs = [
        r
        for r in records
        if all(
            OmegaConf.select(OmegaConf.create(r["config"]), key) == pytest.approx(value)
            for key, value in result.best_params.items()
        )
    ]
    assert [r["metrics"][metric] for r in best_runs] == [pytest.approx(best)]
    if "source" in records[1]["stages"] and len(records[1]["stages"]) > 1:
        assert records[1]["stages"]["source"]["cached"]  # later stages searched: reused


@needs_optuna
def test_a_search_on_a_missing_metric_names_the_ones_to_choose(tmp_path, monkeypatch, capsys):
    """DANN keeps its final weights (selection=auto): no selection metric to optimise."""
    argv = ["hparams_search=controls_optuna", "method=dann", "selection=last"]
    argv.append("hydra.sweeper.n_trials=1")
    argv += [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    code = run_cli(entrypoint.main, "tlframe-train", [*argv, *TINY[1:]], monkeypatch)
    assert code != 0  # Optuna stops: its only trial has no value
    log = capsys.readouterr().out  # the job's log (Hydra's console handler)
    warning = next(line for line in log.splitlines() if "[tlframe][WARNING]" in line)
    assert "optimized_metric step (selection keeps the final weights) is not" in warning
    assert "val/target/im" in warning and "val/target/snd" in warning
    assert "test/" not in warning and "oracle" not in warning  # only what a search may read


def test_hparams_search_without_the_optuna_plugin_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(entrypoint, "_optuna_installed", lambda: False)
    argv = ["hparams_search=dann_optuna", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    code = run_cli(entrypoint.main, "tlframe-train", argv, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()], err  # one line, no traceback
    assert err.startswith("tlframe: error: hparams_search=dann_optuna needs the Optuna sweeper")
    assert "pip install 'tlframe[optuna]'" in err
    assert not (tmp_path / "sweep").exists()
