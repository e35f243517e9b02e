"""Zero-shot learning: side information, seen/unseen splits, xlsa17 files, the two methods
and the ZSL/GZSL protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import QUICK
from omegaconf import OmegaConf

from tlframe.data.benchmarks.xlsa17 import xlsa17
from tlframe.data.datamodule import TransferDataModule
from tlframe.data.zero_shot.class_info import attribute_table, word_vectors
from tlframe.data.zero_shot.split import seen_classes
from tlframe.engine.metrics import ClassAccuracy
from tlframe.engine.stages import build_module, domain_infos, plan_stages
from tlframe.errors import ConfigError
from tlframe.methods.attribute_embedding import ranking_hinge
from tlframe.methods.conse import convex_combination
from tlframe.methods.zero_shot import best_among, class_mean, harmonic_mean
from tlframe.train import build_domains, train

SMALL = ["source.base.num_train=300", "source.base.num_val=100", "source.base.num_test=200"]


def _zsl(make_cfg, method: str, *overrides: str):
    cfg = make_cfg(f"method={method}", "dataset=zsl_digits", *SMALL, *overrides)
    domains = build_domains(cfg)
    engine = build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None)
    return cfg, domains, engine.model


@pytest.mark.parametrize("benchmark", ["zsl_digits", "zsl_letters"])
def test_embedded_tables_are_learnable_from_every_split(make_cfg, benchmark):
    """Distinct rows, and every attribute present in some seen class of every split."""
    node = make_cfg(f"dataset={benchmark}").source
    names = list(node.attributes)
    table = attribute_table(OmegaConf.to_container(node.attributes), names)
    assert table.shape == (len(names), len(node.attribute_names))
    assert len({tuple(row) for row in table}) == len(names)
    assert len(node.zsl_splits) >= 3
    for split, unseen in node.zsl_splits.items():
        seen = seen_classes(names, node.zsl_splits, split)
        assert table[seen].max(axis=0).min() == 1, f"{split}: an attribute no seen class has"
        if benchmark == "zsl_letters":
            assert 5 <= len(unseen) <= 6


def test_unseen_classes_never_reach_training_batches(make_cfg):
    cfg = make_cfg("method=conse", "dataset=zsl_digits", *SMALL, "source.zsl_split=unseen_035")
    domains = build_domains(cfg)
    source = domains["source"]
    unseen = {source.class_names.index(c) for c in ("0", "3", "5")}
    datamodule = TransferDataModule(domains, plan_stages(cfg)[0].train_on, batch_size=64)
    labels = torch.cat([batch["source"][1] for batch, *_ in datamodule.train_dataloader()])
    assert len(labels) > 0 and not unseen & set(labels.tolist())
    assert not unseen & set(source.val.labels.tolist())
    assert unseen <= set(source.test.labels.tolist())  # the test split keeps every class


def test_conse_equals_the_hand_computed_convex_combination():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # T=2: (0.5 * [1, 0] + 0.3 * [0, 1]) / 0.8 = [0.625, 0.375]
    combined = convex_combination(probs, vectors, top_t=2)
    assert torch.allclose(combined, torch.tensor([[0.625, 0.375]]))
    unseen = torch.tensor([[0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    cosine = torch.nn.functional.normalize(combined, dim=1) @ unseen.T
    assert cosine.argmax().item() == 1  # [0.8, 0.6] is nearest to [0.625, 0.375]
    # all three: (0.5 [1,0] + 0.3 [0,1] + 0.2 [1,1]) / 1 = [0.7, 0.5]
    assert torch.allclose(convex_combination(probs, vectors, 10), torch.tensor([[0.7, 0.5]]))


def test_conse_module_scores_through_the_convex_combination(make_cfg):
    _, domains, module = _zsl(make_cfg, "conse", "method.top_t=3")
    module.eval()
    x = domains["target"].test.inputs[:4]
    seen = module.seen_mask("source")
    expected = convex_combination(module(x).softmax(1), module.semantic("source")[seen], 3)
    expected = torch.nn.functional.normalize(expected, dim=1)
    semantic = torch.nn.functional.normalize(module.semantic("target"), dim=1)
    assert torch.allclose(module.class_scores(x, "target"), expected @ semantic.T, atol=1e-6)
    assert module.head.out_features == int(seen.sum())


def test_attribute_embedding_predicts_the_nearest_class(make_cfg):
    _, _, module = _zsl(make_cfg, "attribute_embedding", "method.class_encoder=identity")
    attributes = module.semantic("target")
    unseen = ~module.seen_mask("target")
    for cls in torch.nonzero(unseen).flatten().tolist():  # f(x) set to a class's attributes
        embedded = attributes[cls : cls + 1] + 0.05 * torch.randn(1, attributes.shape[1])
        scores = module.compatibility(embedded, module.embed_classes("target"))
        assert best_among(scores, unseen).item() == cls


def test_ranking_hinge_sums_the_margin_violations_and_warp_weighs_them_by_rank():
    scores = torch.tensor([[0.5, 0.45, 0.1], [0.0, 0.3, 0.2]])
    labels = torch.tensor([0, 0])
    # row 0: max(0, 0.1 - 0.5 + 0.45) + max(0, 0.1 - 0.5 + 0.1) = 0.05, one violation;
    # row 1: (0.1 + 0.3) + (0.1 + 0.2) = 0.7, two violations: WARP weight (1 + 1/2) / 2
    plain = ranking_hinge(scores, labels, 0.1, weighted=False)
    assert plain.item() == pytest.approx((0.05 + 0.7) / 2)
    warp = ranking_hinge(scores, labels, 0.1, weighted=True)
    assert warp.item() == pytest.approx((0.05 * 1.0 + 0.7 * 0.75) / 2)


def test_gzsl_figures_are_per_class_means():
    metric = ClassAccuracy(4)
    seen = torch.tensor([True, True, False, False])
    # class 0: 3/4 right; class 1: 1/1; class 2: 0/2; class 3: 1/1
    metric.update(torch.tensor([0, 0, 0, 1, 1, 0, 1, 3]), torch.tensor([0, 0, 0, 0, 1, 2, 2, 3]))
    per_class = metric.compute()
    assert class_mean(per_class, seen) == pytest.approx((0.75 + 1.0) / 2)
    assert class_mean(per_class, ~seen) == pytest.approx(0.5)
    assert harmonic_mean(0.875, 0.5) == pytest.approx(2 * 0.875 * 0.5 / 1.375)


def test_zero_shot_method_refuses_a_domain_without_side_information(make_cfg):
    small = ["source.num_train=300", "source.num_val=100", "source.num_test=200"]
    cfg = make_cfg("method=conse", "source=synth_digits", "target=synth_digits", *small)
    cfg.target = cfg.source
    domains = build_domains(cfg)
    with pytest.raises(ConfigError, match="class side information"):
        build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None)


def test_unknown_zsl_split_is_one_line(make_cfg):
    with pytest.raises(ConfigError, match="unknown zsl_split 'nope'"):
        build_domains(make_cfg("dataset=zsl_digits", *SMALL, "source.zsl_split=nope"))


@pytest.mark.parametrize("method", ["conse", "attribute_embedding"])
def test_run_reports_the_zsl_and_gzsl_figures(make_cfg, method):
    metrics = train(make_cfg(*QUICK, f"method={method}", "dataset=zsl_digits", *SMALL))["metrics"]
    seen, unseen = metrics["test/target/gzsl_seen"], metrics["test/target/gzsl_unseen"]
    assert metrics["test/target/gzsl_h"] == pytest.approx(
        2 * seen * unseen / (seen + unseen) if seen + unseen else 0.0, abs=1e-6
    )
    # fewer candidates (the unseen classes only) can only turn GZSL misses into ZSL hits
    assert metrics["test/target/unseen_acc"] >= unseen - 1e-6
    assert metrics["test/target/acc"] == metrics["test/target/unseen_acc"]
    assert "val/source/acc" in metrics


def _write_xlsa17(folder: Path) -> dict[str, np.ndarray]:
    """Six classes (1-based labels), 0-2 seen and 3-5 unseen, 8 examples each."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1, 7), 8)
    features = rng.normal(size=(16, len(labels))).astype(np.float32)  # [dim, N] as xlsa17
    rows = np.arange(1, len(labels) + 1)
    seen = labels <= 3
    trainval, test_seen = rows[seen][::2], rows[seen][1::2]
    locs = {"trainval_loc": trainval[:, None], "test_seen_loc": test_seen[:, None]}
    locs["test_unseen_loc"] = rows[~seen][:, None]
    names = np.array([[f"class+{i}"] for i in range(6)], dtype=object)
    att = rng.random((5, 6))
    scipy.io.savemat(folder / "res101.mat", {"features": features, "labels": labels[:, None]})
    scipy.io.savemat(folder / "att_splits.mat", {**locs, "att": att, "allclasses_names": names})
    return {"att": att, "features": features, **locs}


