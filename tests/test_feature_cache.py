"""Frozen backbone blocks' output computed once: the same trained weights as recomputing it
every step, the frozen blocks not run while training, only where the backbone's first
blocks (or all of them) are frozen for the whole stage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import QUICK, SMALL_SOURCE

from tlframe.engine import stages
from tlframe.engine.cache import StageCache
from tlframe.engine.feature_cache import qualifies
from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stage
from tlframe.tools import bench
from tlframe.train import build_domains

FROZEN = ("method=layer_transfer", "method.layers=4")  # lenet's four blocks, all frozen
PREFIX = ("method=layer_transfer",)  # conv1 and conv2 (with its dropout) frozen; fc trains
SETTING = (*QUICK, *SMALL_SOURCE, "data.target_labels=3", "callbacks.feature_space=null")


def train_target(make_cfg, monkeypatch, *overrides: str, cache_stages: bool = False):
    """The target stage of a method trained after its source stage; and how many times its
    backbone's first block ran with gradients on (the training steps: evaluation and
    feature computation run without)."""
    cfg = make_cfg(*SETTING, *overrides)
    domains = build_domains(cfg)
    source_spec, target_spec = plan_stages(cfg)
    cache = StageCache(cfg.paths.cache_dir, enabled=cache_stages)
    run_dir = Path(cfg.paths.output_dir)
    source = run_stage(cfg, source_spec, domains, None, run_dir, cache)
    calls = []

    def counting_build_module(*args, **kwargs):
        module = build_module(*args, **kwargs)
        module.model.backbone.blocks[0].register_forward_hook(
            lambda *_: calls.append(1) if torch.is_grad_enabled() else None
        )
        return module

    monkeypatch.setattr(stages, "build_module", counting_build_module)
    result = run_stage(cfg, target_spec, domains, source.module.parts(), run_dir, cache)
    return result, len(calls)


@pytest.mark.parametrize(
    "method, logged, trained_parts",
    [
        (FROZEN, "trains on cached backbone features", ("head",)),
        (
            PREFIX,
            "the output of its first 2 of 4 blocks",
            ("backbone.blocks.fc", "backbone.blocks.bottleneck", "head"),
        ),
    ],
    ids=["whole backbone", "frozen prefix"],
)
def test_cached_features_train_the_same_weights_without_running_the_frozen_blocks(
    make_cfg, monkeypatch, caplog, method, logged, trained_parts
):
    with caplog.at_level(logging.INFO, logger="tlframe.engine.feature_cache"):
        cached, cached_calls = train_target(make_cfg, monkeypatch, *method)
    recomputed, recomputed_calls = train_target(
        make_cfg, monkeypatch, *method, "performance.feature_cache=false"
    )
    assert logged in caplog.text
    assert cached_calls == 0
    assert recomputed_calls == 4  # every training step (data.steps_per_epoch=4)
    a, b = cached.module.model, recomputed.module.model
    for part in trained_parts:
        sa, sb = a.get_submodule(part).state_dict(), b.get_submodule(part).state_dict()
        for name in sa:
            assert torch.allclose(sa[name], sb[name], rtol=1e-5, atol=1e-6), f"{part}.{name}"
    assert cached.metrics["test/target/acc"] == pytest.approx(recomputed.metrics["test/target/acc"])


def test_a_rerun_reads_the_features_from_the_cache_dir(make_cfg, monkeypatch, caplog, tmp_path):
    """A second target stage (another learning rate) on the same frozen backbone and data
    computes no features: every split's come from the cache dir."""
    train_target(make_cfg, monkeypatch, *FROZEN, cache_stages=True)
    # the target's training split, and each domain's validation split
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 3
    other_lr = "++stages.target.optimizer.lr=0.05"
    with caplog.at_level(logging.INFO, logger="tlframe.engine.feature_cache"):
        train_target(make_cfg, monkeypatch, *FROZEN, other_lr, cache_stages=True)
    assert "3 of its splits read from the cache" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "prefix", "cached"),
    [
        (FROZEN, 4, True),
        (("method=self_taught", "source=synth_letters", "source.num_train=300"), 4, True),
        (PREFIX, 2, True),  # fc and bottleneck train on conv2's output
        (("method=layer_transfer", "method.layers=1"), 1, True),
        ((*PREFIX, "method.side=last"), 0, False),  # conv1 trains: nothing before it is fixed
        ((*PREFIX, "method.unfreeze_at_epoch=0"), 0, False),
        ((*FROZEN, "method.unfreeze_at_epoch=1"), 0, False),
        (("method=self_taught", "method.finetune=true"), 0, False),
        (("method=finetune",), 0, False),
        ((*FROZEN, "+objectives=[mcc]"), 4, False),  # an objective on the unlabeled target
    ],
)
def test_only_stages_with_a_frozen_prefix_use_the_cache(make_cfg, overrides, prefix, cached):
    cfg = make_cfg(*SETTING, *overrides)
    domains = build_domains(cfg)
    first, last = plan_stages(cfg)
    source = build_module(cfg, first, domain_infos(domains), None)
    module = build_module(cfg, last, domain_infos(domains), source.parts())
    assert module.model.frozen_prefix() == prefix
    assert qualifies(module, domains, world_size=1) is cached
    assert not qualifies(module, domains, world_size=2)


def test_plain_finetuning_runs_its_backbone_every_step(make_cfg, monkeypatch):
    _, calls = train_target(make_cfg, monkeypatch, "method=finetune", "method.tuning.epochs=1")
    assert calls == 4


def test_the_benchmark_reports_the_speed_up(tmp_path):
    tiny = ("source.num_train=200", "source.num_val=100", "source.num_test=100")
    cached, recomputed = bench.feature_cache_seconds(tmp_path, steps=3, overrides=tiny)
    assert cached > 0 and recomputed > 0 and recomputed / cached > 0
