"""The benchmark script runs end to end on a tiny setting (its figures live in docs/)."""

from __future__ import annotations

from tlframe.bench import CASES, run


def test_benchmark_runs_and_reports_every_case():
    table = run(steps=6, warmup=2, repeats=1, default_run=False)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert len(rows) == len(CASES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[3]) > 0
