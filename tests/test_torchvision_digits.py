"""MNIST, USPS, SVHN and MNIST-M from tiny files in their real formats, read by the code a
user runs; and the one-line message when the files are missing."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import subprocess_env
from file_fixtures import (
    decode_label,
    write_mnist,
    write_mnistm_release,
    write_svhn,
    write_usps,
)
from torchvision.datasets import SVHN

from tlframe.data.benchmarks import mnistm as mnistm_module
from tlframe.data.benchmarks.mnistm import mnistm
from tlframe.data.benchmarks.torchvision_digits import digits
from tlframe.data.domain import SPLITS, Domain
from tlframe.errors import ConfigError, DataError
from tlframe.train import build_domains, check_input_shapes


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _check_paired(domain: Domain, sizes: dict[str, int], shape: tuple[int, ...]) -> None:
    """Sizes and shape as expected, and every image still carries its own label."""
    assert domain.class_names == [str(d) for d in range(10)]
    assert tuple(domain.input_shape) == shape
    for split in SPLITS:
        x, y = domain.split(split)[list(range(len(domain.split(split))))]
        assert len(y) == sizes[split] and x.shape[1:] == shape and x.dtype == torch.float32
        assert [decode_label(image) for image in x] == y.tolist()
        assert torch.all(x[:, 0, -1] == -1.0)  # the bottom rows are black: images are upright


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_mnist_from_idx_files(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20, gz=gz)
    domain = digits("mnist", str(tmp_path))
    _check_paired(domain, {"train": 54, "val": 6, "test": 20}, (3, 32, 32))
    x, _ = domain.train[[0, 1]]
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated into RGB
    native = digits("mnist", str(tmp_path), image_size=28, channels=1, mean=0.0, std=1.0)
    images, labels = native.test[list(range(20))]
    assert images.shape == (20, 1, 28, 28)
    assert torch.equal((images[:, 0, 0, 0] * 255).round(), 20.0 * (labels + 1))  # exact pixels


def test_validation_is_carved_stratified_with_a_fixed_seed(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=200)
    first, again = digits("mnist", str(tmp_path)), digits("mnist", str(tmp_path))
    other = digits("mnist", str(tmp_path), seed=1)
    assert torch.equal(first.val.inputs, again.val.inputs)
    assert not torch.equal(first.val.labels, other.val.labels) or not torch.equal(
        first.val.inputs, other.val.inputs
    )
    assert torch.bincount(first.val.labels, minlength=10).tolist() == [2] * 10


def test_usps_from_libsvm_bz2_files(tmp_path: Path) -> None:
    write_usps(tmp_path / "usps", n_train=40, n_test=20)
    domain = digits("usps", str(tmp_path / "usps"))
    _check_paired(domain, {"train": 36, "val": 4, "test": 20}, (3, 32, 32))


def test_svhn_from_mat_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = write_svhn(tmp_path / "svhn")
    with pytest.raises(DataError, match=r"train_32x32\.mat does not match the official md5"):
        digits("svhn", str(tmp_path / "svhn"), role="source")
    for split, md5 in sums.items():  # our fixture is not the official file
        url, name, _ = SVHN.split_list[split]
        monkeypatch.setitem(SVHN.split_list, split, [url, name, md5])
    domain = digits("svhn", str(tmp_path / "svhn"))
    _check_paired(domain, {"train": 36, "val": 4, "test": 20}, (3, 32, 32))
    x, _ = domain.test[[0, 1]]
    assert torch.all(x[:, 2] == 1.0) and torch.all(x[:, 1] == -1.0)  # blue 255, green 0: RGB order
    grey = digits("svhn", str(tmp_path / "svhn"), channels=1, image_size=28)
    assert grey.input_shape == (1, 28, 28) and grey.test[[0]][0].shape == (1, 1, 28, 28)


def test_any_two_digit_domains_pair_with_the_default_shape(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_usps(tmp_path / "usps")
    write_mnistm_release(tmp_path / "mnistm")
    pair = {
        "source": digits("usps", str(tmp_path / "usps")),
        "target": digits("mnist", str(tmp_path)),
    }
    check_input_shapes(pair)
    check_input_shapes({**pair, "target": mnistm(str(tmp_path / "mnistm"), str(tmp_path))})
    grey = digits("mnist", str(tmp_path), channels=1, image_size=28)
    with pytest.raises(ConfigError, match=r"\(3, 32, 32\).*\(1, 28, 28\).*channels"):
        check_input_shapes({**pair, "target": grey})


def test_mnistm_release_files(tmp_path: Path) -> None:
    write_mnistm_release(tmp_path / "mnistm", n_train=40, n_test=20)
    domain = mnistm(str(tmp_path / "mnistm"), str(tmp_path))
    _check_paired(domain, {"train": 36, "val": 4, "test": 20}, (3, 32, 32))


def test_mnistm_built_from_mnist_and_photo_patches(tmp_path: Path, monkeypatch) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20)
    built = mnistm(str(tmp_path / "mnistm"), str(tmp_path), build=True, image_size=28)
    plain = digits("mnist", str(tmp_path), image_size=28)
    for split in SPLITS:
        assert torch.equal(built.split(split).labels, plain.split(split).labels)
    x = built.test.inputs.float()
    assert x.shape == (20, 3, 28, 28)
    assert (x[:, 0] != x[:, 1]).any()  # coloured, not grey
    assert x[:, :, -7:].std(dim=(2, 3)).mean() > 5  # the background is textured photo
    with monkeypatch.context() as patch:  # a second run loads the cached build
        patch.setattr(mnistm_module, "blend", lambda *a: pytest.fail("rebuilt"))
        again = mnistm(str(tmp_path / "mnistm"), str(tmp_path), build=True, image_size=28)
    assert torch.equal(again.test.inputs, built.test.inputs)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda root: digits("mnist", root, role="target"), r"train-images-idx3-ubyte.*MNIST/raw"),
        (lambda root: digits("usps", f"{root}/usps", role="target"), r"usps\.bz2, usps\.t\.bz2"),
        (lambda root: digits("svhn", f"{root}/svhn", role="target"), r"train_32x32\.mat"),
        (lambda root: mnistm(f"{root}/mnistm", root, role="target"), r"target\.build=true"),
    ],
    ids=["mnist", "usps", "svhn", "mnistm"],
)
def test_missing_files_give_one_line_with_the_fixes(tmp_path: Path, build, expected: str) -> None:
    with pytest.raises(DataError, match=expected) as caught:
        build(str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "target.download=true" in message and "target.root=DIR" in message


def test_missing_files_name_the_role_that_needs_them(make_cfg) -> None:
    cfg = make_cfg("source=hand_digits", "target=usps")
    with pytest.raises(DataError, match=r"usps: missing .*; add target\.download=true"):
        build_domains(cfg)


def test_cli_stops_at_once_without_files_or_network(tmp_path: Path) -> None:
    """``tlframe-train source=mnist target=usps`` on a machine without the files."""
    env = subprocess_env(tmp_path)
    env.pop("TLFRAME_DATA_DIR", None)  # the default, <root>/data, as a user has it
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "tlframe-train"), "source=mnist", "target=usps"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tlframe: error:")]
    assert len(lines) == 1
    assert f"in {tmp_path}/data/MNIST/raw" in lines[0]
    assert "t10k-labels-idx1-ubyte" in lines[0] and "source.download=true" in lines[0]
    assert "paths.data_dir=DIR" in lines[0]
    assert elapsed < 120  # no network wait: only Python's start-up, loaded machine included
