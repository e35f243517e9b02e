"""Domain adaptation: gradient reversal, schedules, the three alignment methods, selection."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import QUICK

from tlframe.engine.callbacks.feature_space import proxy_a_distance
from tlframe.engine.stages import run_stages
from tlframe.methods.cdan import MultilinearMap, entropy_weights
from tlframe.models.kernels import multi_kernel_mmd
from tlframe.models.layers import GradientReversal
from tlframe.models.schedules import dann_lambda, inverse_decay
from tlframe.train import build_domains, train

ADAPTATION = ("dann", "dan", "cdan")


def test_gradient_reversal_negates_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    layer = GradientReversal(coefficient=0.3)
    out = layer(x)
    assert torch.equal(out, x)
    upstream = torch.randn(5, 3)
    out.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream)


def test_dann_lambda_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert 0.98 < dann_lambda(0.5) < dann_lambda(1.0) < 1.0


def _learning_rates(scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("total_steps", [1000, 5000])
def test_inverse_decay_is_per_step_whatever_the_run_length(total_steps):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    rates = _learning_rates(inverse_decay(optimizer, total_steps=total_steps), 1001)
    for step in (0, 500, 1000):  # the digit recipe: 0.01 (1 + 0.001 i)^-0.75
        assert rates[step] == pytest.approx(0.01 * (1 + 0.001 * step) ** -0.75)


def test_inverse_decay_without_horizon_spans_the_run():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    scheduler = inverse_decay(optimizer, total_steps=100, horizon_steps=None)
    rates = _learning_rates(scheduler, 101)
    assert rates[50] == pytest.approx(0.01 * 6**-0.75)  # p = 0.5: (1 + 10 p)^-0.75
    assert rates[100] == pytest.approx(0.01 * 11**-0.75)


def test_mmd_of_two_points_by_hand_and_growing_with_shift():
    """x = 0, y = 1: squared distances 0, 1, 1, 0 have mean 0.5, so with sigma^2 = 0.5 m
    each kernel term is exp(-1 / (2 * 0.5 m)) and MMD^2 = 1 + 1 - 2 * that, summed over
    the multipliers m (the all-pairs estimate: one pair has no linear-time quad)."""
    multipliers = (0.125, 0.25, 0.5, 1, 2)
    by_hand = sum(2 - 2 * math.exp(-1 / m) for m in multipliers)
    value = multi_kernel_mmd(torch.zeros(1, 1), torch.ones(1, 1), estimator="quadratic")
    assert value.item() == pytest.approx(by_hand)
    x = torch.randn(256, 8)
    near, far = multi_kernel_mmd(x, x + 0.5), multi_kernel_mmd(x, x + 3.0)
    assert 0 < near < far


def test_cdan_multilinear_map_and_entropy_weights():
    f, g = torch.randn(4, 6), torch.softmax(torch.randn(4, 3), dim=1)
    full = MultilinearMap(6, 3)
    assert full(f, g).shape == (4, 18)
    assert torch.allclose(full(f, g)[0].view(3, 6), torch.outer(g[0], f[0]))
    assert MultilinearMap(6, 3, max_joint_dim=8, randomized_dim=5)(f, g).shape == (4, 5)
    confident = torch.tensor([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3]])
    weights = entropy_weights(confident)
    assert weights.sum() == pytest.approx(2.0) and weights[0] > weights[1]


def test_dann_never_reads_target_labels(make_cfg, tmp_path):
    """Corrupting every target label leaves the trained model bit-identical."""
    cfg = make_cfg("method=dann", *QUICK, "source.num_train=300", "cache_stages=false")
    domains = build_domains(cfg)
    clean = run_stages(cfg, domains, tmp_path / "clean")[0].module.state_dict()
    train_split = domains["target"].train
    train_split.labels = (train_split.labels + 3) % 10
    corrupted = run_stages(cfg, domains, tmp_path / "corrupt")[0].module.state_dict()
    assert clean.keys() == corrupted.keys()
    assert all(torch.equal(clean[k], corrupted[k]) for k in clean)


@pytest.mark.parametrize("method", ADAPTATION)
def test_short_adaptation_run_learns(make_cfg, method: str):
    record = train(
        make_cfg(
            f"method={method}",
            "data.steps_per_epoch=40",
            "trainer.max_epochs=3",
            "source.num_train=3000",
            "cache_stages=false",
        )
    )
    metrics = record["metrics"]
    assert record["selection"] == "step"  # selection=auto keeps the final weights
    assert metrics["test/source/acc"] > 0.8
    assert metrics["test/target/acc"] > 0.3  # chance is 0.1


def test_oracle_selection_is_labelled_in_outputs(make_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    train(make_cfg("method=dann", *QUICK, "source.num_train=300", "selection=oracle", run_dir=run))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["selection"] == "val/target/oracle_acc (oracle)"
    assert saved["stages"]["adapt"]["selection"] == "val/target/oracle_acc (oracle)"
    assert saved["labels_read"] == {
        "source": "all",
        "target": "none + validation labels (oracle)",
    }
    assert "val/target/acc" not in saved["metrics"]  # only under its oracle name
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if "val/target/oracle_acc" in x)
    assert "(oracle: reads labels this setting lacks)" in line
    assert "labels read: source all, target none + validation labels (oracle)" in printed


def test_feature_space_picture_and_a_distance_are_written(make_cfg, tmp_path):
    """The picture is written, and the A-distance is that of the stage's own backbone on
    100 evenly spaced test examples of each domain."""
    run = tmp_path / "run"
    cfg = make_cfg("method=dann", *QUICK, "source.num_train=300", run_dir=run)
    cfg.callbacks.feature_space.tsne = True
    cfg.callbacks.feature_space.max_points = 100
    domains = build_domains(cfg)
    (adapt,) = run_stages(cfg, domains, run)
    assert (run / "feature_space_adapt.png").stat().st_size > 10_000
    features = {}
    backbone = adapt.module.model.backbone.eval()
    with torch.no_grad():
        for role in ("source", "target"):
            split = domains[role].test
            chosen = torch.linspace(0, len(split) - 1, 100).long()
            features[role] = backbone(split.inputs[chosen]).flatten(1).numpy()
    expected = proxy_a_distance(features["source"], features["target"])
    assert adapt.metrics["test/target/a_distance"] == pytest.approx(expected, abs=1e-6)


def test_auto_selection_of_an_adaptation_stage_keeps_the_final_epoch(make_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg(
        "method=dann", *QUICK, "trainer.max_epochs=3", "source.num_train=300", run_dir=run
    )
    train(cfg)
    best = torch.load(run / "checkpoints" / "adapt" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 2 and best["global_step"] == 3 * 4
