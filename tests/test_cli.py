"""The installed console script and `python -m tlframe.train`, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO, subprocess_env

BIN = Path(sys.executable).parent
SMOKE = [
    "experiment=smoke",
    "source.num_train=500",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def run(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600
    )


def test_console_script_runs_outside_the_checkout(tmp_path: Path):
    out = tmp_path / "X"
    proc = run(
        [
            str(BIN / "tlframe-train"),
            "method=source_only",
            "source=synth_digits",
            "target=hand_digits",
            "seed=0",
            f"hydra.run.dir={out}",
            *SMOKE,
        ],
        tmp_path,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"test/target/acc", "test/source/acc"} <= set(metrics)
    assert list(out.rglob("events.out.tfevents.*"))
    assert "test/target/acc" in proc.stdout  # the final target accuracy is printed


def test_multirun_sweeps_seeds_into_separate_run_dirs(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run(
        [
            sys.executable,
            "-m",
            "tlframe.train",
            "-m",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            *SMOKE,
        ],
        tmp_path,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [r["seed"] for r in records] == [0, 1]


def test_mistyped_option_and_bad_value_give_one_clear_line(tmp_path: Path):
    typo = run([str(BIN / "tlframe-train"), "method=dan_n"], tmp_path, tmp_path)
    assert typo.returncode != 0
    assert "Could not find 'method/dan_n'" in typo.stderr and "source_only" in typo.stderr
    assert "Traceback" not in typo.stderr
    bad = run([str(BIN / "tlframe-train"), "data.batch_size=abc"], tmp_path, tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("tlframe: error: data.batch_size")
    assert "Traceback" not in bad.stderr


def test_config_tree_ships_inside_a_built_wheel(tmp_path: Path):
    """An installed (non-editable) package finds its configs without the checkout."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheel_dir.glob("tlframe-*.whl"))) as wheel:
        wheel.extractall(site)
    assert (site / "tlframe" / "conf" / "source" / "hand_digits.yaml").is_file()
    script = (
        "from hydra import compose, initialize_config_dir\n"
        "from tlframe.config import config_dir, register_configs\n"
        "register_configs()\n"
        "with initialize_config_dir(config_dir=str(config_dir()), version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['dataset=hand2synth'])\n"
        "print(config_dir(), cfg.source._target_, cfg.target._target_)\n"
    )
    env = subprocess_env(tmp_path)
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(str(site / "tlframe" / "conf"))
    assert proc.stdout.split()[1:] == [
        "tlframe.data.synthetic.hand_digits.hand_digits",
        "tlframe.data.synthetic.synth_digits.synth_digits",
    ]
    shutil.rmtree(site)
