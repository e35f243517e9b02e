"""Layer transfer: n blocks copied from either side, frozen (bit-identical after the
target stage) or unfrozen at an epoch; the rest freshly initialised; the study's plot."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUICK
from test_conservative import source_and_target

from tlframe.data.datamodule import TransferDataModule
from tlframe.engine.stages import run_stages
from tlframe.errors import ConfigError
from tlframe.tools.plots import layer_study
from tlframe.train import build_domains


def equal_blocks(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("backbone", "side", "layers", "copied"),
    [
        ("lenet", "first", 2, ["conv1", "conv2"]),
        ("lenet", "last", 1, ["bottleneck"]),
        ("mlp", "first", 1, ["fc1"]),
        ("mlp", "last", 2, ["fc1", "fc2"]),
    ],
)
def test_n_blocks_are_copied_from_either_side_and_the_rest_is_fresh(
    make_cfg, backbone, side, layers, copied
):
    source, module = source_and_target(
        make_cfg,
        "layer_transfer",
        f"backbone={backbone}",
        *(["backbone.hidden_dims=[64,32]"] if backbone == "mlp" else []),
        f"method.side={side}",
        f"method.layers={layers}",
    )
    assert module.model.copied == copied
    for name, block in module.model.backbone.blocks.named_children():
        source_block = source.model.backbone.blocks.get_submodule(name)
        assert equal_blocks(block, source_block) == (name in copied), name
    assert not torch.equal(module.model.head.weight, source.model.head.weight)


def test_layers_beyond_the_backbones_blocks_are_refused(make_cfg):
    with pytest.raises(ConfigError, match="conv1, conv2, fc, bottleneck"):
        source_and_target(make_cfg, "layer_transfer", "method.layers=5")
    with pytest.raises(ConfigError, match="method.side"):
        source_and_target(make_cfg, "layer_transfer", "method.side=middle")


def test_frozen_copies_are_bit_identical_after_the_target_stage(make_cfg, tmp_path):
    cfg = make_cfg(
        "method=layer_transfer",
        "method.side=last",
        "method.layers=3",  # conv2, fc and the batch-normed bottleneck; conv1 + head train
        *QUICK,
        "source.num_train=300",
        "data.target_labels=3",
    )
    domains = build_domains(cfg)
    source, target = run_stages(cfg, domains, tmp_path / "run")
    blocks, source_blocks = target.module.model.backbone.blocks, source.module.model.backbone.blocks
    for name in ("conv2", "fc", "bottleneck"):  # weights and batch-norm statistics
        assert equal_blocks(blocks.get_submodule(name), source_blocks.get_submodule(name)), name
    assert not equal_blocks(blocks.conv1, source_blocks.conv1)
    # forgetting is measured too: the source task through the target stage's model
    split = domains["source"].test
    with torch.no_grad():
        predictions = target.module.eval()(split.inputs).argmax(1)
    accuracy = (predictions == split.labels).float().mean().item()
    assert target.metrics["test/source/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert target.metrics["test/source/acc"] != source.metrics["test/source/acc"]


class RecordEpochs(pl.Callback):
    """What the copied blocks look like during each epoch."""

    def __init__(self, source_blocks: list[torch.nn.Module]):
        self.source_blocks = source_blocks
        self.epochs: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            blocks = pl_module.model.copied_blocks()
            self.epochs.append(
                {
                    "training": [b.training for b in blocks],
                    "requires_grad": [p.requires_grad for b in blocks for p in b.parameters()],
                    "equal": all(map(equal_blocks, blocks, self.source_blocks)),
                }
            )


def fit(module, domains, epochs: int, callback: pl.Callback) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    datamodule = TransferDataModule(domains, {"target": 3}, batch_size=16, steps_per_epoch=2)
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("unfreeze_at_epoch", [None, 0, 1])
def test_copies_train_only_from_the_unfreeze_epoch_on(make_cfg, unfreeze_at_epoch):
    cfg = make_cfg("source.num_train=300")
    domains = build_domains(cfg)
    setting = "null" if unfreeze_at_epoch is None else unfreeze_at_epoch
    source, module = source_and_target(
        make_cfg,
        "layer_transfer",
        "source.num_train=300",
        "method.layers=4",  # with the batch-normed bottleneck
        f"method.unfreeze_at_epoch={setting}",
    )
    source_blocks = [
        copy.deepcopy(source.model.backbone.blocks.get_submodule(n)) for n in module.model.copied
    ]
    record = RecordEpochs(source_blocks)
    trainer = fit(module, domains, epochs=2, callback=record)
    for epoch, seen in enumerate(record.epochs):
        frozen = unfreeze_at_epoch is None or epoch < unfreeze_at_epoch
        assert seen["training"] == [not frozen] * 4, epoch
        assert set(seen["requires_grad"]) == {not frozen}, epoch
        if frozen:
            assert seen["equal"], epoch
    finally_equal = all(map(equal_blocks, module.model.copied_blocks(), source_blocks))
    assert finally_equal == (unfreeze_at_epoch is None)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    copies = {id(p) for b in module.model.copied_blocks() for p in b.parameters()}
    assert (copies <= optimized) == (unfreeze_at_epoch is not None)  # one schedule for all


def write_job(root: Path, job: int, layers: int, unfreeze, seed: int, acc: float) -> None:
    record = {
        "status": "completed",
        "method": "layer_transfer",
        "seed": seed,
        "metrics": {"test/target/acc": acc, "test/source/acc": 0.5},
        "config": {"method": {"side": "first", "layers": layers, "unfreeze_at_epoch": unfreeze}},
    }
    (root / str(job)).mkdir(parents=True)
    (root / str(job) / "metrics.json").write_text(json.dumps(record))


def test_layer_study_plots_target_accuracy_against_n(tmp_path: Path, capsys):
    job = 0
    for layers in range(3):
        for unfreeze in (None, 0):
            for seed in (0, 1):
                write_job(tmp_path, job, layers, unfreeze, seed, 0.5 + 0.1 * layers + 0.01 * seed)
                job += 1
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "error.json").write_text('{"status": "failed"}')
    layer_study.main([str(tmp_path)])
    png = tmp_path / "layer_study.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| first n, frozen | 2 | 2 | 0.705 ± 0.007 | 0.500 ± 0.000 |" in out
    assert "| first n, fine-tuned | 0 | 2 | 0.505 ± 0.007 |" in out
