"""In-memory image helpers and the seeded splits shared by the file-based domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlframe.data.images import ImageSplit, match_channels, normalise, resize_uint8
from tlframe.data.loaders import eval_loader, train_loader
from tlframe.data.splits import split_pool
from tlframe.errors import ConfigError


def test_channels_are_repeated_or_averaged_to_luminance() -> None:
    grey = torch.rand(2, 1, 3, 3)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (2, 3, 3, 3) and rgb.data_ptr() == grey.data_ptr()  # a view
    colour = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(match_channels(colour, 1), torch.full((1, 1, 2, 2), 0.299))
    with pytest.raises(ConfigError, match="channels must be 1"):
        match_channels(grey, 2)


def test_normalise_takes_one_or_per_channel_statistics() -> None:
    x = torch.ones(1, 3, 2, 2)
    assert torch.equal(normalise(x, 0.5, 0.5), torch.ones(1, 3, 2, 2))
    per_channel = normalise(x, [0.0, 0.5, 1.0], [1.0, 0.5, 1.0])
    assert per_channel[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="one per channel"):
        normalise(x, [0.1, 0.2], 1.0)


def test_resize_keeps_uint8_and_constant_regions() -> None:
    images = torch.full((5, 1, 16, 16), 77, dtype=torch.uint8)
    resized = resize_uint8(images, 32)
    assert resized.shape == (5, 1, 32, 32) and resized.dtype == torch.uint8
    assert (resized == 77).all()


def test_image_split_stores_uint8_and_yields_model_inputs() -> None:
    images = torch.arange(4 * 4, dtype=torch.uint8).view(4, 1, 2, 2) * 10
    labels = torch.tensor([0, 1, 0, 1])
    split = ImageSplit(images, labels, channels=3, mean=0.5, std=0.5)
    x, y = split[[1, 3]]
    assert x.shape == (2, 3, 2, 2) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x[:, 2], (images[[1, 3], 0].float() / 255 - 0.5) / 0.5)
    assert torch.equal(y, labels[[1, 3]])
    single, label = split[2]
    assert single.shape == (3, 2, 2) and int(label) == 0
    assert torch.equal(split.subset(torch.tensor([1, 3]))[[0, 1]][0], x)
    assert split.unlabeled()[[0]][1] is None
    batch = next(iter(train_loader(split, 2, 1, labeled=False, loader_cfg={})))
    assert batch[0].shape == (2, 3, 2, 2) and batch[1] is None
    evaluated = next(iter(eval_loader(split, "target", "test", 4, {})))
    assert evaluated["x"].dtype == torch.float32 and evaluated["x"].shape == (4, 3, 2, 2)


def test_split_pool_is_seeded_stratified_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), 25)
    parts = split_pool(labels, 0, test=0.2, val=0.1)
    assert {k: len(v) for k, v in parts.items()} == {"train": 70, "test": 20, "val": 10}
    assert len(np.unique(np.concatenate(list(parts.values())))) == 100
    assert np.bincount(labels[parts["test"]]).tolist() == [5, 5, 5, 5]
    again, other = (
        split_pool(labels, 0, test=0.2, val=0.1),
        split_pool(labels, 1, test=0.2, val=0.1),
    )
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ConfigError, match="sum below 1"):
        split_pool(labels, 0, test=0.6, val=0.5)
