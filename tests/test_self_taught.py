"""Self-taught learning and clustering: letters as unlabeled data of other classes, a
label-free pretraining stage, frozen or fine-tuned features, k-means scored by Hungarian
matching and NMI."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import QUICK

from tlframe.data.synthetic.fonts import DIGIT_FONTS, render_glyphs
from tlframe.data.synthetic.synth_letters import LETTERS, synth_letters
from tlframe.engine.stages import build_module, domain_infos, plan_stages, run_stages
from tlframe.errors import ConfigError
from tlframe.methods.clustering import cluster_accuracy
from tlframe.methods.pretext import Autoencoder, Contrastive, Pretext, Rotation, nt_xent
from tlframe.models.augment import Augment
from tlframe.models.backbones import lenet
from tlframe.train import build_domains, train

SMALL = ["source=synth_letters", "source.num_train=300", "source.num_val=100"]
SMALL += ["source.num_test=100", "callbacks.feature_space=null"]


def test_every_font_renders_26_distinct_capitals() -> None:
    glyphs = render_glyphs(LETTERS, DIGIT_FONTS, size=32)
    for font, letters in zip(DIGIT_FONTS, glyphs, strict=True):
        assert (letters.flatten(1).amax(dim=1) > 0.5).all(), font
        distances = torch.cdist(letters.flatten(1), letters.flatten(1))
        assert distances[~torch.eye(26, dtype=torch.bool)].min() > 1.0, font


def test_synth_letters_has_26_balanced_classes(tmp_path) -> None:
    domain = synth_letters(str(tmp_path), num_train=260, num_val=52, num_test=52)
    assert domain.class_names == list(LETTERS)
    assert domain.train.inputs.shape == (260, 1, 28, 28)
    assert torch.equal(torch.bincount(domain.train.labels), torch.full((26,), 10))


@pytest.mark.parametrize("objective", ["contrastive", "rotation"])
def test_pretrain_stage_never_receives_source_labels(make_cfg, monkeypatch, objective) -> None:
    seen = []
    original = Pretext.forward

    def spy(self, out, progress):
        seen.extend((role, out.y(role)) for role in out.roles)
        return original(self, out, progress)

    monkeypatch.setattr(Pretext, "forward", spy)
    record = train(
        make_cfg(
            "method=self_taught",
            f"method/pretext={objective}",
            "data.target_labels=2",
            *QUICK,
            *SMALL,
        )
    )
    assert len(seen) == 4  # QUICK: 4 steps
    assert all(role == "source" and y is None for role, y in seen)
    assert record["stages"]["pretrain"]["selection"] == "val/source/loss"
    assert record["labels_read"] == {"source": "none", "target": "2 per class"}


def test_a_pretext_task_refuses_a_labeled_batch(make_cfg) -> None:
    """The data module hands a label-free stage no labels; the objective checks it."""
    cfg = make_cfg("method=self_taught", "data.target_labels=2", *SMALL)
    domains = build_domains(cfg)
    pretrain = plan_stages(cfg)[0]
    module = build_module(cfg, pretrain, domain_infos(domains), None)
    x, y = domains["source"].train[list(range(4))]
    with pytest.raises(RuntimeError, match="source labels reached the label-free stage"):
        module.losses({"source": (x, y)})
    assert set(module.losses({"source": (x, None)})) == {"contrastive_source"}


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("finetune", [False, True])
def test_frozen_extractor_is_unchanged_by_the_target_stage(make_cfg, finetune: bool) -> None:
    cfg = make_cfg(
        "method=self_taught",
        "method/pretext=autoencoder",
        f"method.finetune={finetune}",
        "data.target_labels=2",
        *QUICK,
        *SMALL,
    )
    pretrain, target = run_stages(cfg, build_domains(cfg), Path(cfg.paths.output_dir))
    before, after = state(pretrain.module.model.backbone), state(target.module.model.backbone)
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged != finetune  # frozen: bit-identical (BN buffers too); fine-tuned: moved
    assert "head" not in pretrain.module.parts()


def test_head_on_the_first_blocks_sees_their_frozen_copies(make_cfg) -> None:
    cfg = make_cfg(
        "method=self_taught",
        "method/pretext=rotation",
        "method.feature_blocks=2",
        "data.target_labels=2",
        *QUICK,
        *SMALL,
    )
    pretrain, target = run_stages(cfg, build_domains(cfg), Path(cfg.paths.output_dir))
    blocks = target.module.model.backbone.blocks
    assert list(blocks._modules) == ["conv1", "conv2", "flatten"]
    assert target.module.model.head.in_features == 50 * 4 * 4  # lenet's conv2 output on 28 x 28
    before = state(pretrain.module.model.backbone.blocks[:2])
    after = state(blocks[:2])
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # copied, then frozen


def test_feature_blocks_beyond_the_backbone_is_a_config_error(make_cfg) -> None:
    cfg = make_cfg(
        "method=self_taught", "method.feature_blocks=9", "data.target_labels=2", *QUICK, *SMALL
    )
    with pytest.raises(ConfigError, match="feature_blocks must be null"):
        run_stages(cfg, build_domains(cfg), Path(cfg.paths.output_dir))


def test_cluster_accuracy_matches_a_hand_computed_example() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    # Best map: cluster 1 -> class 0 (2 right), 0 -> 1 (1 right), 2 -> 2 (2 right): 5/6.
    assert cluster_accuracy(labels, np.array([1, 1, 0, 2, 2, 2])) == pytest.approx(5 / 6)
    assert cluster_accuracy(labels, np.array([2, 2, 0, 0, 1, 1])) == 1.0  # names don't matter
    # One cluster holds everything: only one class can be matched to it.
    assert cluster_accuracy(labels, np.zeros(6, dtype=int)) == pytest.approx(2 / 6)


def test_clustering_methods_report_cluster_accuracy_and_nmi(make_cfg) -> None:
    record = train(make_cfg("method=self_taught_clustering", *QUICK, *SMALL))
    assert list(record["stages"]) == ["pretrain", "cluster"]
    raw = train(
        make_cfg("method=kmeans", "backbone=mlp", "backbone.hidden_dims=[]", *SMALL),
    )
    # Any clustering of 10 balanced classes scores >= 0.1 under the best one-to-one map, a
    # random partition of the 360 test images about 0.18 (NMI about 0.05): both must beat it.
    for metrics in (record["metrics"], raw["metrics"]):
        assert metrics["test/target/cluster_acc"] > 0.3
        assert metrics["test/target/nmi"] > 0.15
    assert raw["metrics"]["test/target/cluster_acc"] > 0.5  # raw pixels of digits cluster


def test_nt_xent_prefers_views_that_find_each_other() -> None:
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.manual_seed(0)), dim=1)
    matched = nt_xent(torch.cat([z, z]), temperature=0.2)
    shuffled = nt_xent(torch.cat([z, z.roll(1, dims=0)]), temperature=0.2)
    assert matched < shuffled


def test_augment_is_batched_seeded_and_changes_images() -> None:
    x = torch.randn(6, 3, 28, 28)
    a = Augment()(x, torch.Generator().manual_seed(0))
    b = Augment()(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)


def pretext(cls: type, width: int, input_shape: tuple[int, ...]) -> Pretext:
    """A pretext task built as a stage builds it, for a model of ``width`` features."""
    task = SimpleNamespace(input_shape=input_shape)
    return cls(model=SimpleNamespace(out_features=width), context=SimpleNamespace(task=task))


@pytest.mark.parametrize("objective", [Autoencoder, Contrastive, Rotation])
def test_objectives_give_finite_losses_with_gradients(objective) -> None:
    backbone = lenet(input_shape=(1, 28, 28))
    loss_fn = pretext(objective, backbone.out_features, (1, 28, 28))
    losses = loss_fn.loss(backbone, torch.randn(8, 1, 28, 28))
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert backbone.blocks.conv1[0].weight.grad.abs().sum() > 0


def test_rotation_objective_names_each_rotation() -> None:
    """A backbone that sees the rotation (the row of the brightest pixel) scores near zero
    loss once its classifier is fit; one blind to it cannot beat chance (log 4)."""
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, 0, 3] = 1.0  # a mark in the top row: each rotation moves it to another side
    objective = pretext(Rotation, 4, (1, 8, 8))

    def sides(images: torch.Tensor) -> torch.Tensor:  # mass on the top/left/bottom/right
        rows, cols = images.sum(dim=(1, 3)), images.sum(dim=(1, 2))
        return torch.stack([rows[:, 0], cols[:, 0], rows[:, -1], cols[:, -1]], dim=1)

    with torch.no_grad():
        objective.classifier.weight.copy_(10 * torch.eye(4))
        objective.classifier.bias.zero_()
        seeing = objective.loss(sides, x)["rotation"]
        blind = objective.loss(lambda images: torch.zeros(len(images), 4), x)["rotation"]
    assert seeing.item() < 0.01
    assert blind.item() == pytest.approx(math.log(4), rel=1e-5)


def test_rotation_objective_refuses_non_square_inputs() -> None:
    with pytest.raises(ConfigError, match="square images"):
        pretext(Rotation, 8, (64,))
