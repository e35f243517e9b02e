"""Where a file-based domain's data must be, and the one-line message when it is not.

Domains that read user files never touch the network unless their ``download`` option is
set; without the files they stop at once with a ``DataError`` that names the missing files,
the folder they were expected in, and the overrides that fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tlframe.errors import DataError, TlframeError

T = TypeVar("T")


def override(role: str | None, key: str, value: str) -> str:
    """How the user sets ``key``: ``source.download=true`` from the CLI, else ``download=...``."""
    return f"{role}.{key}={value}" if role else f"{key}={value}"


def relocate_hint(role: str | None, holding: str = "them") -> str:
    return (
        f"or point {override(role, 'root', 'DIR')} (or paths.data_dir=DIR) at a folder "
        f"holding {holding}"
    )


def require(
    domain: str,
    folder: Path,
    names: Sequence[str],
    fixes: Sequence[str],
    accept: Callable[[Path, str], bool] | None = None,
) -> None:
    """Raise one ``DataError`` line when any of ``names`` is not a file in ``folder``
    (``accept(folder, name)`` may allow alternatives, such as a compressed copy)."""
    accept = accept or (lambda base, name: (base / name).is_file())
    absent = [name for name in names if not accept(folder, name)]
    if absent:
        raise DataError(f"{domain}: missing {', '.join(absent)} in {folder}; " + ", ".join(fixes))


DOWNLOADED = "they may be truncated or of another version: delete them and download again"


def read(domain: str, where: Path, action: Callable[[], T], advice: str = DOWNLOADED) -> T:
    """Run a reader, turning a malformed or truncated file into one ``DataError`` line."""
    try:
        return action()
    except TlframeError:
        raise
    except Exception as err:  # any parser failure on user files; the cause stays chained
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{domain}: cannot read {where} ({reason}); {advice}") from err


def fetch(domain: str, folder: Path, action: Callable[[], T]) -> T:
    """Run a download, turning network and checksum failures into one ``DataError`` line."""
    try:
        return action()
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        reason = " ".join(str(err).split())
        raise DataError(
            f"{domain}: download into {folder} failed ({reason}); check the network, or put "
            "the files there by hand"
        ) from err