def test_xlsa17_files_load_with_their_splits(tmp_path):
    written = _write_xlsa17(tmp_path)
    domain = xlsa17(str(tmp_path), val_fraction=0.25)
    assert domain.class_names == [f"class+{i}" for i in range(6)]
    assert domain.seen_classes == [0, 1, 2]
    assert torch.allclose(domain.class_attributes, torch.from_numpy(written["att"].T).float())
    assert len(domain.train) + len(domain.val) == len(written["trainval_loc"])
    assert set(domain.train.labels.tolist()) == {0, 1, 2} == set(domain.val.labels.tolist())
    assert len(domain.test) == len(written["test_seen_loc"]) + len(written["test_unseen_loc"])
    assert set(domain.test.labels.tolist()) == set(range(6))
    first = written["test_unseen_loc"][0, 0] - 1  # a test row is the file's row
    assert any(
        torch.allclose(row, torch.from_numpy(written["features"][:, first]))
        for row in domain.test.inputs
    )


def test_attribute_files_and_word_vectors(tmp_path):
    names = ["polar+bear", "killer_whale"]
    (tmp_path / "att.csv").write_text("class,a,b\nkiller_whale,0,1\npolar+bear,1,0.5\n")
    assert attribute_table(str(tmp_path / "att.csv"), names).tolist() == [[1, 0.5], [0, 1]]
    np.save(tmp_path / "att.npy", np.eye(2)[:, [1, 0]].T.copy())
    assert attribute_table(str(tmp_path / "att.npy"), names).shape == (2, 2)
    scipy.io.savemat(tmp_path / "att.mat", {"att": np.ones((3, 2))})  # [attributes, classes]
    assert attribute_table(str(tmp_path / "att.mat"), names).shape == (2, 3)
    (tmp_path / "vec.txt").write_text("2 2\npolar 1 0\nbear 0 1\nkiller 2 2\nwhale 0 0\n")
    vectors = word_vectors(str(tmp_path / "vec.txt"), names)
    assert vectors.tolist() == [[0.5, 0.5], [1.0, 1.0]]
