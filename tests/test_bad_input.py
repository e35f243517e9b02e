"""Every bad input of a run stops it with exit code 2 and one line on stderr.

The table runs ``tlframe-train``'s own entrypoint in this process (same Hydra composition,
same error handling, no interpreter start-up); ``test_cli.py`` runs the installed console
script on a bad value, and one subprocess here checks ``TLFRAME_DEBUG=1``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, subprocess_env

from tlframe import train as entrypoint
from tlframe.engine import outputs

QUIET = [
    "callbacks.progress_bar=null",
    "callbacks.feature_space=null",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
]
SMALL_SOURCE = ["source.num_train=200", "source.num_val=100", "source.num_test=100"]


def features(path: Path, width: int, classes: int, per_class: int = 20) -> Path:
    """A small feature file: ``per_class`` vectors of ``width`` numbers for each class."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    np.savez(path, X=rng.normal(size=(len(labels), width)).astype("float32"), y=labels)
    return path


CONFIG = "caught right after composition, before any data is built"
DATA = "caught when the domains are loaded, before any training"

# (when, case, overrides ({tmp}: the test's folder), start of the message after "tlframe: error: ")
CASES = [
    (
        DATA,
        "different classes for a same-class method",
        ["method=source_only", "source=synth_letters", *SMALL_SOURCE],
        "method source_only needs the same classes in source and target; synth_letters only: "
        "['A', 'B'",
    ),
    (
        CONFIG,
        "labels needed but none available",
        ["method=target_only", "data.target_labels=none"],
        "method target_only trains on target with labels, but none are available",
    ),
    (
        CONFIG,
        "selection on target labels the setting lacks",
        ["method=dann", "data.target_labels=none", "selection=target"],
        "selection=target reads target validation labels this setting does not have",
    ),
    (
        CONFIG,
        "selection on the full target validation split of a k-shot setting",
        ["method=finetune", "data.target_labels=10", "selection=val/target/acc"],
        "selection=val/target/acc reads target validation labels this setting does not have",
    ),
    (
        CONFIG,
        "held-out selection with one label per class",
        ["method=target_only", "data.target_labels=1", "selection=holdout"],
        "selection=holdout holds out part of the k labeled target examples per class, but "
        "data.target_labels=1; use selection=last",
    ),
    (
        CONFIG,
        "held-out fraction out of range",
        ["method=target_only", "data.target_labels=4", "selection=holdout", "holdout.fraction=1"],
        "holdout.fraction must lie strictly between 0 and 1, got 1",
    ),
    (
        CONFIG,
        "a search on a test metric",
        ["optimized_metric=test/target/acc"],
        "optimized_metric=test/target/acc is a test figure",
    ),
    (
        CONFIG,
        "a search on an oracle metric",
        ["method=dann", "optimized_metric=val/target/oracle_acc"],
        "optimized_metric=val/target/oracle_acc reads labels this setting does not have",
    ),
    (
        DATA,
        "zero-shot method on a domain without class side information",
        ["method=conse", *SMALL_SOURCE],
        "zero-shot methods need class side information and a zsl_split on the source domain, "
        "which synth_digits lacks",
    ),
    (
        DATA,
        "feature widths of source and target differ",
        [
            "source=array_file",
            "source.path={tmp}/wide16.npz",
            "target=array_file",
            "target.path={tmp}/wide32.npz",
            "backbone=mlp",
            "method=source_only",
        ],
        "source wide16 gives inputs of shape (16,) but target wide32 gives (32,)",
    ),
    (
        DATA,
        "grey source held grey, colour target",
        ["target=hand_digits_color", "source.channels=1", "method=source_only"],
        "source synth_digits gives inputs of shape (1, 28, 28) but target hand_digits_color "
        "gives (3, 28, 28); make them equal with the domains' options, e.g. source.channels=3",
    ),
    (
        DATA,
        "image backbone on feature vectors",
        [
            "source=array_file",
            "source.path={tmp}/wide16.npz",
            "target=array_file",
            "target.path={tmp}/wide16.npz",
            "backbone=lenet",
            "method=source_only",
        ],
        "lenet needs image inputs (C, H, W), got shape (16,); use backbone=mlp",
    ),
    (
        DATA,
        "data.target_labels larger than the smallest class",
        ["method=target_only", "data.target_labels=1000"],
        "hand_digits class 0 has only",
    ),
    (
        DATA,
        "missing image folder",
        ["source=image_folder", "source.root={tmp}/no_such_folder"],
        "image_folder: no image folder at {tmp}/no_such_folder",
    ),
    (
        DATA,
        "missing feature file",
        ["source=array_file", "source.path={tmp}/no_such_file.npz", "backbone=mlp"],
        "no_such_file: no file at {tmp}/no_such_file.npz; set source.path=FILE",
    ),
    (
        CONFIG,
        "unknown weights name",
        ["backbone=resnet18", "backbone.weights=NOPE"],
        "unknown resnet18 weights backbone.weights=NOPE; use one of DEFAULT, IMAGENET1K_V1",
    ),
    (
        CONFIG,
        "unknown torchvision model",
        ["backbone=resnet18", "backbone.arch=resnet19"],
        "unknown torchvision model backbone.arch=resnet19",
    ),
    (
        CONFIG,
        "negative learning rate",
        ["optimizer.lr=-0.1"],
        "optimizer.lr must be a positive number, got -0.1",
    ),
    (
        CONFIG,
        "negative learning rate of a second stage",
        ["method=finetune", "method.tuning.lr=-1"],
        "method.tuning.lr must be a positive number, got -1; e.g. method.tuning.lr=0.01",
    ),
    (
        CONFIG,
        "negative epoch count",
        ["trainer.max_epochs=-1"],
        "trainer.max_epochs must be an integer >= 1, got -1",
    ),
    (
        CONFIG,
        "negative epoch count of a second stage",
        ["method=finetune", "method.tuning.epochs=-2"],
        "method.tuning.epochs must be an integer >= 1, got -2; set method.tuning.epochs=N",
    ),
    (
        CONFIG,
        "negative batch size",
        ["data.batch_size=-8"],
        "data.batch_size must be an integer >= 1, got -8",
    ),
    (
        CONFIG,
        "misspelt Trainer argument",
        ["++trainer.val_check_intervl=5"],
        "trainer.val_check_intervl is not an argument of pytorch_lightning.Trainer; "
        "check its spelling against: ",
    ),
    (
        CONFIG,
        "misspelt optimizer argument of a second stage",
        ["method=finetune", "++stages.target.optimizer.dampenin=0.1"],
        "method finetune stage 'target': optimizer.dampenin is not an argument of "
        "torch.optim.SGD; check its spelling against: dampening, ",
    ),
    (
        CONFIG,
        "optimizer class that does not exist",
        ["optimizer._target_=torch.optim.SGDD"],
        "optimizer._target_=torch.optim.SGDD cannot be imported; name a class or function",
    ),
]


