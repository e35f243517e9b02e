"""Which code and when: stamped on every metrics.json so a committed result names its source."""

from __future__ import annotations

import datetime
import functools
import subprocess
from pathlib import Path

from tlframe import __version__


@functools.cache
def code_version() -> str:
    """``<package version>+g<commit>`` (``.dirty`` with uncommitted changes) inside a git
    checkout, the package version alone in an installed copy."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():  # an installed copy, not this project's checkout
        return __version__
    try:
        described = subprocess.run(
            ["git", "-C", str(checkout), "describe", "--always", "--dirty=.dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{described}" if described else __version__


def utc_date() -> str:
    """Today's date in UTC, ISO format."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()
