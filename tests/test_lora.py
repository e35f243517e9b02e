"""Parameter-efficient fine-tuning (``method.tuning.adapter=lora``, through peft): the target
stage trains only low-rank updates of the source backbone's layers and the head, it learns,
metrics.json counts what trained, and a wrong or uninstallable adapter stops with one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_dir
from torch import Tensor

from tlframe import train as entrypoint
from tlframe.config import config_dir

QUIET = [
    "callbacks.progress_bar=null",
    "callbacks.feature_space=null",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
# A source model that reaches ~54% on the target, then 100 steps on 10 labels per class.
BUDGET = [
    "source.num_train=1000",
    "data.steps_per_epoch=20",
    "trainer.max_epochs=2",
    "data.eval_batch_size=1024",
    "data.target_labels=10",
]
RANK = 8  # method.tuning.lora_rank's default


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Path]]:
    """The same fine-tuning with LoRA and in full (metrics.json record, run dir), sharing
    one source stage."""
    root = tmp_path_factory.mktemp("lora")
    found = {}
    for name, adapter in (("lora", "lora"), ("full", "null")):
        overrides = [f"paths.output_dir={root / name}", f"paths.cache_dir={root / 'cache'}"]
        overrides += [*QUIET, *BUDGET, "method=finetune", f"method.tuning.adapter={adapter}"]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        found[name] = (entrypoint.train(cfg), root / name)
    return found


def weights(run_dir: Path, stage: str) -> dict[str, Tensor]:
    return torch.load(run_dir / "checkpoints" / stage / "best.ckpt")["state_dict"]


def lora_size(weight: Tensor) -> int:
    """The entries of one layer's A (its inputs, or a convolution's patches, to RANK
    values) and B (RANK values to its outputs)."""
    return RANK * (weight[0].numel() + weight.shape[0])


def test_lora_trains_its_low_rank_updates_and_the_head_only(runs):
    (record, run), (full, _) = runs["lora"], runs["full"]
    source, target = weights(run, "source"), weights(run, "target")
    backbone = {k: v for k, v in target.items() if k.startswith("model.backbone.")}
    updates = {k: v for k, v in backbone.items() if ".lora_" in k}
    original = {k.replace(".base_layer.", "."): v for k, v in backbone.items() if k not in updates}
    assert original.keys() == {k for k in source if k.startswith("model.backbone.")}
    for name, value in original.items():  # frozen, batch-norm statistics included
        assert torch.equal(value, source[name]), name
    # every linear and convolution layer is adapted; B starts at zero and has trained
    layers = {  # a linear layer's weight has 2 dimensions, a convolution's 4
        k.removesuffix(".weight"): v
        for k, v in source.items()
        if k.startswith("model.backbone.") and k.endswith(".weight") and v.dim() in (2, 4)
    }
    assert set(layers) == {
        "model.backbone.blocks.conv1.0",
        "model.backbone.blocks.conv2.0",
        "model.backbone.blocks.fc.1",
        "model.backbone.blocks.bottleneck.0",
    }
    assert {k.split(".lora_")[0] for k in updates} == set(layers)
    assert all(v.abs().sum() > 0 for k, v in updates.items() if ".lora_B." in k)
    assert not torch.equal(target["model.head.weight"], source["model.head.weight"])

    head = sum(v.numel() for k, v in source.items() if k.startswith("model.head."))
    expected = sum(lora_size(w) for w in layers.values()) + head
    assert record["stages"]["target"]["trainable_params"] == expected == 21_208 + 2_570  # README
    assert (record["method"], full["method"]) == ("finetune+lora", "finetune")  # report apart
    assert full["stages"]["target"]["trainable_params"] > 20 * expected
    assert (
        full["stages"]["target"]["trainable_params"] == full["stages"]["source"]["trainable_params"]
    )
    assert record["stages"]["target"]["peak_memory_mb"] > 0


def test_lora_learns_the_target_task(runs):
    """The source model scores ~0.54 on the target; LoRA 0.89 and full fine-tuning 0.94.
    Inert updates (B never training: the head alone) score 0.78, below the bar."""
    record, _ = runs["lora"]
    assert record["stages"]["source"]["metrics"]["test/target/acc"] < 0.7
    assert record["metrics"]["test/target/acc"] > 0.84


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method=finetune", "method.tuning.adapter=lorra"],
            "method.tuning.adapter must be null (full fine-tuning) or one of: lora; got 'lorra'",
        ),
        (
            ["method=finetune", "method.tuning.adapter=lora", "method.tuning.lora_rank=0"],
            "method.tuning.lora_rank must be >= 1",
        ),
        (
            ["method=lwf", "method.tuning.adapter=lora"],
            "method.tuning.adapter=lora trains its adapter from the first step; set "
            "method.warmup_epochs=0",
        ),
        (
            ["method=l2sp", "method.tuning.adapter=lora"],
            "l2sp pulls the backbone's weights towards the source's",
        ),
    ],
    ids=["misspelt", "rank", "lwf warm-up", "l2sp"],
)
def test_an_impossible_adapter_stops_with_one_line(
    overrides, message, tmp_path, monkeypatch, capsys
):
    assert one_line_error(overrides, tmp_path, monkeypatch, capsys).startswith(message)


def test_lora_without_peft_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft fails
    err = one_line_error(
        ["method=finetune", "method.tuning.adapter=lora"], tmp_path, monkeypatch, capsys
    )
    assert err == (
        "method.tuning.adapter=lora needs the peft library; install it with "
        "pip install 'tlframe[peft]'"
    )


def one_line_error(overrides: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    """``tlframe-train *overrides``'s error, checked to be one line before any data is
    built; the message after ``tlframe: error: ``."""

    def no_data(cfg):
        raise AssertionError("the data was built before the adapter was checked")

    monkeypatch.setattr(entrypoint, "build_domains", no_data)
    argv = [f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    code = run_cli(entrypoint.main, "tlframe-train", [*argv, *QUIET, *overrides], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err], err
    return err.removeprefix("tlframe: error: ")