def data_must_not_be_built(cfg):
    raise AssertionError("the data was built before the config was checked")


def cli(argv: list[str], monkeypatch) -> int:
    """Run ``tlframe-train *argv`` in this process; its exit code."""
    return run_cli(entrypoint.main, "tlframe-train", argv, monkeypatch)


@pytest.mark.parametrize(("when", "case", "overrides", "message"), CASES, ids=[c[1] for c in CASES])
def test_bad_input_exits_2_with_one_line(
    when, case, overrides, message, tmp_path, monkeypatch, capsys
):
    features(tmp_path / "wide16.npz", 16, 3)
    features(tmp_path / "wide32.npz", 32, 3)
    run_dir = tmp_path / "run"
    argv = [f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", *QUIET]
    argv += [o.format(tmp=tmp_path) for o in overrides]
    monkeypatch.delenv("TLFRAME_DEBUG", raising=False)
    if when == CONFIG:
        monkeypatch.setattr(entrypoint, "build_domains", data_must_not_be_built)
    code = cli(argv, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()], err  # one line, no traceback
    assert err.startswith("tlframe: error: " + message.format(tmp=tmp_path)), err
    assert not (run_dir / "checkpoints").exists()  # stopped before any training


def test_a_sweep_with_one_bad_job_finishes_the_others(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    argv = ["-m", "optimizer.lr=-1,0.01", f"hydra.sweep.dir={sweep}"]
    argv += [f"paths.cache_dir={tmp_path / 'cache'}", *QUIET, *SMALL_SOURCE, "method=source_only"]
    assert cli(argv, monkeypatch) == 0
    error = json.loads((sweep / "0" / "error.json").read_text())
    assert error["status"] == "failed"
    assert error["error"].startswith("ConfigError: optimizer.lr must be a positive number")
    assert not (sweep / "0" / "metrics.json").exists()
    done = json.loads((sweep / "1" / "metrics.json").read_text())
    assert done["status"] == "completed" and "test/target/acc" in done["metrics"]
    assert "tlframe: error: optimizer.lr" in capsys.readouterr().err


def test_tlframe_debug_shows_the_traceback(tmp_path):
    """The one subprocess: the real interpreter exit, and the traceback on request."""
    env = subprocess_env(tmp_path)
    env["TLFRAME_DEBUG"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "tlframe.train", "trainer.max_epochs=-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "tlframe: error: trainer.max_epochs must be an integer >= 1" in proc.stderr
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def one_line_error(code: int, err: str, start: str) -> None:
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()], err  # one line, no traceback
    assert err.startswith("tlframe: error: " + start), err


def test_an_unwritable_output_folder_is_reported_before_hydra_uses_it(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "a_file").write_text("not a folder")
    for argv in (
        [f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"],
        ["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'a_file' / 'sweep'}"],
    ):
        code = cli(argv, monkeypatch)
        one_line_error(code, capsys.readouterr().err, "cannot write the output folder ")


def test_an_unwritable_data_folder_is_reported_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    argv = [f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'a_file' / 'data'}"]
    code = cli([*argv, *QUIET, "source=synth_letters_color", "method=source_only"], monkeypatch)
    err = capsys.readouterr().err
    one_line_error(code, err, f"cannot write {tmp_path / 'a_file'}")
    assert "paths.data_dir=DIR" in err


def test_a_full_disk_at_the_end_keeps_the_checkpoints_and_says_so(tmp_path, monkeypatch, capsys):
    def full_disk(run_dir, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "metrics.json"))

    monkeypatch.setattr(outputs, "write_metrics", full_disk)  # imported by train() when it runs
    run_dir = tmp_path / "run"
    argv = [f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", *QUIET]
    code = cli([*argv, *SMALL_SOURCE, "method=source_only"], monkeypatch)
    one_line_error(code, capsys.readouterr().err, f"cannot write {run_dir / 'metrics.json'}")
    assert list((run_dir / "checkpoints").rglob("*.ckpt"))  # what was written is kept
