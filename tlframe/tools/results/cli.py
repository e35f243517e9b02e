"""``tlframe-results``: run a table's sweep, keep its runs in docs/results/, render docs/RESULTS.md.

  tlframe-results run [TABLE ...] [-- OVERRIDE ...]
      run the named tables' sweeps (default: every table of docs/results/index.yaml with no
      data or data from another version of its preset), keep their runs, render the page
  tlframe-results collect TABLE SWEEP_DIR   keep the runs of a sweep already run
  tlframe-results render [--check]          render docs/RESULTS.md (--check: compare only)

A table's sweep is ``tlframe-train -m experiment=<table> hydra.sweep.dir=outputs/results/<table>``
plus the overrides after ``--`` (e.g. ``++source.path=...`` for data kept outside the
repository); stage caches make a re-run of unchanged stages cheap.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from tlframe.errors import DataError
from tlframe.tools.results.data import collect, is_stale, preset_path, read_lines, write_lines
from tlframe.tools.results.render import read_index, render

RESULTS_DIR = Path("docs/results")
PAGE = Path("docs/RESULTS.md")
SWEEPS = Path("outputs/results")


def table_names(results_dir: Path) -> list[str]:
    return [e if isinstance(e, str) else e["name"] for e in read_index(results_dir)["tables"]]


def sweep_command(table: str, overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tlframe",
        "-m",
        f"experiment={table}",
        f"hydra.sweep.dir={SWEEPS / table}",
        *overrides,
    ]


def keep(table: str, sweep_dir: Path, results_dir: Path) -> None:
    lines = collect(table, sweep_dir)
    write_lines(lines, results_dir / f"{table}.jsonl")
    print(f"tlframe-results: kept {len(lines)} runs of {table} in {results_dir / table}.jsonl")


def run(tables: list[str], overrides: list[str], results_dir: Path) -> list[str]:
    """Run and keep each table's sweep; a table whose sweep fails keeps its committed data
    and the others go on. Returns the tables that failed."""
    known = table_names(results_dir)
    for table in tables:
        if table not in known:
            raise DataError(
                f"{table} is not a table of {results_dir}/index.yaml; tables: {', '.join(known)}"
            )
        preset_path(table)
    todo = tables or [t for t in known if is_stale(t, read_lines(results_dir / f"{t}.jsonl"))]
    print(f"tlframe-results: sweeps to run: {', '.join(todo) or 'none (every table is current)'}")
    failed = []
    for table in todo:
        shutil.rmtree(SWEEPS / table, ignore_errors=True)  # a fresh sweep: no job of an older one
        command = sweep_command(table, overrides)
        print("tlframe-results: " + " ".join(command[2:]), flush=True)
        try:
            if subprocess.run(command, check=False).returncode != 0:
                raise DataError("its sweep failed (see the log above)")
            keep(table, SWEEPS / table, results_dir)
        except DataError as err:
            print(f"tlframe-results: {table}: {err}; its data are unchanged", file=sys.stderr)
            failed.append(table)
    return failed


def write_page(results_dir: Path, page: Path, check: bool) -> None:
    text = render(results_dir)
    if check:
        if not page.is_file() or page.read_text() != text:
            raise DataError(
                f"{page} differs from what {results_dir} renders; run tlframe-results render"
            )
        print(f"tlframe-results: {page} matches {results_dir}")
        return
    page.write_text(text)
    print(f"tlframe-results: wrote {page}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tlframe-results", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run tables' sweeps, keep their runs, render")
    run_parser.add_argument("tables", nargs="*", help="default: the tables with no or stale data")
    collect_parser = commands.add_parser("collect", help="keep the runs of a sweep already run")
    collect_parser.add_argument("table")
    collect_parser.add_argument("sweep_dir", type=Path)
    render_parser = commands.add_parser("render", help="render docs/RESULTS.md from docs/results/")
    render_parser.add_argument("--check", action="store_true", help="compare, do not write")
    for sub in (run_parser, collect_parser, render_parser):
        sub.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
        sub.add_argument("--page", type=Path, default=PAGE)
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    try:
        failed = run(args.tables, overrides, args.results_dir) if args.command == "run" else []
        if args.command == "collect":
            keep(args.table, args.sweep_dir, args.results_dir)
        write_page(args.results_dir, args.page, args.command == "render" and args.check)
        if failed:
            raise DataError(f"not re-measured: {', '.join(failed)} (the page keeps their data)")
    except DataError as err:
        print(f"tlframe-results: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
