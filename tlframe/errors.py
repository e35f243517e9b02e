"""User-facing errors: one line that names the problem and the fix, exit code 2."""

from __future__ import annotations

import errno


class TlframeError(Exception):
    """A mistake in the user's input that tlframe can explain in one line."""


class ConfigError(TlframeError):
    """An impossible or inconsistent configuration."""


class DataError(TlframeError):
    """Missing, unreadable or inconsistent data."""


class OutputError(TlframeError):
    """A file tlframe must write cannot be written (full disk, read-only or wrong folder)."""


# The errno values of a write that the user fixes by freeing space or moving the output.
_WRITE_FAILURES = {"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR"}


def as_output_error(err: BaseException) -> OutputError | None:
    """An ``OutputError`` explaining ``err`` when it is a failed write the user can fix."""
    if not isinstance(err, OSError) or errno.errorcode.get(err.errno or -1) not in _WRITE_FAILURES:
        return None
    where = f" {err.filename}" if err.filename else ""
    return OutputError(
        f"cannot write{where} ({err.strerror}); free space or choose other folders with "
        "paths.log_dir=DIR, paths.cache_dir=DIR, paths.data_dir=DIR"
    )
