"""Content-keyed cache of finished stages.

A stage's key hashes everything that determines its trained weights: its own parts and
options, the model and optimiser configs, the data it trains and selects on, the seed, the
key of the stage before it, and the code it runs. That code is the tlframe modules its
parts and configs name, with every tlframe module they import (read from their sources,
``code_version``), so a new method or an edited report leaves cached stages valid while an
edit to a stage's own code retrains it. Entries are written atomically and loaded with
``weights_only=True``; an unreadable entry counts as missing and is rebuilt.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from tlframe.io import atomic_save, load_cached

PACKAGE = "tlframe"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def code_version(modules: Iterable[str]) -> str:
    """A hash of the sources of ``modules`` (those of tlframe) and of every tlframe module
    they import, directly or not."""
    digest = hashlib.sha256()
    for path in sorted(source_closure(frozenset(modules))):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=64)
def source_closure(modules: frozenset[str]) -> frozenset[Path]:
    """The source files of ``modules`` and of the tlframe modules they import."""
    found: set[Path] = set()
    pending = [m for m in modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]
    while pending:
        path = _source(pending.pop())
        if path is None or path in found:
            continue
        found.add(path)
        pending.extend(_imports(path))
    return frozenset(found)


def _source(module: str) -> Path | None:
    """The file of a tlframe module or package (its ``__init__.py``)."""
    parts = module.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> list[str]:
    """The tlframe modules a source file imports (anywhere in it), with their packages."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        if name == PACKAGE or name.startswith(f"{PACKAGE}."):
            parts = name.split(".")
            found += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    return found


def content_key(material: Any) -> str:
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Finished stages' state dicts under ``<cache_dir>/stages/<key>.pt``."""

    def __init__(self, cache_dir: str | Path, enabled: bool = True):
        self.root = Path(cache_dir) / "stages"
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def features_dir(self) -> Path | None:
        """Where frozen backbones' features are kept (``tlframe.engine.feature_cache``);
        None when caching is off."""
        return self.root.parent / "features" if self.enabled else None

    def load(self, key: str) -> dict | None:
        if not self.enabled:
            return None
        entry = load_cached(self.path(key))
        if not isinstance(entry, dict) or "state_dict" not in entry:
            return None
        return entry

    def store(self, key: str, state_dict: dict, info: dict) -> None:
        if self.enabled:
            atomic_save({"state_dict": state_dict, "info": info}, self.path(key))
