"""User-facing errors: one line that names the problem and the fix, exit code 2."""

from __future__ import annotations


class TlframeError(Exception):
    """A mistake in the user's input that tlframe can explain in one line."""


class ConfigError(TlframeError):
    """An impossible or inconsistent configuration."""


class DataError(TlframeError):
    """Missing, unreadable or inconsistent data."""
