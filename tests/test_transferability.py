"""Transferability before training: LogME, LEEP and the proxy A-distance (pure functions,
checked against hand computations), ``tlframe-rank`` end to end on tiny embedded domains,
and the report that sets the ranks beside the measured transfer."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK, run_cli
from omegaconf import open_dict
from scipy.stats import multivariate_normal

from tlframe.tools import rank as rank_cli
from tlframe.tools.report import main as report_main
from tlframe.tools.report import report
from tlframe.tools.transferability import (
    leep,
    log_evidence,
    logme,
    max_log_evidence,
    proxy_a_distance,
    ranks,
    spearman,
)


# ------------------------------------------------------------------------------- LEEP
def test_leep_matches_a_hand_computation():
    # 4 target examples of 2 classes; the source model's soft predictions over 2 classes.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    # Empirical joint P(y, z) = 1/4 sum_{i: y_i = y} probs[i, z]:
    #   P(0,0) = 1.7/4 = .425  P(0,1) = .3/4 = .075  P(1,0) = .5/4 = .125  P(1,1) = 1.5/4 = .375
    # Marginals P(z=0) = .55, P(z=1) = .45, so P(y|z):
    p0_0, p0_1 = 0.425 / 0.55, 0.075 / 0.45  # = 17/22, 1/6
    p1_0, p1_1 = 0.125 / 0.55, 0.375 / 0.45  # = 5/22, 5/6
    assert (p0_0, p0_1, p1_0, p1_1) == pytest.approx((17 / 22, 1 / 6, 5 / 22, 5 / 6))
    expected = (
        math.log(0.9 * 17 / 22 + 0.1 * 1 / 6)
        + math.log(0.8 * 17 / 22 + 0.2 * 1 / 6)
        + math.log(0.3 * 5 / 22 + 0.7 * 5 / 6)
        + math.log(0.2 * 5 / 22 + 0.8 * 5 / 6)
    ) / 4
    assert leep(probs, labels) == pytest.approx(expected, abs=1e-12)
    # By hand: EEP = .712121, .651515, .651515, .712121; logs -.33950, -.42846 (twice each)
    assert expected == pytest.approx(-0.38398, abs=1e-5)
    # Target label values are names only: other values give the same score.
    assert leep(probs, np.array([7, 7, 3, 3])) == pytest.approx(expected, abs=1e-12)


def test_leep_of_a_perfect_source_is_zero_and_of_a_useless_one_the_label_entropy():
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert leep(np.eye(3)[labels], labels) == pytest.approx(0.0, abs=1e-12)
    uniform = np.full((6, 4), 0.25)  # predictions that ignore the input: P(y|z) = P(y)
    assert leep(uniform, labels) == pytest.approx(math.log(1 / 3), abs=1e-12)


# ------------------------------------------------------------------------------- LogME
def direct_log_evidence(features, y, alpha, beta) -> float:
    """log N(y | 0, F F^T / alpha + I / beta): the evidence with w integrated out."""
    n = len(y)
    cov = features @ features.T / alpha + np.eye(n) / beta
    return float(multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y))


@pytest.mark.parametrize(("n", "d"), [(15, 4), (6, 9)])  # more and fewer examples than dims
def test_log_evidence_matches_the_gaussian_density(n, d):
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, d))
    y = (rng.random(n) > 0.5).astype(float)
    for alpha, beta in [(1.0, 1.0), (0.3, 4.0), (10.0, 0.2)]:
        assert log_evidence(features, y, alpha, beta) == pytest.approx(
            direct_log_evidence(features, y, alpha, beta), rel=1e-9
        )


def grid_max(features, y) -> float:
    """The evidence maximised over alpha, beta by brute force: a log grid, then a finer one
    around its best point."""
    best = (-math.inf, 0.0, 0.0)
    for log_a in np.linspace(-4, 4, 41):
        for log_b in np.linspace(-4, 4, 41):
            best = max(best, (direct_log_evidence(features, y, 10**log_a, 10**log_b), log_a, log_b))
    _, a0, b0 = best
    for log_a in np.linspace(a0 - 0.2, a0 + 0.2, 41):
        for log_b in np.linspace(b0 - 0.2, b0 + 0.2, 41):
            best = max(best, (direct_log_evidence(features, y, 10**log_a, 10**log_b), log_a, log_b))
    return best[0]


def test_logme_is_the_brute_force_maximum_of_the_evidence_averaged_over_classes():
    rng = np.random.default_rng(0)
    n = 24
    features = rng.normal(size=(n, 3))
    labels = (features[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(int)  # informative
    per_class = []
    for k in (0, 1):
        y = (labels == k).astype(float)
        brute = grid_max(features, y)
        fixed_point, alpha, beta = max_log_evidence(features, y)
        assert fixed_point * n >= brute - 1e-9  # the grid never beats the fixed point ...
        assert fixed_point * n == pytest.approx(brute, abs=2e-3)  # ... and gets close to it
        assert 1e-4 < alpha < 1e4 and 1e-4 < beta < 1e4  # an interior optimum
        per_class.append(brute / n)
    assert logme(features, labels) == pytest.approx(np.mean(per_class), abs=1e-4)


def test_separable_features_score_higher_than_random_ones():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=400)
    separable = 3.0 * np.eye(16)[labels] + 0.3 * rng.normal(size=(400, 16))
    random = rng.normal(size=(400, 16))
    assert logme(separable, labels) > logme(random, labels) + 0.5
    assert logme(3.0 * separable, labels) == pytest.approx(logme(separable, labels), abs=1e-6)
    confident = 0.9 * np.eye(5)[labels] + 0.02  # a source model that knows the classes
    assert leep(confident, labels) > leep(np.full((400, 5), 0.2), labels)
    same = proxy_a_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    shifted = proxy_a_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 3.0)
    assert same < 0.5 < 1.8 < shifted


def test_ranks_and_spearman():
    assert ranks([0.1, 0.5, 0.3]) == [3, 1, 2]
    assert ranks([0.1, 0.5, 0.3], higher_is_better=False) == [1, 3, 2]
    assert ranks([1.0, None, 1.0]) == [1, None, 1]
    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [5, 5]) is None and spearman([1], [2]) is None


# ------------------------------------------------------------------------- tlframe-rank
TINY = [
    "source.num_train=200",
    "source.num_val=100",
    "source.num_test=100",
    *QUICK,
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]


def cli(argv: list[str], monkeypatch) -> int:
    """Run ``tlframe-rank *argv`` in this process; its exit code."""
    return run_cli(rank_cli.main, "tlframe-rank", argv, monkeypatch)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_tlframe_rank_scores_embedded_sources_and_reuses_the_train_cache(
    tmp_path, monkeypatch, capsys, make_cfg
):
    from tlframe.train import train

    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    # tlframe-train method=source_only fills the stage cache for synth_digits ...
    train(make_cfg("method=source_only", "source=synth_digits", *TINY))
    sources = "sources=[synth_digits,synth_digits_color,synth_letters]"
    run_dir = tmp_path / "rank"
    argv = ["target=hand_digits", sources, *TINY, cache, f"hydra.run.dir={run_dir}"]
    assert cli(argv, monkeypatch) == 0
    printed = capsys.readouterr().out
    rows = read_rows(run_dir / "rank.csv")
    assert sorted(r["candidate"] for r in rows) == [
        "synth_digits",
        "synth_digits_color",
        "synth_letters",
    ]
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3]
    assert [r["candidate"] for r in rows] == [
        r["candidate"] for r in sorted(rows, key=lambda r: -float(r["logme"]))
    ]
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("logme", "leep", "a_distance"))
        assert row["target"] == "hand_digits" and int(row["target_examples"]) > 500
    by_name = {r["candidate"]: r for r in rows}
    # ... which tlframe-rank reuses; the other two it trains (and caches) itself.
    assert by_name["synth_digits"]["model"].startswith("cache ")
    assert by_name["synth_letters"]["model"].startswith("trained ")
    assert by_name["synth_letters"]["source_classes"] == "26"
    assert by_name["synth_digits_color"]["target_input"] == "3x28x28"  # grey target as RGB
    assert "| rank | candidate |" in printed
    table = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    candidates = [line.split(" | ")[1] for line in table[1:]]
    assert candidates == [r["candidate"] for r in rows]  # printed in the CSV's order
    # A second run takes every source model from the cache, and gives the same scores.
    again = tmp_path / "again"
    assert cli([*argv[:-1], f"hydra.run.dir={again}", "rank_by=leep"], monkeypatch) == 0
    rows_again = {r["candidate"]: r for r in read_rows(again / "rank.csv")}
    assert all(r["model"].startswith("cache ") for r in rows_again.values())
    for name, row in by_name.items():
        assert float(rows_again[name]["logme"]) == pytest.approx(float(row["logme"]), abs=1e-6)
    ordered = read_rows(again / "rank.csv")  # now ordered by LEEP
    assert [r["candidate"] for r in ordered] == [
        r["candidate"] for r in sorted(ordered, key=lambda r: -float(r["leep"]))
    ]
    assert all(r["rank"] == r["rank_leep"] for r in ordered)
    # A checkpoint is a candidate too: a run dir's selected source model.
    ckpt_run = tmp_path / "run"
    argv = ["target=hand_digits", f"checkpoints=[{ckpt_run}]", *TINY, cache]
    assert cli([*argv, f"hydra.run.dir={tmp_path / 'ckpt'}"], monkeypatch) == 0
    (row,) = read_rows(tmp_path / "ckpt" / "rank.csv")
    assert row["source"] == "synth_digits" and row["model"].endswith("best.ckpt")
    assert float(row["logme"]) == pytest.approx(float(by_name["synth_digits"]["logme"]), abs=1e-6)


def test_a_candidate_uses_the_source_stage_of_the_fine_tuning_family(make_cfg, tmp_path):
    """Same overrides, same cache key: a rank run reuses a finetune/lwf/l2sp sweep's source
    models, and vice versa."""
    from tlframe.engine.stages import plan_stages

    overrides = ["data.target_labels=10", "target.channels=3", "source.channels=3", *TINY]
    candidate = rank_cli.candidate_config(
        [*overrides, "sources=[synth_digits]"],
        rank_cli.Candidate("synth_digits", "source"),
        tmp_path / "candidate",
    )
    with open_dict(candidate):
        candidate.paths.cache_dir = str(tmp_path / "cache")  # as make_cfg sets it
    key = plan_stages(candidate)[0].key
    for method in ("finetune", "lwf", "l2sp", "source_only"):
        cfg = make_cfg(f"method={method}", "source=synth_digits", *overrides)
        assert plan_stages(cfg)[0].key == key, method


BAD_INPUT = [
    (["sources=[]"], "no candidates to rank; give source domains"),
    (["sources=[synth_digitz]"], "sources: unknown domain 'synth_digitz'; choose from "),
    (["sources=[hand_digits,hand_digits]"], "sources names 'hand_digits' more than once"),
    (["sources=[hand_digits]", "rank_by=accuracy"], "rank_by must be one of logme, leep"),
    (["sources=[hand_digits]", "data.target_labels=none"], "LogME and LEEP need target labels"),
    (["checkpoints=[/no/such/run]"], "init_from=/no/such/run: no such file or run dir"),
    (
        ["sources=[hand_digits]", "source.num_train=200"],
        "candidate hand_digits: the overrides do not fit its config (Could not override",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUT, ids=[m[:24] for _, m in BAD_INPUT])
def test_bad_rank_input_exits_2_with_one_line(overrides, message, tmp_path, monkeypatch, capsys):
    argv = [*overrides, f"hydra.run.dir={tmp_path / 'rank'}", f"paths.cache_dir={tmp_path}"]
    assert cli(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err], err  # one line, no traceback
    assert err.startswith("tlframe-rank: error: " + message), err


# ------------------------------------------------------------------------------ report
def job(root: Path, num: int, method: str, source: str, target_acc: float) -> None:
    folder = root / str(num)
    (folder / ".hydra").mkdir(parents=True)
    record = {
        "status": "completed",
        "method": method,
        "source": source,
        "target": "hand_digits",
        "seed": 0,
        "selection": "val/target/acc",
        "metrics": {"test/target/acc": target_acc, "test/source/acc": 0.9},
        "config": {"data": {"target_labels": 10}},
        "labels_read": {
            "source": "all" if method == "finetune" else "none",
            "target": "10 per class",
        },
    }
    (folder / "metrics.json").write_text(json.dumps(record))


def rank_table(path: Path, rows: list[tuple[str, float, float, float]]) -> None:
    """rank.csv rows (source, logme, leep, a_distance), ranked by LogME."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: -r[1])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=rank_cli.CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for position, (source, logme_, leep_, distance) in enumerate(ordered, 1):
            writer.writerow(
                {
                    "rank": position,
                    "candidate": source,
                    "source": source,
                    "target": "hand_digits",
                    "logme": logme_,
                    "leep": leep_,
                    "a_distance": distance,
                    "rank_by": "logme",
                }
            )


