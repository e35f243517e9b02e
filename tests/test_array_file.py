"""Feature-file domains from tiny files in each supported format, and a run on two .mat files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from conftest import QUICK
from file_fixtures import blobs, write_mat73

from tlframe.data.domain import SPLITS
from tlframe.data.formats.array_file import array_file
from tlframe.data.pairing import standardize
from tlframe.errors import ConfigError, DataError
from tlframe.train import train


def _sizes(domain) -> list[int]:
    return [len(domain.split(s)) for s in SPLITS]


def _check_rows(domain, features: np.ndarray, labels: np.ndarray) -> None:
    """Every loaded row is a row of the file, with that row's label."""
    file_rows = torch.from_numpy(features).float()
    for split in SPLITS:
        x, y = domain.split(split).inputs, domain.split(split).labels
        exact = "donot_use_mm_for_euclid_dist"
        distance, nearest = torch.cdist(x, file_rows, compute_mode=exact).min(dim=1)
        assert distance.max() < 1e-4
        assert [domain.class_names[i] for i in y] == [str(labels[i]) for i in nearest]


def test_npz_unsplit_is_split_with_a_seed(tmp_path: Path) -> None:
    x, y = blobs(100, 4, 6, seed=0)
    np.savez(tmp_path / "feats.npz", X=x, y=y)
    domain = array_file(str(tmp_path / "feats.npz"))
    assert domain.name == "feats" and domain.input_shape == (6,)
    assert domain.class_names == ["0", "1", "2", "3"] and _sizes(domain) == [70, 10, 20]
    assert domain.train.inputs.dtype == torch.float32
    _check_rows(domain, x, y)
    other = array_file(str(tmp_path / "feats.npz"), seed=1)
    assert not torch.equal(domain.test.inputs, other.test.inputs)


def test_npz_with_its_own_split_keeps_it(tmp_path: Path) -> None:
    (xa, ya), (xb, yb) = blobs(50, 2, 3, seed=0), blobs(12, 2, 3, seed=1)
    np.savez(tmp_path / "s.npz", X_train=xa, y_train=ya, X_test=xb, y_test=yb)
    domain = array_file(str(tmp_path / "s.npz"), val_fraction=0.2)
    assert _sizes(domain) == [40, 10, 12]
    assert np.allclose(domain.test.inputs.numpy(), xb.astype(np.float32))


