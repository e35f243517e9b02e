"""Content-keyed cache of finished stages.

A stage's key hashes everything that determines its trained weights: its own config, the
model and optimiser configs, the data it trains and selects on, the seed, the key of the
stage before it and the code version. Entries are written atomically and loaded with
``weights_only=True``; an unreadable entry counts as missing and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tlframe.io import atomic_save, load_cached

PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package's Python sources: any code change invalidates cached stages."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
