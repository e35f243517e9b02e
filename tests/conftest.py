"""Shared fixtures: composed configs that write only under pytest's temporary folders."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tlframe.config import config_dir, register_configs

REPO = Path(__file__).resolve().parents[1]
# A tiny budget that still runs every part of a stage (fit, validation, checkpoint, test).
QUICK = [
    "data.steps_per_epoch=4",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "data.eval_batch_size=1024",
]
# Methods that need a particular kind of domain: the small source each is tested on.
METHOD_DATA = {
    m: ["dataset=zsl_digits", "source.base.num_train=500"] for m in ("attribute_embedding", "conse")
}
SMALL_SOURCE = ["source.num_train=500"]


def run_cli(main: Callable[[], None], prog: str, argv: list[str], monkeypatch) -> int:
    """Run console script ``prog *argv`` (its ``main``) in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    try:
        main()
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session: embedded domains are built once, then cached."""
    path = tmp_path_factory.mktemp("data")
    os.environ["TLFRAME_DATA_DIR"] = str(path)
    register_configs()
    return path


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``train.yaml`` with overrides, as ``tlframe-train`` would."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        base = [
            f"paths.output_dir={run_dir or tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*base, *overrides])
        cfg.trainer.enable_progress_bar = False  # keep test logs readable
        if cfg.callbacks.get("feature_space") is not None:
            cfg.callbacks.feature_space.tsne = False  # a few seconds each; tested on its own
        return cfg

    return make


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a tlframe subprocess that writes only under ``tmp_path``."""
    env = dict(os.environ)
    env.update(TLFRAME_ROOT=str(tmp_path), TLFRAME_CACHE_DIR=str(tmp_path / "cache"))
    return env
