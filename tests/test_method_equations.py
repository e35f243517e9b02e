"""Each method's defining equation, checked on small tensors against an independent
computation: a wrong estimator, sign, weight or reduction fails these."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tlframe.methods.afn import stepwise_norm_loss
from tlframe.methods.bsp import spectral_penalty
from tlframe.methods.bss import spectral_shrinkage
from tlframe.methods.cdan import MultilinearMap
from tlframe.methods.clustering import cluster_accuracy
from tlframe.methods.co_tuning import category_relationship, soft_cross_entropy
from tlframe.methods.coclustering import self_taught_clustering
from tlframe.methods.delta import channel_attention, map_distance, measure_attention
from tlframe.methods.mcd import classifier_discrepancy
from tlframe.methods.mdd import margin_disparity
from tlframe.methods.progressive import NonLinearLateral, ProgressiveNet
from tlframe.methods.shot import cluster_labels, information_loss
from tlframe.models.backbones import mlp
from tlframe.models.heads import linear
from tlframe.models.kernels import joint_mmd, multi_kernel_mmd


def gaussian(a: torch.Tensor, b: torch.Tensor, variance: float) -> float:
    return math.exp(-float((a - b).pow(2).sum()) / (2 * variance))


def test_linear_time_mmd_is_the_mean_over_disjoint_quads():
    x, y = torch.randn(4, 3), torch.randn(4, 3) + 1
    z = torch.cat([x, y])
    scale = float(torch.cdist(z, z).pow(2).mean())
    multipliers = (0.5, 2.0)

    def k(a, b):
        return sum(gaussian(a, b, m * scale) for m in multipliers)

    quads = [
        k(x[i], x[i + 1]) + k(y[i], y[i + 1]) - k(x[i], y[i + 1]) - k(x[i + 1], y[i])
        for i in (0, 2)
    ]
    value = multi_kernel_mmd(x, y, multipliers, "linear")
    assert value.item() == pytest.approx(sum(quads) / 2, rel=1e-5)


def test_quadratic_mmd_averages_all_pairs_with_the_diagonal():
    x, y = torch.randn(3, 2), torch.randn(3, 2)
    z = torch.cat([x, y])
    scale = float(torch.cdist(z, z).pow(2).mean())

    def mean_k(a, b):
        return np.mean([gaussian(p, q, scale) for p in a for q in b])

    expected = mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)
    assert multi_kernel_mmd(x, y, (1.0,), "quadratic").item() == pytest.approx(expected, rel=1e-5)


def test_joint_mmd_multiplies_the_layers_kernels():
    f_s, f_t = torch.randn(2, 3), torch.randn(2, 3)
    g_s, g_t = torch.randn(2, 4).softmax(1), torch.randn(2, 4).softmax(1)
    z = torch.cat([f_s, f_t])
    scale = float(torch.cdist(z, z).pow(2).mean())

    def k(i, j):  # rows of the stacked [source; target] pairs
        f, g = torch.cat([f_s, f_t]), torch.cat([g_s, g_t])
        return gaussian(f[i], f[j], scale) * gaussian(g[i], g[j], 0.92**2)

    expected = k(0, 1) + k(2, 3) - k(0, 3) - k(1, 2)
    value = joint_mmd((f_s, g_s), (f_t, g_t), ((1.0,), 0.92), "linear")
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_cdan_randomizes_wide_maps_into_1024_dimensions():
    f, g = torch.randn(5, 300), torch.randn(5, 20).softmax(1)
    joint = MultilinearMap(300, 20)  # 6000 > 4096
    assert joint.randomized and joint.out_features == 1024
    expected = (f @ joint.r_f) * (g @ joint.r_g) / math.sqrt(1024)
    assert torch.allclose(joint(f, g), expected)
    assert not MultilinearMap(256, 10).randomized  # 2560: the full outer product


def test_margin_disparity_by_hand():
    logits_s = torch.tensor([[2.0, 0.0]])  # f labels the source example 0
    logits_t = torch.tensor([[0.0, 3.0]])  # and the target example 1
    adversarial_s, adversarial_t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    ce = -math.log(math.exp(0) / (math.exp(0) + math.exp(1)))
    agree = math.exp(0) / (math.exp(1) + math.exp(0))  # f' on the target's f-label 1
    expected = 4.0 * ce - math.log(1 - agree)
    value = margin_disparity(logits_s, adversarial_s, logits_t, adversarial_t, 4.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_mcd_discrepancy_is_the_mean_absolute_probability_difference():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    # p1 = (0.5, 0.5), p2 = (0.75, 0.25): mean |difference| = 0.25
    assert classifier_discrepancy(a, b).item() == pytest.approx(0.25)


def test_mcd_heads_ascend_and_features_descend_the_discrepancy(make_cfg):
    from tlframe.engine.context import DomainInfo
    from tlframe.engine.stages import build_module, plan_stages

    digits = tuple(str(d) for d in range(10))
    infos = {r: DomainInfo(r, digits, (1, 28, 28)) for r in ("source", "target")}
    cfg = make_cfg("method=mcd")
    module = build_module(cfg, plan_stages(cfg)[0], infos, None)
    module.eval()  # no dropout: the gradient and the check see one function
    x = torch.randn(8, 1, 28, 28)
    batch = {"source": (x, torch.arange(8) % 10), "target": (x.flip(0), None)}
    module.losses(batch)["discrepancy"].backward()
    heads = [module.model.head, module.objectives["discrepancy"].second_head]
    backbone = module.model.backbone

    def discrepancy_after(step_heads: bool) -> float:
        saved = {id(p): p.detach().clone() for m in (*heads, backbone) for p in m.parameters()}
        with torch.no_grad():
            for m in heads if step_heads else [backbone]:
                for p in m.parameters():
                    if p.grad is not None:
                        p -= 1e-2 * p.grad  # descend the loss term -d (heads) / reversed (G)
            f = backbone(x.flip(0))
            value = classifier_discrepancy(heads[0](f), heads[1](f)).item()
            for m in (*heads, backbone):
                for p in m.parameters():
                    p.copy_(saved[id(p)])
        return value

    with torch.no_grad():
        f = backbone(x.flip(0))
        before = classifier_discrepancy(heads[0](f), heads[1](f)).item()
    assert discrepancy_after(step_heads=True) > before
    assert discrepancy_after(step_heads=False) < before


def test_spectral_penalty_and_shrinkage_take_the_largest_and_smallest_singular_values():
    features = torch.randn(16, 6)
    singular = np.linalg.svd(features.numpy(), compute_uv=False)
    assert spectral_penalty(features, 2).item() == pytest.approx(
        float((singular[:2] ** 2).sum()), rel=1e-4
    )
    assert spectral_shrinkage(features, 1).item() == pytest.approx(
        float(singular[-1] ** 2), rel=1e-4
    )


def test_stepwise_feature_norm_pushes_each_norm_up_by_delta():
    features = torch.tensor([[3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    loss = stepwise_norm_loss(features, 1.0)
    assert loss.item() == pytest.approx(1.0)  # (|h| - (|h| + 1))^2 = 1 for every example
    loss.backward()
    # d/dh of the mean of (|h| - c)^2 with c = |h| + 1 fixed: -2 * 1 * h / |h| / n
    expected = torch.tensor([[-0.6, -0.8], [0.0, -1.0]])
    assert torch.allclose(features.grad, expected)


def test_information_loss_is_entropy_minus_diversity():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    p = torch.softmax(logits, 1)
    entropy = -(p * p.log()).sum(1).mean()
    mean = p.mean(0)
    expected = entropy + (mean * mean.log()).sum()
    assert information_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)
    collapsed = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # confident but not diverse: worse
    assert information_loss(collapsed) > information_loss(logits)


def test_shot_pseudo_labels_follow_the_feature_clusters_not_the_predictions():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    # the classifier gets example 1 wrong; its centroid neighbourhood is class 0's
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    assert cluster_labels(features, probs).tolist() == [0, 0, 1, 1]
    # a class the model predicts for no example gets no pseudo-label, however near
    three = torch.cat([probs, torch.zeros(4, 1)], dim=1)
    three[1] = torch.tensor([0.35, 0.4, 0.25])
    assert 2 not in cluster_labels(features, three).tolist()


def test_delta_distance_weighs_channels_by_attention():
    student, teacher = torch.zeros(2, 2, 1, 2), torch.zeros(2, 2, 1, 2)
    student[:, 0] = 1.0  # channel 0 differs by 1 at both positions, channel 1 not at all
    attention = torch.tensor([0.5, 1.5])
    assert map_distance(student, teacher, attention).item() == pytest.approx(0.5)
    weights = channel_attention(torch.tensor([1.0, 1.0, 3.0]), base=1.0)
    assert weights.sum().item() == pytest.approx(3.0) and weights.argmax().item() == 2


def test_delta_attention_ranks_the_channel_the_task_reads_first():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    x = torch.randn(200, 1, 1, 1)
    y = (x.flatten() > 0).long()
    blocks = nn.Sequential(conv, nn.Flatten())
    with torch.no_grad():  # channel 1 is always zero: removing it costs nothing
        conv.weight[1] = 0.0
    attention = measure_attention(blocks, x, y, [0])[0]
    assert attention[0] > attention[1]


def test_co_tuning_relationship_is_the_mean_source_distribution_per_target_class():
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1])
    relationship = category_relationship(probs, labels, 3)
    assert torch.allclose(relationship[0], torch.tensor([0.7, 0.3]))
    assert torch.allclose(relationship[1], torch.tensor([0.1, 0.9]))
    assert torch.allclose(relationship[2], torch.tensor([0.5, 0.5]))  # no examples: uniform
    logits = torch.tensor([[0.0, 0.0]])
    assert soft_cross_entropy(logits, relationship[:1]).item() == pytest.approx(math.log(2))


def test_progressive_lateral_enters_the_pre_activation_through_alpha_v_and_u():
    torch.manual_seed(0)
    net = ProgressiveNet("adapter")
    shape = (6,)
    for k in range(2):
        column = mlp(input_shape=shape, hidden_dims=(5, 4), dropout=0.0, batch_norm=False)
        net.add_column(column, linear(column.out_features, 3), f"task{k}", shape)
    net.eval()
    x = torch.randn(2, *shape)
    first, second = net.columns[0].blocks, net.columns[1].blocks
    h1 = first[0](x)  # column 1, layer 1
    lateral = net.laterals[1][0][0]
    assert isinstance(lateral, NonLinearLateral)
    w = second[1][0]  # the Linear of column 2's second layer
    u = lateral.to_layer[-1]
    v = lateral.project
    expected_pre = w(second[0](x)) + u(torch.relu(v(lateral.alpha * h1)))
    h2 = torch.relu(expected_pre)
    head_lateral = net.laterals[1][1][0]
    h1_top = first[1](h1)
    expected = net.heads[1](h2) + head_lateral.to_layer[-1](
        torch.relu(head_lateral.project(head_lateral.alpha * h1_top))
    )
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_self_taught_clustering_recovers_planted_co_clusters():
    rng = np.random.default_rng(0)

    # 4 example clusters, each using its own group of 5 of the 20 features
    def block_data(n_per: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(4), n_per)
        data = rng.random((len(labels), 20)) * 0.2
        for c in range(4):
            data[labels == c, c * 5 : (c + 1) * 5] += 1.0
        return data, labels

    target, labels = block_data(6)
    auxiliary, _ = block_data(100)
    clusters = self_taught_clustering(target, auxiliary, 4, 4, 4, trade_off=1.0, seed=0)
    assert cluster_accuracy(labels, clusters) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        self_taught_clustering(target - 1, auxiliary, 4, 4, 4)
