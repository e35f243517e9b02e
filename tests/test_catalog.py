"""The catalog's methods learn in short runs, and each reads only what its setting has:
SHOT adapts without a source batch, LwF warms its new head up alone, layer transfer's
selffer control never reads the source."""

from __future__ import annotations

import pytest
import torch

from tlframe.engine.module import Engine
from tlframe.engine.stages import run_stages
from tlframe.errors import ConfigError
from tlframe.train import build_domains, train

SHORT = ["data.steps_per_epoch=40", "trainer.max_epochs=3", "source.num_train=3000"]
UNSUPERVISED = ("jan", "mdd", "mcd", "bsp", "afn")
FEW_LABELS = ("bss", "delta", "co_tuning")


@pytest.mark.parametrize("method", UNSUPERVISED)
def test_short_adaptation_run_learns(make_cfg, method: str):
    metrics = train(make_cfg(f"method={method}", *SHORT, "cache_stages=false"))["metrics"]
    assert metrics["test/source/acc"] > 0.8
    assert metrics["test/target/acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("method", FEW_LABELS)
def test_short_fine_tuning_run_learns_the_target(make_cfg, method: str):
    cfg = make_cfg(f"method={method}", *SHORT, "data.target_labels=10", "method.tuning.epochs=2")
    assert train(cfg)["metrics"]["test/target/acc"] > 0.6  # chance is 0.1


def _record_batches(monkeypatch) -> list[tuple[str, frozenset]]:
    """(stage, domains of the batch) for every training step from now on."""
    seen: list[tuple[str, frozenset]] = []
    step = Engine.training_step

    def recording(self, batch, batch_idx):
        seen.append((self.context.name, frozenset(batch)))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Engine, "training_step", recording)
    return seen


def test_shot_adapts_without_any_source_batch_and_keeps_the_source_head(
    make_cfg, monkeypatch, tmp_path
):
    seen = _record_batches(monkeypatch)
    cfg = make_cfg("method=shot", *SHORT, "cache_stages=false")
    source, adapt = run_stages(cfg, build_domains(cfg), tmp_path / "run")
    assert {domains for stage, domains in seen if stage == "adapt"} == {frozenset({"target"})}
    assert {domains for stage, domains in seen if stage == "source"} == {frozenset({"source"})}
    for before, after in zip(
        source.module.model.head.parameters(), adapt.module.model.head.parameters(), strict=True
    ):
        assert torch.equal(before, after)  # the hypothesis stays fixed
    assert adapt.metrics["test/target/acc"] > 0.3


def test_lwf_warms_up_the_new_head_alone_then_trains_everything(make_cfg, tmp_path):
    base = [
        "method=lwf",
        "data.target_labels=5",
        "data.steps_per_epoch=4",
        "trainer.max_epochs=1",
        "method.warmup_epochs=1",
        "source.num_train=300",
    ]
    warmup_only = make_cfg(*base, "method.tuning.epochs=1")
    domains = build_domains(warmup_only)
    source, warmed = run_stages(warmup_only, domains, tmp_path / "warm")
    _, full = run_stages(make_cfg(*base, "method.tuning.epochs=2"), domains, tmp_path / "full")
    start = source.module.model.backbone.state_dict()
    after_warmup = warmed.module.model.backbone.state_dict()
    assert all(torch.equal(start[k], after_warmup[k]) for k in start)  # the head alone
    old_head = source.module.model.head.weight
    assert torch.equal(warmed.module.model.task_heads["source"].weight, old_head)
    trained = full.module.model.backbone.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)  # then everything,
    statistics = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(start[k], trained[k]) for k in statistics)  # but BN


def test_selffer_control_copies_layers_from_a_target_network_and_never_reads_the_source(
    make_cfg, monkeypatch
):
    seen = _record_batches(monkeypatch)
    cfg = make_cfg(
        "method=layer_transfer",
        "method.selffer=true",
        "data.target_labels=5",
        "data.steps_per_epoch=4",
        "trainer.max_epochs=1",
    )
    record = train(cfg)
    assert list(record["stages"]) == ["base", "target"]
    assert {domains for _, domains in seen} == {frozenset({"target"})}
    assert record["labels_read"]["source"] == "none"


def test_delta_refuses_a_backbone_without_feature_maps_when_its_stage_is_built(make_cfg):
    from test_conservative import source_and_target

    with pytest.raises(ConfigError, match="method=delta regularises convolutional feature maps"):
        source_and_target(make_cfg, "delta", "backbone=mlp")
