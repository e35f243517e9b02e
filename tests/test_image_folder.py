"""Image-folder domains from tiny trees on disk: layouts, classes by name, unreadable
images, the download hook, and streaming through DataLoader workers in a real run."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch
from conftest import QUICK
from file_fixtures import write_image_tree
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from tlframe.data import loaders
from tlframe.data.datamodule import TransferDataModule
from tlframe.data.formats import image_folder as folder_module
from tlframe.data.formats.image_folder import UnreadableImageError, choose_inputs, image_folder
from tlframe.data.images import ImageSplit
from tlframe.engine.stages import build_method
from tlframe.errors import ConfigError, DataError
from tlframe.train import build_domains, check_classes, train

SMALL = {"image_size": 8, "resize_size": 10}
CLASSES = {"b_cls": 10, "a_cls": 10, "C": 10}


def test_one_tree_is_split_with_a_seed_and_classes_are_sorted(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", CLASSES)
    domain = image_folder(str(tmp_path / "tree"), name="tree", **SMALL)
    assert domain.class_names == ["C", "a_cls", "b_cls"]  # ImageFolder's sorted folder names
    assert domain.input_shape == (3, 8, 8)
    assert [len(domain.split(s)) for s in ("train", "val", "test")] == [21, 3, 6]
    paths = {s: {p for p, _ in domain.split(s).samples} for s in ("train", "val", "test")}
    assert not (paths["train"] & paths["test"]) and not (paths["train"] & paths["val"])
    assert sorted(torch.tensor(domain.test.targets).bincount().tolist()) == [2, 2, 2]
    x, y = domain.test[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y == domain.test.targets[0]
    assert torch.equal(domain.test[0][0], x)  # evaluation crops are centred: deterministic
    again = image_folder(str(tmp_path / "tree"), seed=0, **SMALL)
    other = image_folder(str(tmp_path / "tree"), seed=1, **SMALL)
    assert again.test.samples == domain.test.samples != other.test.samples


def test_split_folders_are_used_and_a_missing_val_is_carved(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "root" / "train", {"x": 10, "y": 10})
    write_image_tree(tmp_path / "root" / "test", {"x": 3, "y": 2})
    domain = image_folder(str(tmp_path / "root"), val_fraction=0.2, **SMALL)
    assert domain.class_names == ["x", "y"]
    assert [len(domain.split(s)) for s in ("train", "val", "test")] == [16, 4, 5]
    assert all("/root/test/" in p for p, _ in domain.test.samples)
    write_image_tree(tmp_path / "root" / "test", {"z": 1})
    with pytest.raises(DataError, match=r"classes the training images lack: \['z'\]"):
        image_folder(str(tmp_path / "root"), **SMALL)


def test_a_class_folder_named_train_is_a_class(tmp_path: Path) -> None:
    """VisDA has a class called ``train``: a root is split folders only if all its folders are."""
    write_image_tree(tmp_path / "visda", {"train": 5, "truck": 5})
    assert image_folder(str(tmp_path / "visda"), **SMALL).class_names == ["train", "truck"]


def test_corrupt_image_error_names_the_file_also_from_workers(tmp_path: Path, monkeypatch) -> None:
    write_image_tree(tmp_path / "root" / "train", {"x": 4, "y": 4})
    write_image_tree(tmp_path / "root" / "test", {"x": 2, "y": 2})
    broken = tmp_path / "root" / "test" / "y" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    domain = image_folder(str(tmp_path / "root"), **SMALL)
    index = [p for p, _ in domain.test.samples].index(str(broken))
    with pytest.raises(UnreadableImageError, match=f"cannot read image {broken}"):
        domain.test[index]
    # torch waits this long for each worker of a failed loader when it is collected
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2)
    dm = TransferDataModule({"source": domain}, {"source": "all"}, eval_batch_size=2, num_workers=2)
    with pytest.raises(DataError) as caught:
        for loader in dm.test_dataloader():
            list(loader)
    message = str(caught.value)
    del caught
    gc.collect()  # shut the workers down while the short wait applies
    assert message.startswith(f"cannot read image {broken}") and "\n" not in message


def test_source_and_target_classes_are_matched_by_name(tmp_path: Path, make_cfg) -> None:
    write_image_tree(tmp_path / "a", {"cat": 3, "dog": 3, "owl": 3})
    write_image_tree(tmp_path / "b", {"cat": 3, "dog": 3, "emu": 3})
    cfg = make_cfg(
        "source=image_folder", f"source.root={tmp_path / 'a'}", "source.name=a",
        "target=image_folder", f"target.root={tmp_path / 'b'}", "target.name=b",
    )  # fmt: skip
    domains = build_domains(cfg)
    with pytest.raises(ConfigError, match=r"a only: \['owl'\], b only: \['emu'\]"):
        check_classes(build_method(cfg), domains)


def test_presets_say_where_the_data_goes_and_how_to_get_it(make_cfg, data_dir: Path) -> None:
    cfg = make_cfg("source=office31_amazon", "target=office31_webcam")
    with pytest.raises(DataError) as caught:
        build_domains(cfg)
    message = str(caught.value)
    assert f"no image folder at {data_dir}/office31/amazon/images" in message
    assert "domain_adaptation_images.tar.gz" in message and "source.root=DIR" in message
    cfg = make_cfg("source=office_home_art", "target=visda_real")
    assert cfg.source.root.endswith("OfficeHomeDataset_10072016/Art")
    assert cfg.target.url.startswith("http://csr.bu.edu/ftp/visda17/clf/")


def test_download_unpacks_the_archive_next_to_root(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_download(url: str, download_root: str, md5: str | None = None) -> None:
        calls.append((url, download_root, md5))
        write_image_tree(Path(download_root) / "validation", {"car": 5, "bus": 5})

    monkeypatch.setattr(folder_module, "download_and_extract_archive", fake_download)
    root = tmp_path / "visda2017" / "validation"
    with pytest.raises(DataError, match="target.download=true to download http://x/v.tar"):
        image_folder(str(root), url="http://x/v.tar", role="target", **SMALL)
    assert calls == []  # no download unless asked
    domain = image_folder(str(root), url="http://x/v.tar", download=True, **SMALL)
    assert calls == [("http://x/v.tar", str(tmp_path / "visda2017"), None)]
    assert domain.class_names == ["bus", "car"]
    image_folder(str(root), url="http://x/v.tar", download=True, **SMALL)
    assert len(calls) == 1  # present now: not fetched again


def test_streamed_folders_train_with_persistent_workers(
    tmp_path: Path, make_cfg, monkeypatch
) -> None:
    write_image_tree(tmp_path / "a", {"cat": 12, "dog": 12}, size=20)
    write_image_tree(tmp_path / "b", {"cat": 12, "dog": 12}, size=24)
    cfg = make_cfg(
        *QUICK,
        "backbone=mlp",
        *[
            f"{role}.{key}={value}"
            for role, root in (("source", tmp_path / "a"), ("target", tmp_path / "b"))
            for key, value in (
                ("root", root),
                ("image_size", 16),
                ("resize_size", 16),
                ("decode", False),
            )
        ],
        "source=image_folder",
        "target=image_folder",
        "data.batch_size=8",
        "data.num_workers=2",
        "data.persistent_workers=true",
    )
    made = []

    class Spy(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append((kwargs.get("num_workers", 0), kwargs.get("persistent_workers", False)))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loaders, "DataLoader", Spy)
    record = train(cfg)
    assert (2, True) in made  # the streamed folders were read by persistent workers
    assert len(record["metrics"]["test/target/acc_per_class"]) == 2


def test_a_folder_of_small_grey_images_needs_only_its_root(
    tmp_path: Path, make_cfg, caplog
) -> None:
    """Sizes and colours are read off the training images and logged, and small images are
    scaled to [-1, 1] alike; a smaller target is read at the source's size; no crops or
    flips on small images."""
    write_image_tree(tmp_path / "a", {"cat": 12, "dog": 12}, size=20, grey=True)
    write_image_tree(tmp_path / "b", {"cat": 12, "dog": 12}, size=16, grey=True)
    roots = ("source=image_folder", f"source.root={tmp_path / 'a'}", "source.name=a")
    roots += ("target=image_folder", f"target.root={tmp_path / 'b'}", "target.name=b")
    cfg = make_cfg(*roots, *QUICK, "data.batch_size=8")
    with caplog.at_level("INFO"):
        record = train(cfg)
    assert record["input_shapes"] == {"source": [1, 20, 20], "target": [1, 20, 20]}
    logged = caplog.text
    assert (
        "a: grey 20x20 inputs, no augmentation, mean 0.500, std 0.500 (pixels to [-1, 1])" in logged
    )
    assert "target b: read at 20x20 to pair with the other domain's larger images" in logged
    domains = build_domains(make_cfg(*roots))
    x, _ = domains["source"].train[0]
    assert x.shape == (1, 20, 20)
    pixels = torch.stack(
        [domains["source"].train[i][0] for i in range(len(domains["source"].train))]
    )
    files = build_domains(make_cfg(*roots, "source.decode=false"))["source"].train.samples
    expected = torch.stack(  # every domain scaled to [-1, 1] alike, as the digit recipes do
        [pil_to_tensor(Image.open(path)).float() / 127.5 - 1 for path, _ in files]
    )
    assert torch.allclose(pixels, expected, atol=1e-6)
    photos = choose_inputs(
        [(str(p), 0) for p in write_image_tree(tmp_path / "c", {"x": 2}, size=80)],
        None, None, None, None, None, None,
    )[0]  # fmt: skip
    assert (photos.channels, photos.image_size, photos.augment) == (3, 224, True)
    assert photos.mean == (0.485, 0.456, 0.406)  # ImageNet's, for larger images


def test_small_folders_are_decoded_once_into_the_inputs_streaming_gives(
    tmp_path: Path, make_cfg, caplog
) -> None:
    """Without random crops a folder is decoded once (one uint8 tensor, batches sliced)
    into the same inputs as streamed; with them it streams; the transductive protocol
    keeps the decoded kind; decode=true with augmentation is refused."""
    write_image_tree(tmp_path / "a", {"cat": 6, "dog": 6}, size=12, grey=True)
    roots = ("source=image_folder", f"source.root={tmp_path / 'a'}", "source.name=a")
    roots += ("target=image_folder", f"target.root={tmp_path / 'a'}", "target.name=a")
    with caplog.at_level("INFO"):
        decoded = build_domains(make_cfg(*roots))
    streamed = build_domains(make_cfg(*roots, "source.decode=false", "target.decode=false"))
    assert "source a: 12 images decoded once and held in memory" in caplog.text
    for split in ("train", "val", "test"):
        held, read = decoded["source"].split(split), streamed["source"].split(split)
        assert isinstance(held, ImageSplit) and held.inputs.dtype == torch.uint8
        x, y = held[torch.arange(len(held))]
        expected = torch.stack([read[i][0] for i in range(len(read))])
        assert torch.equal(x, expected)
        assert y.tolist() == [read[i][1] for i in range(len(read))]
    augmented = build_domains(make_cfg(*roots, "source.augment=true", "target.augment=true"))
    assert isinstance(augmented["source"].train, folder_module.FolderSplit)
    whole = build_domains(make_cfg(*roots, "data.protocol=transductive"))["target"].test
    assert isinstance(whole, ImageSplit) and len(whole) == 12
    with pytest.raises(ConfigError, match="decode=true holds each image decoded once"):
        build_domains(make_cfg(*roots, "source.decode=true", "source.augment=true"))


def test_streamed_folders_get_one_worker_per_core_by_default(tmp_path: Path, caplog) -> None:
    write_image_tree(tmp_path / "a", {"cat": 4, "dog": 4})
    domain = image_folder(str(tmp_path / "a"), name="a", augment=True, **SMALL)
    with caplog.at_level("INFO"):
        dm = TransferDataModule({"source": domain}, {"source": "all"}, num_workers="auto")
    workers = min(loaders.AUTO_WORKERS_MAX, len(os.sched_getaffinity(0)))
    assert dm.train_dataloader().iterables["source"].num_workers == workers
    assert f"a streamed from disk: {workers} DataLoader workers per loader" in caplog.text
    assert loaders.worker_count(0) == 0
