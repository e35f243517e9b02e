"""Fine-tuning: two stages from one command, a cached source stage, kept or new heads,
and a source stage loaded from a checkpoint (method.tuning.init_from) instead of trained."""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK
from hydra.utils import instantiate

from tlframe.engine.context import DomainInfo, StageContext
from tlframe.engine.method import Method
from tlframe.engine.model import BackboneHead
from tlframe.engine.stages import build_method, build_module, domain_infos, plan_stages
from tlframe.errors import ConfigError
from tlframe.train import build_domains, train

SMALL = (*QUICK, "source.num_train=300", "data.target_labels=3")
ONE_EPOCH = "method.tuning.epochs=1"  # the target stage's own budget
SOURCE_STAGE_METHODS = ("source_only", "finetune", "lwf", "l2sp", "layer_transfer")


def test_every_labeled_target_method_shares_one_source_stage(make_cfg):
    keys = {m: plan_stages(make_cfg(f"method={m}", *SMALL))[0].key for m in SOURCE_STAGE_METHODS}
    assert len(set(keys.values())) == 1, keys


def test_a_sweep_over_target_stage_settings_trains_the_source_stage_once(make_cfg, tmp_path):
    first = train(make_cfg("method=finetune", *SMALL, ONE_EPOCH, run_dir=tmp_path / "a"))
    assert not first["stages"]["source"]["cached"]
    assert (tmp_path / "a" / "checkpoints" / "source" / "best.ckpt").is_file()
    changes = [
        ("method=finetune", "method.tuning.lr=0.003"),
        ("method=l2sp", "data.target_labels=1"),
    ]
    for i, change in enumerate(changes):
        run = tmp_path / f"b{i}"
        record = train(make_cfg(*SMALL, ONE_EPOCH, *change, run_dir=run))
        source, target = record["stages"]["source"], record["stages"]["target"]
        assert source["cached"] and source["fit_seconds"] == 0.0, change
        assert source["metrics"] == first["stages"]["source"]["metrics"]
        assert not (run / "checkpoints" / "source").exists()  # nothing was retrained
        assert not target["cached"] and target["fit_seconds"] > 0
    # forgetting is visible: the source task is tested again after the target stage
    before = first["stages"]["source"]["metrics"]["test/source/acc"]
    after = first["stages"]["target"]["metrics"]["test/source/acc"]
    assert first["metrics"]["test/source/acc"] == after != before


@pytest.mark.parametrize("freeze", [True, False])
def test_the_target_stage_keeps_the_sources_batch_norm_statistics_if_told(
    make_cfg, tmp_path, freeze: bool
):
    run = tmp_path / str(freeze)
    train(
        make_cfg("method=finetune", *SMALL, f"method.tuning.freeze_bn_stats={freeze}", run_dir=run)
    )

    def batch_norm(stage: str) -> dict[str, torch.Tensor]:
        weights = torch.load(run / "checkpoints" / stage / "last.ckpt", weights_only=False)
        return {k: v for k, v in weights["state_dict"].items() if ".bottleneck.1." in k}

    source, target = batch_norm("source"), batch_norm("target")
    assert source, "lenet's bottleneck has a batch-norm layer"
    for name in ("running_mean", "running_var"):
        key = f"model.backbone.blocks.bottleneck.1.{name}"
        assert torch.equal(source[key], target[key]) is freeze, key
    key = "model.backbone.blocks.bottleneck.1.weight"  # its scale trains either way
    assert not torch.equal(source[key], target[key])


def test_init_from_loads_a_run_dir_or_ckpt_instead_of_training(make_cfg, tmp_path):
    source_run = tmp_path / "source_only"
    trained = train(make_cfg("method=source_only", *SMALL, run_dir=source_run))
    best = source_run / "checkpoints" / "source" / "best.ckpt"
    for location in (source_run, best):
        record = train(
            make_cfg(
                "method=finetune",
                *SMALL,
                ONE_EPOCH,
                f"method.tuning.init_from={location}",
                run_dir=tmp_path / "f",
            )
        )
        source = record["stages"]["source"]
        assert source["fit_seconds"] == 0.0 and not source["cached"]
        assert source["best_checkpoint"] == str(best.resolve())
        assert source["metrics"]["test/source/acc"] == trained["metrics"]["test/source/acc"]
    with pytest.raises(ConfigError, match="no checkpoints/source/best.ckpt"):
        plan_stages(make_cfg("method=finetune", f"method.tuning.init_from={tmp_path}"))


def test_init_from_is_part_of_the_target_stage_key(make_cfg, tmp_path):
    first, second = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, first)
    torch.save({"state_dict": {"w": torch.ones(1)}}, second)
    keys = [
        plan_stages(make_cfg("method=finetune", f"method.tuning.init_from={path}"))[1].key
        for path in (first, second)
    ]
    assert keys[0] != keys[1]


def _model(make_cfg, target_classes: int, keep_head: bool, inherited=None) -> BackboneHead:
    """The fine-tuning target stage's model, built and then handed ``inherited``."""
    cfg = make_cfg("method=finetune")
    source = DomainInfo("s", tuple("0123456789"), (1, 28, 28))
    target = DomainInfo("t", tuple("abcdefghij"[:target_classes]), (1, 28, 28))
    model = BackboneHead(
        backbone=instantiate(cfg.backbone),
        head=instantiate(cfg.head),
        context=StageContext({"source": source, "target": target}, {"target": 3}),
        inherit_head="required" if keep_head else "never",
    )
    if inherited is not None:
        model.inherit(inherited)
    return model


def test_target_stage_inherits_the_backbone_and_keeps_or_renews_the_head(make_cfg):
    source = _model(make_cfg, 10, keep_head=True)
    parts = source.parts()
    kept = _model(make_cfg, 10, keep_head=True, inherited=parts)
    renewed = _model(make_cfg, 10, keep_head=False, inherited=parts)
    other_classes = _model(make_cfg, 4, keep_head=False, inherited=parts)
    for model in (kept, renewed, other_classes):
        for name, value in source.backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[name], value)
    assert torch.equal(kept.head.weight, source.head.weight) and kept.head_inherited
    assert not torch.equal(renewed.head.weight, source.head.weight)
    assert other_classes.head.out_features == 4 and not other_classes.head_inherited
    with pytest.raises(ConfigError, match="method.tuning.keep_head=false"):
        _model(make_cfg, 4, keep_head=True, inherited=parts)


def test_a_new_head_lifts_the_same_classes_requirement(make_cfg):
    kept, new = "method.tuning.keep_head=true", "method.tuning.keep_head=false"
    assert build_method(make_cfg("method=finetune", kept)).same_classes is True
    assert build_method(make_cfg("method=finetune", new)).same_classes is False


def test_fine_tuning_without_a_source_stage_is_refused(make_cfg):
    cfg = make_cfg("method=finetune")
    target_only_stage = build_method(cfg).stages[-1]
    method = Method("orphan", [target_only_stage])
    domains = build_domains(make_cfg("method=finetune", "source.num_train=300"))
    spec = plan_stages(cfg, method)[0]
    with pytest.raises(ConfigError, match="builds on a previous stage's model"):
        build_module(cfg, spec, domain_infos(domains), None)
