"""The embedded colour digit domains, the blending they use, and the grey domains' channels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlframe.data.domain import SPLITS
from tlframe.data.synthetic import colored_digits as colored_module
from tlframe.data.synthetic.color_blend import blend
from tlframe.data.synthetic.colored_digits import hand_digits_color, synth_digits_color
from tlframe.data.synthetic.hand_digits import hand_digits
from tlframe.data.synthetic.synth_digits import synth_digits

SMALL = {"num_train": 200, "num_val": 50, "num_test": 50}


def test_blend_is_the_absolute_difference_with_a_photo_patch() -> None:
    digits = torch.tensor([0, 100, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    photo = torch.tensor([10, 120, 250], dtype=torch.uint8).view(3, 1, 1).expand(3, 50, 60)
    out = blend(digits.contiguous(), [photo.contiguous()], torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 4, 4) and out.dtype == torch.uint8
    expected = (
        torch.tensor([10, 120, 250]).view(1, 3) - torch.tensor([0, 100, 255]).view(3, 1)
    ).abs()
    assert torch.equal(out[:, :, 0, 0], expected.to(torch.uint8))


def test_synth_digits_color_is_synth_digits_on_colour_patches(tmp_path: Path) -> None:
    coloured = synth_digits_color(str(tmp_path), **SMALL)
    grey = synth_digits(str(tmp_path), **SMALL)
    assert coloured.name == "synth_digits_color" and coloured.input_shape == (3, 28, 28)
    for split in SPLITS:
        x, labels = coloured.split(split).inputs, coloured.split(split).labels
        assert torch.equal(labels, grey.split(split).labels)  # the same digits, in order
        assert x.shape == (len(labels), 3, 28, 28) and x.dtype == torch.float32
        assert x.amin() < -0.9 and x.amax() > 0.9  # normalised to [-1, 1], all of it used
    x, background = coloured.test.inputs, grey.test.inputs.expand(-1, 3, -1, -1) == -1.0
    assert (x[:, 0] != x[:, 1]).float().mean() > 0.5  # colour, not grey
    assert x[background].mean() > -0.5  # the black background became photo
    as_grey = synth_digits_color(str(tmp_path), channels=1, **SMALL)
    assert as_grey.input_shape == (1, 28, 28) and as_grey.test.inputs.shape[1] == 1


def test_hand_digits_color_keeps_the_hand_digits_splits(tmp_path: Path) -> None:
    coloured, grey = hand_digits_color(str(tmp_path)), hand_digits(str(tmp_path))
    assert coloured.input_shape == (3, 28, 28)
    for split in SPLITS:
        assert torch.equal(coloured.split(split).labels, grey.split(split).labels)


def test_colour_domains_are_deterministic_and_cached(tmp_path: Path, monkeypatch) -> None:
    first = synth_digits_color(str(tmp_path / "a"), **SMALL)
    again = synth_digits_color(str(tmp_path / "b"), **SMALL)  # a fresh root: rebuilt
    other = synth_digits_color(str(tmp_path / "c"), seed=1, **SMALL)
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert Path(first.info["cache"]).parent == tmp_path / "a" / "embedded"
    with monkeypatch.context() as patch:
        patch.setattr(colored_module, "blend", lambda *a: pytest.fail("should load the cache"))
        loaded = synth_digits_color(str(tmp_path / "a"), **SMALL)
    assert torch.equal(loaded.train.inputs, first.train.inputs)


@pytest.mark.parametrize("build", [synth_digits, hand_digits])
def test_grey_domains_repeat_their_channel_on_request(tmp_path: Path, build) -> None:
    kwargs = SMALL if build is synth_digits else {}
    grey, rgb = build(str(tmp_path), **kwargs), build(str(tmp_path), channels=3, **kwargs)
    assert grey.input_shape == (1, 28, 28) and rgb.input_shape == (3, 28, 28)
    x, _ = rgb.train[[0, 1, 2]]
    assert x.shape == (3, 3, 28, 28)
    for c in range(3):
        assert torch.equal(x[:, c], grey.train.inputs[:3, 0])


def test_colour_presets_pair_without_edits(make_cfg) -> None:
    from tlframe.train import build_domains

    for preset, small in (
        ("synth2synth_color", ["source", "target"]),
        ("synth_color2hand_color", ["source"]),
    ):
        overrides = [f"{role}.{k}={v}" for role in small for k, v in SMALL.items()]
        cfg = make_cfg(f"dataset={preset}", *overrides)
        source, target = build_domains(cfg).values()
        assert source.input_shape == target.input_shape == (3, 28, 28), preset
