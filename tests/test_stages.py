"""Stages: the entrypoint runs them in order, hands parts on, and caches finished ones."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from conftest import QUICK
from omegaconf import OmegaConf, open_dict

from tlframe.engine.cache import StageCache
from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stages
from tlframe.train import build_domains


def two_stage_cfg(make_cfg, *overrides):
    cfg = make_cfg(*QUICK, "source.num_train=300", "data.target_labels=3", *overrides)
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"_target_": "toy_methods.two_stages"})
    return cfg


def test_second_stage_receives_the_first_stages_trained_parts(make_cfg, tmp_path):
    cfg = two_stage_cfg(make_cfg)
    results = run_stages(cfg, build_domains(cfg), tmp_path / "run")
    assert [r.name for r in results] == ["pretrain", "adapt"]
    handed = results[1].module.model.inherited_state
    trained = results[0].module.model.backbone.state_dict()
    assert handed.keys() == trained.keys()
    assert all(torch.equal(handed[k], trained[k]) for k in trained)
    # the hand-over is not the initial weights of a new model (run_stage seeds them alike)
    infos, first = domain_infos(build_domains(cfg)), plan_stages(cfg)[0]
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    initial = build_module(cfg, first, infos, None).model.backbone
    assert any(not torch.equal(handed[k], v) for k, v in initial.state_dict().items())


def test_second_run_reuses_cached_stages_and_a_new_target_setting_only_the_first(
    make_cfg, tmp_path
):
    cfg = two_stage_cfg(make_cfg)
    first = run_stages(cfg, build_domains(cfg), tmp_path / "a")
    assert [r.cached for r in first] == [False, False]
    again = run_stages(cfg, build_domains(cfg), tmp_path / "b")
    assert [r.cached for r in again] == [True, True]
    assert again[1].metrics == first[1].metrics
    changed = two_stage_cfg(make_cfg, "data.target_labels=2")
    third = run_stages(changed, build_domains(changed), tmp_path / "c")
    assert [r.cached for r in third] == [True, False]


def test_a_truncated_cache_entry_is_rebuilt(make_cfg, tmp_path):
    cfg = two_stage_cfg(make_cfg)
    run_stages(cfg, build_domains(cfg), tmp_path / "a")
    cache = StageCache(cfg.paths.cache_dir)
    path = cache.path(plan_stages(cfg)[0].key)
    path.write_bytes(path.read_bytes()[:100])
    again = run_stages(cfg, build_domains(cfg), tmp_path / "b")
    assert [r.cached for r in again] == [False, True]
    assert cache.load(plan_stages(cfg)[0].key) is not None


def test_stage_keys_follow_content(make_cfg):
    keys = [s.key for s in plan_stages(two_stage_cfg(make_cfg))]
    # what only shows progress or feeds the loaders does not change what is learned
    display = ("trainer.log_every_n_steps=7", "data.eval_batch_size=64", "data.num_workers=1")
    assert keys == [s.key for s in plan_stages(two_stage_cfg(make_cfg, *display))]
    reseeded = [s.key for s in plan_stages(two_stage_cfg(make_cfg, "seed=1"))]
    assert reseeded[0] != keys[0] and reseeded[1] != keys[1]
    lr = [s.key for s in plan_stages(two_stage_cfg(make_cfg, "optimizer.lr=0.5"))]
    assert lr[0] != keys[0]


def test_a_stage_may_set_trainer_and_optimizer_arguments_the_global_config_lacks(make_cfg):
    cfg = make_cfg(
        "method=finetune",
        "++stages.target.trainer.val_check_interval=10",
        "++stages.target.optimizer.dampening=0.1",
    )
    source, target = plan_stages(cfg)
    assert target.trainer.val_check_interval == 10 and target.optimizer.dampening == 0.1
    assert "val_check_interval" not in source.trainer and "dampening" not in source.optimizer
    assert target.trainer.default_root_dir == cfg.trainer.default_root_dir  # still resolves
