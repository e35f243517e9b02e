"""A researcher's own data: COIL-20's pose halves from their published file (written here,
small), the feature-vector recipe of backbone=mlp, and the transductive protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUICK
from file_fixtures import write_mat73

from tlframe.data.benchmarks.coil20 import TEST_FRACTION, coil20, reference_test_rows
from tlframe.engine.selection import resolve_selection
from tlframe.errors import ConfigError
from tlframe.train import build_domains, train

CLASSES, PER_CLASS = 20, 10  # the real file has 36 images per class and half


def coil_file(tmp_path: Path) -> Path:
    """COIL1_vs_COIL2.mat as the protocol ships it: MATLAB v7.3, rows stored column-major,
    1-based labels; each class a pattern (its image's row index) the model can learn."""
    rng = np.random.default_rng(0)
    arrays = {}
    for x, y in (("Xs", "Ys"), ("Xt", "Yt")):
        labels = np.repeat(np.arange(1, CLASSES + 1), PER_CLASS).astype(float)
        images = rng.uniform(0, 0.2, (len(labels), 32, 32))
        for i, label in enumerate(labels):
            images[i, int(label), :] = 1.0  # a bright row per class, upright
        arrays[x] = images.transpose(0, 2, 1).reshape(len(labels), 1024)  # column-major rows
        arrays[y] = labels.reshape(1, -1)
    path = tmp_path / "COIL1_vs_COIL2.mat"
    write_mat73(path, arrays)
    return path


def test_the_halves_keep_the_published_split_and_images_stand_upright(tmp_path: Path):
    path = coil_file(tmp_path)
    one, two = coil20(str(path), half=1), coil20(str(path), half=2, as_images=True)
    assert one.input_shape == (1024,) and two.input_shape == (1, 32, 32)
    assert (one.name, two.name) == ("COIL1", "COIL2")
    for domain in (one, two):
        sizes = {split: len(domain.split(split)) for split in ("train", "val", "test")}
        assert sizes["test"] == CLASSES * round(TEST_FRACTION * PER_CLASS)
        assert sum(sizes.values()) == CLASSES * PER_CLASS
    labels = {h: np.repeat(np.arange(CLASSES), PER_CLASS) for h in (1, 2)}
    expected = reference_test_rows(labels, seed=0)  # COIL1 drawn first, then COIL2
    rng = np.random.default_rng(0)
    first = [np.flatnonzero(labels[1] == c)[rng.permutation(PER_CLASS)][:3] for c in range(20)]
    assert np.array_equal(np.sort(np.concatenate(first)), expected[1])
    image, label = two.test[0]
    assert image[0, int(label) + 1, :].min() == 1.0  # the class's bright row, not a column


def test_feature_vectors_get_their_recipe_and_learn_coil(make_cfg, tmp_path: Path, caplog):
    path = coil_file(tmp_path)
    cfg = make_cfg("dataset=coil1to2", f"source.path={path}", "backbone=mlp", "method=dann")
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (32, 20)
    assert list(cfg.backbone.hidden_dims) == [256] and cfg.backbone.dropout == 0.5
    short = make_cfg(
        "dataset=coil1to2", f"source.path={path}", "backbone=mlp", "method=source_only",
        "data.steps_per_epoch=30", "trainer.max_epochs=2",
    )  # fmt: skip
    with caplog.at_level("INFO"):
        record = train(short)
    assert "standardized per feature on the training inputs of both domains" in caplog.text
    assert record["metrics"]["test/target/acc"] > 0.5  # chance is 0.05


def test_the_transductive_protocol_tests_on_the_examples_that_train(make_cfg, tmp_path: Path):
    path = coil_file(tmp_path)
    overrides = ("dataset=coil1to2", f"source.path={path}", "data.protocol=transductive")
    domains = build_domains(make_cfg(*overrides, "backbone=mlp"))
    for domain in domains.values():
        assert domain.train is domain.test is domain.val and len(domain.train) == 200
    record = train(make_cfg(*overrides, "backbone=mlp", "method=dann", *QUICK))
    assert record["selection"] == "step"
    assert record["labels_read"] == {"source": "all", "target": "none"}
    for choice in ("source", "oracle", "target", "holdout"):
        with pytest.raises(ConfigError, match="data.protocol=transductive tests on"):
            resolve_selection(choice, {"source": "all", "target": "none"}, None, True)
    assert resolve_selection("im", {"source": "all"}, None, True).metric == "val/target/im"


def test_an_unknown_protocol_is_one_line(make_cfg):
    with pytest.raises(ConfigError, match="data.protocol must be split or transductive"):
        build_domains(make_cfg("data.protocol=both", "source.num_train=200"))


def test_standardization_reads_no_label(tmp_path: Path):
    """The per-feature scaling of two domains is the same whatever their labels say."""
    from tlframe.data.formats.array_file import array_file
    from tlframe.data.pairing import standardize

    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (200, 5))
    y = np.arange(200) % 4
    np.savez(tmp_path / "a.npz", X=x, y=y)
    np.savez(tmp_path / "b.npz", X=x, y=y[::-1].copy())  # every label moved
    scaled = {}
    for name in ("a", "b"):
        domains = {role: array_file(str(tmp_path / f"{name}.npz")) for role in ("source", "target")}
        standardize(domains, "joint")
        scaled[name] = torch.cat([domains["source"].train.inputs, domains["target"].train.inputs])
    assert torch.allclose(scaled["a"].mean(0), scaled["b"].mean(0), atol=1e-6)
    assert torch.allclose(scaled["a"].std(0), scaled["b"].std(0), atol=1e-6)
