"""Conservative training: LwF distils towards the frozen source model, L2-SP pulls the
weights towards their source values."""

from __future__ import annotations

import pytest
import torch

from tlframe.engine.context import DomainInfo
from tlframe.engine.stages import build_module, plan_stages
from tlframe.errors import ConfigError
from tlframe.methods.lwf import distillation_loss

DIGITS = tuple(str(d) for d in range(10))
INFOS = {
    "source": DomainInfo("synth_digits", DIGITS, (1, 28, 28)),
    "target": DomainInfo("hand_digits", DIGITS, (1, 28, 28)),
}


def source_and_target(make_cfg, method: str, *overrides: str):
    """The two stage modules of ``method``, the second built on the first (untrained)."""
    cfg = make_cfg(f"method={method}", "data.target_labels=3", *overrides)
    source_spec, target_spec = plan_stages(cfg)
    source = build_module(cfg, source_spec, INFOS, None).eval()
    return source, build_module(cfg, target_spec, INFOS, source.parts())


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=generator), torch.arange(n) % 10


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_steps(module, steps: int = 3) -> None:
    optimizer = torch.optim.SGD(module.trainable_parameters(), lr=0.1)
    module.train()
    for step in range(steps):
        losses = module.losses({"target": batch(seed=step)})
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("keep_head", [True, False])
def test_lwf_targets_come_from_the_frozen_source_model(make_cfg, keep_head: bool):
    source, module = source_and_target(make_cfg, "lwf", f"method.tuning.keep_head={keep_head}")
    x, y = batch()
    with torch.no_grad():
        reference = source(x)
    assert torch.equal(module.objectives.lwf.teacher(x), reference)
    assert not any(p.requires_grad for p in module.objectives.lwf.teacher.parameters())
    trainable = module.trainable_parameters()
    assert not {id(p) for p in module.objectives.lwf.teacher.parameters()} & {
        id(p) for p in trainable
    }
    module.eval()  # before training, the new model reproduces the source model
    assert module.losses({"target": (x, y)})["lwf"].item() == pytest.approx(0, abs=1e-6)

    frozen_before, source_before = snapshot(module.objectives.lwf.teacher), snapshot(source)
    train_steps(module)
    assert module.objectives.lwf.teacher.model.training is False  # kept in eval mode (no dropout)
    for name, value in snapshot(module.objectives.lwf.teacher).items():
        assert torch.equal(value, frozen_before[name]), name
    for name, value in snapshot(source).items():  # the source stage's model is untouched
        assert torch.equal(value, source_before[name]), name
    assert torch.equal(module.objectives.lwf.teacher(x), reference)

    module.eval()
    features = module.model.backbone(x)
    source_task = module.model.task_heads.source  # LwF's old-task head, whichever target head
    with torch.no_grad():
        loss = module.losses({"target": (x, y)})["lwf"]
        expected = distillation_loss(
            source_task(features), reference, module.objectives.lwf.temperature
        )
    assert loss.item() > 1e-4  # training moved the new model away from the source model
    assert loss.item() == pytest.approx(module.objectives.lwf.weight * expected.item(), rel=1e-5)


def test_lwf_answers_the_source_with_its_old_task_head_and_the_target_with_the_new(make_cfg):
    _, module = source_and_target(make_cfg, "lwf")
    x, y = batch()
    train_steps(module)  # the two heads, equal at the start, now differ
    module.eval()
    assert not torch.equal(module.model.head.weight, module.model.task_heads.source.weight)
    with torch.no_grad():
        features = module.model.backbone(x)
        assert torch.equal(
            module.model.logits(x, "source"), module.model.task_heads.source(features)
        )
        assert torch.equal(module.model.logits(x, "target"), module.model.head(features))
        losses = module.losses({"target": (x, y)})
    expected = torch.nn.functional.cross_entropy(module.model.head(features), y)
    assert losses["cls_target"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("student_mode", ["eval", "train"])
def test_lwf_distils_the_students_eval_mode_outputs_unless_told_otherwise(make_cfg, student_mode):
    _, module = source_and_target(
        make_cfg, "lwf", f"method.distillation.student_mode={student_mode}"
    )
    module.train()  # dropout is on while the module trains, off in the teacher
    loss = module.losses({"target": batch()})["lwf"].item()
    if student_mode == "eval":  # like with like: at the source weights nothing to distil
        assert loss == pytest.approx(0, abs=1e-5)
        assert (
            module.model.backbone.training and module.model.task_heads.source.training
        )  # mode restored
    else:  # the training pass's dropout noise is a difference the distillation would fit
        assert loss > 1e-3, loss


def test_lwf_rejects_an_unknown_student_mode(make_cfg):
    with pytest.raises(ConfigError, match="method.distillation.student_mode='test' is not a mode"):
        source_and_target(make_cfg, "lwf", "method.distillation.student_mode=test")


def test_distillation_loss_is_zero_only_for_the_teachers_outputs():
    logits = torch.randn(8, 10)
    assert distillation_loss(logits, logits, 2.0).item() == pytest.approx(0, abs=1e-7)
    assert distillation_loss(logits + torch.randn(8, 10), logits, 2.0).item() > 0


def test_l2sp_penalty_is_zero_at_the_source_weights_and_grows_with_distance(make_cfg):
    _, module = source_and_target(make_cfg, "l2sp")
    assert module.objectives.l2sp.penalties(module.model)["l2sp"].item() == 0.0
    assert "l2_head" not in module.objectives.l2sp.penalties(
        module.model
    )  # the head is kept: it is pulled to its start
    weight = next(module.model.backbone.parameters())
    start = weight.detach().clone()
    values = []
    for distance in (0.01, 0.02, 0.04):
        with torch.no_grad():
            weight.copy_(start + distance)
        values.append(module.objectives.l2sp.penalties(module.model)["l2sp"].item())
        expected = module.objectives.l2sp.alpha / 2 * distance**2 * weight.numel()
        assert values[-1] == pytest.approx(expected, rel=1e-3)
    assert values == sorted(values) and values[0] > 0
    with torch.no_grad():  # the head counts too when it is inherited
        module.model.head.weight.add_(0.01)
    assert module.objectives.l2sp.penalties(module.model)["l2sp"].item() > values[-1]
    assert module.objectives.l2sp.penalties(module.model)["l2sp"].requires_grad


def test_l2sp_puts_plain_l2_on_a_new_head_and_no_weight_decay(make_cfg):
    _, module = source_and_target(make_cfg, "l2sp", "method.tuning.keep_head=false")
    terms = module.objectives.l2sp.penalties(module.model)
    assert terms["l2sp"].item() == 0.0
    squared = sum((w.detach() ** 2).sum() for w in module.model.head.parameters())
    assert terms["l2_head"].item() == pytest.approx(
        module.objectives.l2sp.beta / 2 * squared.item(), rel=1e-5
    )
    assert plan_stages(make_cfg("method=l2sp"))[1].optimizer.weight_decay == 0.0
    before = snapshot(module.objectives.l2sp.starting_point)
    train_steps(module)
    assert module.objectives.l2sp.penalties(module.model)["l2sp"].item() > 0
    for name, value in snapshot(module.objectives.l2sp.starting_point).items():
        assert torch.equal(value, before[name]), name
