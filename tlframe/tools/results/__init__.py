"""docs/RESULTS.md as a rendering of committed per-run data: each table is a named sweep."""
