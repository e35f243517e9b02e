"""Multitask learning: a head per task, each trained only by its own task's loss."""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK

from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stages
from tlframe.errors import ConfigError
from tlframe.train import build_domains


def _module(make_cfg, *overrides):
    cfg = make_cfg("method=multitask", "data.target_labels=5", *overrides)
    domains = build_domains(cfg)
    return build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None), domains


def _batch(domains, n=16):
    return {role: d.train[list(range(n))] for role, d in domains.items()}


@pytest.mark.parametrize(
    "overrides",
    [(), ("method.architecture=separate_input", "method.input_blocks=2")],
)
def test_each_head_receives_only_its_own_tasks_loss(make_cfg, overrides):
    module, domains = _module(make_cfg, *overrides)
    losses = module.losses(_batch(domains))
    losses["cls_source"].backward()
    for p in module.model.heads["target"].parameters():
        assert p.grad is None or not p.grad.any()
    assert any(
        p.grad is not None and p.grad.any() for p in module.model.heads["source"].parameters()
    )
    module.zero_grad(set_to_none=True)
    module.losses(_batch(domains))["cls_target"].backward()
    for p in module.model.heads["source"].parameters():
        assert p.grad is None or not p.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in module.model.shared.parameters())


def test_separate_input_reads_domains_of_different_shapes(make_cfg):
    module, domains = _module(
        make_cfg,
        "method.architecture=separate_input",
        "target=hand_digits_color",
        "source.channels=1",
    )
    assert domains["source"].input_shape[0] == 1 and domains["target"].input_shape[0] == 3
    batch = _batch(domains, 4)
    for role in ("source", "target"):
        assert module.model.logits(batch[role][0], role).shape == (4, 10)
    first = {
        role: next(module.model.inputs[role].parameters()).shape[1] for role in ("source", "target")
    }
    assert first == {"source": 1, "target": 3}  # task-specific input layers


def test_shared_input_refuses_different_shapes(make_cfg):
    with pytest.raises(ConfigError, match="separate_input"):
        _module(make_cfg, "target=hand_digits_color", "source.channels=1")


def test_target_share_sets_the_examples_per_task(make_cfg):
    module, _ = _module(make_cfg, "method.target_share=0.25")
    assert module.objectives.cls.examples_per_task({"source": 128, "target": 128}) == {
        "source": 128,
        "target": 43,
    }


def test_separate_input_run_reports_each_task_by_its_own_head(make_cfg, tmp_path):
    """Each domain's test figure is the accuracy of its own input layers and head,
    recomputed here; the other task's head scores it differently."""
    cfg = make_cfg(
        *QUICK,
        "method=multitask",
        "method.architecture=separate_input",
        "target=hand_digits_color",
        "data.target_labels=5",
        "source.num_train=300",
    )
    domains = build_domains(cfg)
    (joint,) = run_stages(cfg, domains, tmp_path / "run")
    module = joint.module.model.eval()

    def accuracy(role: str, head: str) -> float:
        split = domains[role].test
        with torch.no_grad():
            logits = module.heads[head](module.shared(module.inputs[role](split.inputs)))
        return (logits.argmax(1) == split.labels).float().mean().item()

    for role, other in (("source", "target"), ("target", "source")):
        assert joint.metrics[f"test/{role}/acc"] == pytest.approx(accuracy(role, role), abs=1e-6)
        assert accuracy(role, other) != pytest.approx(accuracy(role, role), abs=1e-6)