def test_csv_with_header_string_labels_and_without_header(tmp_path: Path) -> None:
    x, y = blobs(30, 3, 2, seed=0)
    names = np.array(["cat", "dog", "emu"])[y]
    lines = ["f0,f1,label"] + [f"{a},{b},{n}" for (a, b), n in zip(x, names, strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    domain = array_file(str(tmp_path / "t.csv"))
    assert domain.class_names == ["cat", "dog", "emu"] and domain.input_shape == (2,)
    first = domain.train.inputs[0].numpy()
    row = int(np.argmin(np.abs(x - first).sum(axis=1)))
    assert domain.class_names[domain.train.labels[0]] == names[row]
    plain = [f"{n};{a};{b}" for (a, b), n in zip(x, y, strict=True)]  # no header, label first, ';'
    (tmp_path / "p.csv").write_text("\n".join(plain) + "\n")
    domain = array_file(str(tmp_path / "p.csv"), labels_key=0)
    assert domain.class_names == ["0", "1", "2"] and domain.input_shape == (2,)
    _check_rows(domain, x, y)


def test_npy_pair_pt_and_mat_v5_with_one_based_labels(tmp_path: Path) -> None:
    x, y = blobs(40, 2, 4, seed=0)
    np.save(tmp_path / "f.npy", x)
    np.save(tmp_path / "f_labels.npy", y)
    assert array_file(str(tmp_path / "f.npy")).input_shape == (4,)
    torch.save({"features": torch.from_numpy(x), "targets": torch.from_numpy(y)}, tmp_path / "d.pt")
    torch.save((torch.from_numpy(x), torch.from_numpy(y)), tmp_path / "pair.pt")
    for name in ("d.pt", "pair.pt"):
        _check_rows(array_file(str(tmp_path / name)), x, y)
    scipy.io.savemat(tmp_path / "m.mat", {"fts": x, "labels": (y + 1).reshape(-1, 1)})
    assert array_file(str(tmp_path / "m.mat")).class_names == ["1", "2"]
    zero_based = array_file(str(tmp_path / "m.mat"), label_offset=1)
    assert zero_based.class_names == ["0", "1"]
    _check_rows(zero_based, x, y)
    named = array_file(str(tmp_path / "m.mat"), label_offset=1, class_names=["left", "right"])
    assert named.class_names == ["left", "right"]
    assert torch.equal(named.train.labels, zero_based.train.labels)


def test_mat_v73_is_read_through_hdf5_and_transposed_back(tmp_path: Path) -> None:
    (xs, ys), (xt, yt) = blobs(30, 3, 5, seed=0), blobs(20, 3, 5, seed=1)
    path = tmp_path / "da.mat"
    write_mat73(path, {"Xs": xs, "Ys": ys.astype(float), "Xt": xt, "Yt": yt.astype(float)})
    with h5py.File(path, "r") as file:
        assert file["Xt"].shape == (5, 20)  # MATLAB's column-major layout, as stored
    with pytest.raises(DataError, match=r"several features arrays \['Xs', 'Xt'\].*features_key"):
        array_file(str(path), role="target")
    target = array_file(str(path), features_key="Xt")  # labels follow: Yt
    assert target.input_shape == (5,) and sum(_sizes(target)) == 20
    _check_rows(target, xt, yt)


def test_sparse_matrices_are_densified(tmp_path: Path) -> None:
    x, y = blobs(30, 2, 6, seed=0)
    x[np.abs(x) < 3] = 0
    scipy.io.savemat(tmp_path / "bow.mat", {"X": scipy.sparse.csc_matrix(x), "y": y})
    _check_rows(array_file(str(tmp_path / "bow.mat")), x, y)
    csc = scipy.sparse.csc_matrix(x)
    with h5py.File(tmp_path / "bow73.mat", "w", userblock_size=512) as file:
        group = file.create_group("X")  # MATLAB v7.3 sparse: CSC arrays, rows in an attribute
        group.attrs["MATLAB_sparse"] = x.shape[0]
        group["data"], group["ir"], group["jc"] = csc.data, csc.indices, csc.indptr
        file["y"] = y.reshape(1, -1).astype(float)
    _check_rows(array_file(str(tmp_path / "bow73.mat")), x, y)


def test_rows_scale_to_unit_norm(tmp_path: Path) -> None:
    x, y = blobs(200, 2, 3, seed=0)
    np.savez(tmp_path / "f.npz", X=np.abs(x) * 10 + 5, y=y)
    l2 = array_file(str(tmp_path / "f.npz"), normalize="l2")
    assert torch.allclose(l2.test.inputs.norm(dim=1), torch.ones(len(l2.test)), atol=1e-5)
    l1 = array_file(str(tmp_path / "f.npz"), normalize="l1")
    assert torch.allclose(l1.test.inputs.abs().sum(dim=1), torch.ones(len(l1.test)), atol=1e-5)
    with pytest.raises(ConfigError, match="normalize must be null, l1 or l2"):
        array_file(str(tmp_path / "f.npz"), normalize="l3")


@pytest.mark.parametrize("scaling", ["joint", "source", "domain", "none"])
def test_feature_vectors_are_standardized_on_training_inputs_only(tmp_path: Path, scaling) -> None:
    """Fitted on the training inputs (of both domains, the source's or each domain's own),
    applied to every split; the evaluation splits never contribute."""
    x, y = blobs(300, 2, 3, seed=0)
    np.savez(tmp_path / "s.npz", X=x * 10 + 5, y=y)
    np.savez(tmp_path / "t.npz", X=x[::-1] * 3 - 2, y=y[::-1])
    raw = {
        "source": array_file(str(tmp_path / "s.npz")),
        "target": array_file(str(tmp_path / "t.npz")),
    }
    domains = {
        "source": array_file(str(tmp_path / "s.npz")),
        "target": array_file(str(tmp_path / "t.npz")),
    }
    standardize(domains, scaling)
    for role in ("source", "target"):
        fitted = {
            "joint": torch.cat([raw["source"].train.inputs, raw["target"].train.inputs]),
            "source": raw["source"].train.inputs,
            "domain": raw[role].train.inputs,
        }.get(scaling)
        expected = raw[role].test.inputs
        if fitted is not None:
            mean, std = fitted.double().mean(0), fitted.double().std(0, unbiased=False)
            expected = ((expected.double() - mean) / std).float()
        assert torch.allclose(domains[role].test.inputs, expected, atol=1e-5), role


def test_bad_files_give_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file at .*missing\.mat; set source\.path=FILE"):
        array_file(str(tmp_path / "missing.mat"), role="source")
    np.savez(tmp_path / "odd.npz", A=np.zeros((4, 2)), B=np.zeros(4))
    with pytest.raises(DataError, match=r"no features array .*\['A', 'B'\].*features_key=NAME"):
        array_file(str(tmp_path / "odd.npz"))
    np.savez(tmp_path / "short.npz", X=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="3 labels but features of shape"):
        array_file(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "nan.npz", X=np.full((4, 2), np.nan), y=np.zeros(4))
    with pytest.raises(DataError, match="NaN"):
        array_file(str(tmp_path / "nan.npz"))
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="expected one of .npz"):
        array_file(str(tmp_path / "x.parquet"))
    (tmp_path / "junk.mat").write_bytes(b"not matlab at all")
    with pytest.raises(DataError, match=r"cannot read .*junk\.mat .*valid \.mat file"):
        array_file(str(tmp_path / "junk.mat"))


def test_two_mat_files_train_an_mlp_and_report_target_accuracy(tmp_path: Path, make_cfg):
    """``tlframe-train backbone=mlp source=array_file target=array_file source.path=A.mat
    target.path=B.mat``, with A a classic and B a v7.3 MATLAB file."""
    xa, ya = blobs(600, 3, 8, seed=0)
    xb, yb = blobs(600, 3, 8, seed=1, shift=0.5)
    scipy.io.savemat(tmp_path / "A.mat", {"X": xa, "y": ya.reshape(-1, 1)})
    write_mat73(tmp_path / "B.mat", {"fts": xb, "labels": yb.astype(float)})
    cfg = make_cfg(
        "backbone=mlp",
        "source=array_file",
        "target=array_file",
        f"source.path={tmp_path / 'A.mat'}",
        f"target.path={tmp_path / 'B.mat'}",
        *QUICK,
        "data.steps_per_epoch=20",
        "data.batch_size=32",
    )
    record = train(cfg)
    assert record["source"] == "A" and record["target"] == "B"
    assert record["metrics"]["test/target/acc"] > 0.8  # separable clusters, a small shift
