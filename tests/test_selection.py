"""Model selection reads only the labels a setting has: the rules, the held-out split of a
k-shot stage, and runs whose selected weights cannot depend on labels the setting lacks."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUICK

from tlframe.data.datamodule import TransferDataModule
from tlframe.data.labels import hold_out, k_per_class, method_setting
from tlframe.engine.selection import resolve_selection
from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stages
from tlframe.errors import ConfigError
from tlframe.train import build_domains, train

ADAPT = {"source": "all", "target": "none"}
FINETUNE = [{"source": "all"}, {"target": 10}]


def rule(choice: str, stage: dict, stages: list[dict] | None = None):
    return resolve_selection(choice, stage, method_setting(stages or [stage]))


def test_auto_keeps_the_final_weights_unless_every_target_label_is_there():
    assert rule("auto", ADAPT).metric == "step"  # adaptation
    assert rule("auto", {"target": 10}).metric == "step"  # k-shot: the few-shot protocol
    assert rule("auto", {"target": 1}).metric == "step"
    assert rule("auto", {"target": "all"}).metric == "val/target/acc"
    assert rule("auto", {"source": "all"}).metric == "val/source/acc"
    assert rule("auto", {"source": "all"}, FINETUNE).metric == "val/source/acc"
    assert rule("auto", {"target": 10}, FINETUNE).metric == "step"


def test_target_labels_the_setting_lacks_are_read_only_by_the_oracle_under_its_name():
    for stage, stages in ((ADAPT, None), ({"target": 10}, None), ({"source": "all"}, FINETUNE)):
        with pytest.raises(ConfigError, match="selection=target reads target validation labels"):
            rule("target", stage, stages)
        with pytest.raises(ConfigError, match="selection=oracle to do it knowingly"):
            rule("val/target/acc", stage, stages)
        oracle = rule("oracle", stage, stages)
        assert (oracle.metric, oracle.oracle) == ("val/target/oracle_acc", True)
        assert oracle.label == "val/target/oracle_acc (oracle)"
    full = rule("oracle", {"target": "all"})  # the setting has them: no oracle
    assert (full.metric, full.oracle) == ("val/target/acc", False)
    with pytest.raises(ConfigError, match="selection=source reads source validation labels"):
        rule("source", {"target": 10})  # target_only has no source labels


def test_holdout_selects_on_the_labels_each_stage_trains_on():
    assert rule("holdout", {"target": 10}, FINETUNE).metric == "val/target/holdout_acc"
    assert rule("holdout", {"source": "all"}, FINETUNE).metric == "val/source/acc"
    assert rule("holdout", {"target": "all"}).metric == "val/target/acc"
    with pytest.raises(ConfigError, match="data.target_labels=1; use selection=last"):
        rule("holdout", {"target": 1})
    with pytest.raises(ConfigError, match="selection=holdout needs labeled training examples"):
        rule("holdout", ADAPT)


def test_label_free_criteria_and_their_directions():
    assert (rule("im", ADAPT).metric, rule("im", ADAPT).mode) == ("val/target/im", "max")
    assert (rule("snd", ADAPT).metric, rule("snd", ADAPT).mode) == ("val/target/snd", "max")
    assert (rule("dev", ADAPT).metric, rule("dev", ADAPT).mode) == ("val/target/dev", "min")
    assert rule("val/target/entropy", ADAPT).mode == "min"
    with pytest.raises(ConfigError, match="unknown selection 'entropy'"):
        rule("entropy", ADAPT)  # fooled by a collapsed model: not a named rule


def test_hold_out_splits_each_class_of_the_k_drawn():
    labels = torch.arange(200) % 10
    drawn = k_per_class(labels, 6, seed=3)
    kept, held = hold_out(labels, drawn, 0.5, seed=3)
    assert torch.equal(torch.cat([kept, held]).sort().values, drawn)
    for cls in range(10):
        assert int((labels[kept] == cls).sum()) == 3 == int((labels[held] == cls).sum())
    assert torch.equal(hold_out(labels, drawn, 0.5, seed=3)[1], held)  # seeded
    assert not torch.equal(hold_out(labels, drawn, 0.5, seed=4)[1], held)
    two = k_per_class(labels, 2, seed=3)
    kept, held = hold_out(labels, two, 0.9, seed=3)  # at least one of each kind per class
    assert len(kept) == len(held) == 10


def test_the_held_out_examples_are_validated_not_trained_on(make_cfg):
    domains = build_domains(make_cfg("method=target_only", *QUICK))
    data = TransferDataModule(domains, {"target": 4}, batch_size=8, holdout_fraction=0.5)
    trained = data.labeled_train_split("target")
    (*_, held_loader) = data.val_dataloader()
    held = next(iter(held_loader))
    assert held["split"] == "holdout" and len(held["x"]) == 20 == len(trained)
    rows = {tuple(x.flatten().tolist()) for x in trained.inputs}
    assert not any(tuple(x.flatten().tolist()) in rows for x in held["x"])


K_SHOT = (
    "method=finetune",
    "data.target_labels=3",
    "source.num_train=300",
    "data.steps_per_epoch=3",
    "trainer.max_epochs=1",
    "method.tuning.epochs=5",
    "cache_stages=false",
)


def run_with_val_labels(make_cfg, tmp_path, name: str, corrupt: bool, *extra: str):
    """The k-shot run's target stage, with every target validation label shifted by one
    class when ``corrupt``."""
    cfg = make_cfg(*K_SHOT, *extra)
    domains = build_domains(cfg)
    if corrupt:
        val = domains["target"].val
        val.labels = (val.labels + 1) % 10
    return run_stages(cfg, domains, tmp_path / name)[-1]


def test_a_k_shot_run_selects_the_same_weights_whatever_the_validation_labels(make_cfg, tmp_path):
    clean = run_with_val_labels(make_cfg, tmp_path, "clean", corrupt=False)
    corrupted = run_with_val_labels(make_cfg, tmp_path, "corrupt", corrupt=True)
    weights, other = clean.module.state_dict(), corrupted.module.state_dict()
    assert all(torch.equal(weights[k], other[k]) for k in weights)
    assert clean.selected_step == corrupted.selected_step == 5 * 3  # the final weights
    honest = {k: v for k, v in clean.metrics.items() if "oracle" not in k}
    assert honest == {k: v for k, v in corrupted.metrics.items() if "oracle" not in k}
    assert clean.metrics["val/target/oracle_acc"] != corrupted.metrics["val/target/oracle_acc"]


def test_the_same_check_catches_an_oracle_selection(make_cfg, tmp_path):
    """The test above has the power to fail: selecting on the validation labels, the
    corrupted labels choose other weights."""
    clean = run_with_val_labels(make_cfg, tmp_path, "clean", False, "selection=oracle")
    corrupted = run_with_val_labels(make_cfg, tmp_path, "corrupt", True, "selection=oracle")
    assert clean.selected_step != corrupted.selected_step
    assert clean.metrics["test/target/acc"] != corrupted.metrics["test/target/acc"]


def test_holdout_selection_retrains_on_all_k_for_the_selected_steps(make_cfg, tmp_path):
    run = tmp_path / "run"
    record = train(make_cfg(*K_SHOT, "data.target_labels=4", "selection=holdout", run_dir=run))
    target = record["stages"]["target"]
    assert target["selection"] == "val/target/holdout_acc"
    assert 0.0 < record["metrics"]["val/target/holdout_acc"] <= 1.0
    step = target["selected_step"]
    assert step in {3 * e for e in range(1, 6)}
    retrained = torch.load(run / "checkpoints" / "target" / "best.ckpt", weights_only=True)
    assert retrained["global_step"] == step  # trained again, for exactly that many steps
    assert record["labels_read"] == {"source": "all", "target": "4 per class"}
    assert list((run / "tensorboard").glob("*/target_retrain"))  # its own curves
    without = train(
        make_cfg(
            *K_SHOT,
            "data.target_labels=4",
            "selection=holdout",
            "holdout.retrain=false",
            run_dir=tmp_path / "b",
        )
    )
    assert without["stages"]["target"]["selected_step"] == step  # same selection phase
    assert without["metrics"]["test/target/acc"] != record["metrics"]["test/target/acc"]


def test_the_progress_bar_never_shows_a_label_the_setting_lacks(make_cfg):
    cfg = make_cfg("method=dann", *QUICK, "source.num_train=300")
    domains = build_domains(cfg)
    spec = plan_stages(cfg)[0]
    module = build_module(cfg, spec, domain_infos(domains), None)
    data = TransferDataModule(domains, spec.train_on, batch_size=8, steps_per_epoch=2)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    shown = set(trainer.progress_bar_metrics)
    assert "val/source/acc" in shown and not any("oracle" in key for key in shown)
    assert "val/target/oracle_acc" in trainer.callback_metrics  # logged, under its name
