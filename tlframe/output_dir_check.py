"""Stop at once, in one line, when the run or sweep folder cannot be written.

Hydra creates the output folder before tlframe's code runs, so an unwritable or full
location would otherwise surface as Hydra's traceback; this callback runs first.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def unwritable_reason(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a run's files (None when it can): creates it and a probe."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"tlframe")
            probe.flush()
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def _stop_if_unwritable(folder: str, override: str) -> None:
    reason = unwritable_reason(Path(folder))
    if reason is not None:
        print(
            f"tlframe: error: cannot write the output folder {folder} ({reason}); "
            f"choose another with {override}=DIR (or paths.log_dir=DIR)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


class CheckOutputDir(Callback):
    """Hydra callback: checks ``hydra.run.dir`` / ``hydra.sweep.dir`` before Hydra uses it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_if_unwritable(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_if_unwritable(str(config.hydra.sweep.dir), "hydra.sweep.dir")
