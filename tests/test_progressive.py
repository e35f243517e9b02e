"""Progressive networks: frozen earlier columns, laterals into every layer of a new one."""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK

from tlframe.engine.stages import run_stages
from tlframe.methods.progressive import ProgressiveNet
from tlframe.models.backbones import lenet, mlp
from tlframe.models.heads import linear
from tlframe.train import build_domains

SHAPE = (1, 28, 28)


def _chain(builder, columns: int) -> ProgressiveNet:
    net = ProgressiveNet()
    for k in range(columns):
        column = builder(input_shape=SHAPE)
        net.add_column(column, linear(column.out_features, 10), f"task{k}", SHAPE)
    return net


@pytest.mark.parametrize("builder", [lenet, mlp])
def test_laterals_from_every_earlier_column_into_every_layer_after_the_first(builder):
    net = _chain(builder, 3)
    levels = len(net.columns[0].blocks)  # blocks 2..L and the head each take a lateral
    assert len(net.laterals[0]) == 0
    for k in (1, 2):
        assert len(net.laterals[k]) == levels
        assert all(len(level) == k for level in net.laterals[k])
    net.train()
    net(torch.randn(4, *SHAPE)).sum().backward()
    for level in net.laterals[2]:  # every adapter of the newest column is used and trained
        for adapter in level:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    for module in net.frozen:
        assert not module.training
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())


def test_target_column_leaves_the_source_task_bit_identical(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, "method=progressive", "data.target_labels=5", "source.num_train=300")
    domains = build_domains(cfg)
    source, target = run_stages(cfg, domains, tmp_path / "run")
    x = domains["source"].test[list(range(256))][0]
    source.module.eval(), target.module.eval()
    with torch.no_grad():
        before = source.module.model.logits(x, "source")
        after = target.module.model.logits(x, "source")
    assert torch.equal(before, after)
    assert target.metrics["test/source/acc"] == source.metrics["test/source/acc"]
    net = target.module.model.net
    assert net.roles == ["source", "target"]
    frozen = [p for m in net.frozen for p in m.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)
    optimizer = target.module.trainer.optimizers[0]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in frozen}
    assert optimizer.state and not {id(p) for p in optimizer.state} & {id(p) for p in frozen}
    trained = {id(p) for p in net.columns[1].parameters()}
    assert trained <= in_optimizer
