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


def register_resolvers() -> None:
    """``${tl.cwd:}`` is the directory tlframe was started from (the default project root);
    ``${tl.role:}`` is the key of the node that holds it, so a domain config knows whether it
    is the ``source`` or the ``target`` and its messages can name the override to set."""
    if not OmegaConf.has_resolver("tl.cwd"):
        OmegaConf.register_new_resolver("tl.cwd", os.getcwd)
    if not OmegaConf.has_resolver("tl.role"):
        OmegaConf.register_new_resolver("tl.role", _node_key)