def test_report_sets_the_ranks_beside_the_measured_transfer(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for num, (source, acc) in enumerate([("a", 0.9), ("b", 0.8), ("c", 0.7)]):
        job(sweep, num, "finetune", source, acc)
        job(sweep, 3 + num, "target_only", source, 0.6)
    # LogME orders the sources as measured, LEEP the other way round, and the A-distance
    # (lower = better) as measured.
    table = [("a", 0.9, -2.0, 0.5), ("b", 0.5, -1.5, 1.0), ("c", 0.1, -1.0, 1.5)]
    rank_table(tmp_path / "elsewhere" / "rank.csv", table)
    text = report(sweep, [tmp_path / "elsewhere"])
    assert "### finetune -> hand_digits (source all, target 10 per class), ranked by LogME" in text
    line_a = next(line for line in text.splitlines() if line.startswith("| a | 1 |"))
    assert "0.9000" in line_a and "90.0 ± 0.0" in line_a and "+30.0" in line_a
    assert (
        "Spearman rank correlation with gain_vs_target_only over 3 sources: LogME +1.00, "
        "LEEP -1.00, A-distance +1.00" in text
    )
    rows = read_rows(sweep / "rank_vs_transfer.csv")
    assert [(r["source"], r["rank"]) for r in rows] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert float(rows[0]["spearman_leep"]) == pytest.approx(-1.0)
    # A rank run kept inside the sweep is found without --rank and is not a failed job.
    rank_table(sweep / "rank" / "rank.csv", table)
    (sweep / "rank" / ".hydra").mkdir()
    text = report(sweep)
    assert "LogME +1.00" in text and "Jobs without results" not in text
    # A rank table that is missing is one clear line.
    with pytest.raises(SystemExit) as stop:
        report_main([str(sweep), "--rank", str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("tlframe-report: error: ")
