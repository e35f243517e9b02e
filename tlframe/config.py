"""Where the config tree lives, and the resolvers it uses.

From a checkout the tree is ``<repo>/conf``; an installed wheel carries it as
``tlframe/conf``. ``TLFRAME_CONFIG_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    candidates = [
        os.environ.get("TLFRAME_CONFIG_DIR"),
        PACKAGE_DIR / "conf",
        PACKAGE_DIR.parent / "conf",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"tlframe's config tree (train.yaml) was not found in {candidates[1:]}; "
        "reinstall the package or set TLFRAME_CONFIG_DIR"
    )


def _node_key(*, _parent_) -> str:
    return str(_parent_._key())


# What every run's name says anyway, or what only places files.
_NAMED = ("method", "dataset", "source", "target", "seed", "objectives", "paths.", "hydra.")
_SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(")


def tensorboard_dir(run_dir: str) -> str:
    """Where TensorBoard logs go: the sweep's folder in a multirun, so that one TensorBoard
    shows the sweep's runs side by side, else the run's own folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(Path(HydraConfig.get().sweep.dir) / "tensorboard")
    return str(Path(run_dir) / "tensorboard")


def run_name(seed: int) -> str:
    """A run's name in TensorBoard: its method, domain pair and seed, and in a sweep the
    values the sweep varies, e.g. ``dann synth_digits-hand_digits seed=0 optimizer.lr=0.03``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return f"run seed={seed}"
    hydra = HydraConfig.get()
    choices = hydra.runtime.choices
    extra = [n.strip() for n in str(choices.get("objectives") or "").strip("[]").split(",")]
    method = "+".join([str(choices.get("method")), *(n for n in extra if n)])
    words = [method, f"{choices.get('source')}-{choices.get('target')}", f"seed={seed}"]
    swept = _swept_keys(Path(hydra.sweep.dir)) if hydra.mode.name == "MULTIRUN" else set()
    for override in hydra.overrides.task:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in swept and not key.startswith(_NAMED):
            words.append(override.lstrip("+~"))
    return " ".join(words).replace("/", "-")


def _swept_keys(sweep_dir: Path) -> set[str]:
    """The keys a sweep varies: from its ``multirun.yaml`` (written before its jobs run),
    the command line's swept overrides and the sweeper's own params (a preset's)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return set()
    saved = OmegaConf.load(path).hydra
    keys = set((saved.sweeper.get("params") or {}).keys())
    for override in saved.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if value.startswith(_SWEEP_FUNCTIONS) or _top_level_comma(value):
            keys.add(key)
    return keys


def _top_level_comma(value: str) -> bool:
    """``a,b`` sweeps; ``[a,b]`` and ``{a: 1, b: 2}`` are one value."""
    depth = 0
    for char in value:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            return True
    return False


def register_configs() -> None:
    """What composing tlframe's configs needs besides the YAML tree: the methods' structured
    configs (derived from their builders' signatures, ``tlframe.engine.method``) and the
    resolvers. ``${tl.cwd:}`` is the directory tlframe was started from (the default project
    root); ``${tl.role:}`` is the key of the node that holds it, so a domain config knows
    whether it is the ``source`` or the ``target`` and its messages can name the override."""
    from tlframe.engine.method import register_configs as register_methods

    if not OmegaConf.has_resolver("tl.cwd"):
        OmegaConf.register_new_resolver("tl.cwd", os.getcwd)
    if not OmegaConf.has_resolver("tl.role"):
        OmegaConf.register_new_resolver("tl.role", _node_key)
    if not OmegaConf.has_resolver("tl.tensorboard_dir"):
        OmegaConf.register_new_resolver("tl.tensorboard_dir", tensorboard_dir)
    if not OmegaConf.has_resolver("tl.run_name"):
        OmegaConf.register_new_resolver("tl.run_name", run_name)
    register_methods()
