"""The engine and its plug-in parts: methods supply parts and never undo them, objectives
combine from the command line, the stage cache keys on the code a stage runs, grey and
colour domains pair by themselves, and TensorBoard names runs by what tells them apart."""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import QUICK, run_cli, subprocess_env
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from tlframe import train as entrypoint
from tlframe.engine import cache
from tlframe.engine.method import load_methods
from tlframe.engine.stages import build_method, plan_stages
from tlframe.errors import ConfigError
from tlframe.methods.entropy_minimization import EntropyMinimization
from tlframe.methods.mcc import class_confusion
from tlframe.tools.report import report

PACKAGE = Path(entrypoint.__file__).resolve().parent
TINY = [
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
    "source.num_train=200",
    "source.num_val=100",
    "source.num_test=100",
    "callbacks.progress_bar=null",
    "callbacks.feature_space.tsne=false",
    "trainer.enable_progress_bar=false",
]


def constructors(path: Path):
    """Every ``__init__`` defined in a source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            yield node


@pytest.mark.parametrize(
    "path",
    sorted([*PACKAGE.glob("engine/*.py"), *PACKAGE.glob("methods/*.py")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_no_constructor_deletes_a_part_or_inherits_one(path: Path):
    """Parts are built once and handed over by the stage runner, after construction."""
    for init in constructors(path):
        for node in ast.walk(init):
            if isinstance(node, ast.Delete):
                pytest.fail(f"{path.name}:{node.lineno} deletes a part in a constructor")
            call = node.func if isinstance(node, ast.Call) else None
            if isinstance(call, ast.Attribute) and call.attr == "inherit":
                pytest.fail(f"{path.name}:{node.lineno} inherits in a constructor")


def test_every_method_is_one_registered_builder_with_a_structured_config(make_cfg):
    for name in load_methods():
        cfg = make_cfg(f"method={name}")
        assert build_method(cfg).name == name
    with pytest.raises(Exception, match="trade_of"):  # a misspelt option: at composition
        make_cfg("method=dann", "method.alignment.trade_of=1")
    forced = make_cfg("method=dann", "++method.alignment.trade_of=1")  # added by force
    with pytest.raises(ConfigError, match="trade_of is not an option of DomainAdversarial"):
        build_method(forced)


def test_class_confusion_by_hand():
    """Two examples, two classes, T = 1: certain predictions of different classes confuse
    nothing, two identical uncertain ones confuse completely."""
    certain = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert class_confusion(certain, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(2, 2)  # C = [[.5,.5],[.5,.5]] per row after normalising: 0.5 each
    assert class_confusion(uniform, 1.0).item() == pytest.approx(0.5, abs=1e-6)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    h = -(probs * probs.log()).sum(1)
    w = 2 * (1 + torch.exp(-h)) / (1 + torch.exp(-h)).sum()
    c = (probs * w[:, None]).T @ probs
    c = c / c.sum(1, keepdim=True)
    expected = (c.sum() - c.trace()) / 2
    assert class_confusion(probs.log(), 1.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_entropy_minimization_is_the_weighted_mean_target_entropy():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    out = type("Out", (), {"logits": lambda self, role: logits})()
    value = EntropyMinimization(trade_off=0.5)(out, 0.0)["entropy"].item()
    assert value == pytest.approx(0.5 * (math.log(2) + 0.0) / 2, abs=1e-4)


def test_objectives_combine_from_the_command_line(make_cfg, tmp_path):
    run = tmp_path / "run"
    record = entrypoint.train(
        make_cfg("method=dann", "+objectives=[mcc]", *QUICK, "source.num_train=300", run_dir=run)
    )
    assert record["method"] == "dann+mcc"
    spec = plan_stages(make_cfg("method=dann", "+objectives=[mcc]"))[0]
    assert list(spec.stage.objectives) == ["cls", "alignment", "mcc"]
    assert spec.key != plan_stages(make_cfg("method=dann"))[0].key
    assert "| dann+mcc |" in report(run)
    with pytest.raises(Exception, match="objective mcc needs target examples"):
        entrypoint.train(make_cfg("method=source_only", "+objectives=[mcc]", *QUICK))


def copy_package(tmp_path: Path, monkeypatch) -> Path:
    copy = tmp_path / "tlframe"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", copy)
    cache.source_closure.cache_clear()
    return copy


def test_the_stage_cache_keys_on_the_code_a_stage_runs(make_cfg, tmp_path, monkeypatch):
    """A new module or an edited tool leaves the keys; an edit to a stage's own method
    file or to the engine changes them."""
    copy = copy_package(tmp_path, monkeypatch)

    def keys() -> dict[str, str]:
        cache.source_closure.cache_clear()
        return {m: plan_stages(make_cfg(f"method={m}"))[0].key for m in ("dann", "source_only")}

    before = keys()
    (copy / "methods" / "brand_new.py").write_text('"""A method nobody runs yet."""\n')
    (copy / "tools" / "report.py").write_text("# edited\n", encoding="utf-8")
    assert keys() == before
    dann = copy / "methods" / "dann.py"
    dann.write_text(dann.read_text() + "\n# edited\n")
    after = keys()
    assert after["dann"] != before["dann"] and after["source_only"] == before["source_only"]
    engine = copy / "engine" / "module.py"
    engine.write_text(engine.read_text() + "\n# edited\n")
    assert keys()["source_only"] != before["source_only"]
    cache.source_closure.cache_clear()


def test_a_sweep_pairs_grey_and_colour_targets_without_channel_options(
    tmp_path, monkeypatch, capsys
):
    sweep = tmp_path / "sweep"
    argv = ["-m", "method=source_only", "target=hand_digits,synth_digits_color", *TINY]
    argv += [f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"]
    assert run_cli(entrypoint.main, "tlframe-train", argv, monkeypatch) == 0
    shapes = [json.loads((sweep / j / "metrics.json").read_text())["input_shapes"] for j in "01"]
    assert shapes[0] == {"source": [1, 28, 28], "target": [1, 28, 28]}
    assert shapes[1] == {"source": [3, 28, 28], "target": [3, 28, 28]}
    log = capsys.readouterr().out
    assert "source synth_digits is grey and target synth_digits_color colour" in log
    assert "source synth_digits is grey and target hand_digits" not in log


def test_an_explicit_channel_option_is_kept(make_cfg):
    with pytest.raises(Exception, match="gives inputs of shape"):
        entrypoint.train(make_cfg("target=hand_digits_color", "source.channels=1", *QUICK))


def tensorboard_runs(logdir: Path) -> list[str]:
    """The run names a real TensorBoard server lists for ``logdir`` (its HTTP API)."""
    command = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--reload_interval", "1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in server.stdout:  # "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press ...)"
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if found:
                url = found.group(1)
                break
        assert url, "tensorboard did not start"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/data/runs", timeout=10) as response:
                runs = json.loads(response.read())
            if len(runs) >= 4:
                return runs
            time.sleep(1)
        return runs
    finally:
        server.kill()
        server.wait()


def test_a_sweep_in_tensorboard_shows_runs_named_by_method_pair_and_seed(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "tlframe.train", "-m", "method=source_only,dann"]
    command += ["seed=0,1", "optimizer.lr=0.02", *TINY, f"hydra.sweep.dir={sweep}"]  # lr: fixed
    env = subprocess_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = tensorboard_runs(sweep / "tensorboard")
    pair = "synth_digits-hand_digits"
    expected = {
        f"{method} {pair} seed={seed}/{stage}"
        for method, stage in (("source_only", "source"), ("dann", "adapt"))
        for seed in (0, 1)
    }
    assert set(runs) == expected, runs
    for events in (sweep / "tensorboard").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    content = value.metadata.plugin_data.content
                    names = plugin_data_pb2.HParamsPluginData.FromString(content)
                    hparams = set(names.session_start_info.hparams)
                    assert "method.alignment.trade_off" in hparams or "dann" not in str(events)
                    assert not any("_target_" in h or "_partial_" in h for h in hparams)
