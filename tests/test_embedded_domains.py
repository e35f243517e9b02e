"""The download-free digit domains: format, determinism, caching, and that they are learnable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tlframe.data.domain import SPLITS, Domain
from tlframe.data.synthetic import hand_digits as hand_module
from tlframe.data.synthetic import synth_digits as synth_module
from tlframe.data.synthetic.fonts import DIGIT_FONTS, render_glyphs
from tlframe.data.synthetic.hand_digits import hand_digits
from tlframe.data.synthetic.synth_digits import synth_digits

SMALL = {"num_train": 200, "num_val": 50, "num_test": 50}
MEDIUM = {"num_train": 3000, "num_val": 500, "num_test": 1000}  # enough to fit a linear model


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Domain:
    return synth_digits(str(tmp_path_factory.mktemp("synth")), **MEDIUM)


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Domain:
    return hand_digits(str(tmp_path_factory.mktemp("hand")))


def _check_format(domain: Domain, name: str, sizes: tuple[int, int, int], image_size: int) -> None:
    assert domain.name == name
    assert domain.class_names == [str(d) for d in range(10)]
    assert domain.input_shape == (1, image_size, image_size)
    for split, size in zip(SPLITS, sizes, strict=True):
        x, y = domain.split(split).inputs, domain.split(split).labels
        assert x.shape == (size, 1, image_size, image_size) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.long
        assert x.min() == -1.0 and x.max() == 1.0  # (uint8 / 255 - 0.5) / 0.5, black background
        assert set(y.tolist()) == set(range(10))


def test_synth_digits_format_and_exact_class_balance(synth: Domain, tmp_path: Path) -> None:
    _check_format(synth, "synth_digits", (3000, 500, 1000), 28)
    for split in SPLITS:
        counts = torch.bincount(synth.split(split).labels, minlength=10)
        assert (counts == counts[0]).all()
    other = synth_digits(str(tmp_path), image_size=32, **SMALL)
    _check_format(other, "synth_digits", (200, 50, 50), 32)


def test_hand_digits_format_and_stratified_split(hand: Domain, tmp_path: Path) -> None:
    _check_format(hand, "hand_digits", (1077, 360, 360), 28)
    everything = torch.cat([hand.split(s).labels for s in SPLITS])
    overall = torch.bincount(everything, minlength=10) / len(everything)
    for split in SPLITS:
        labels = hand.split(split).labels
        expected = overall * len(labels)
        assert (torch.bincount(labels, minlength=10) - expected).abs().max() <= 1.5
    _check_format(hand_digits(str(tmp_path), image_size=32), "hand_digits", (1077, 360, 360), 32)


def test_hand_digits_splits_share_no_image(hand: Domain) -> None:
    flat = {split: hand.split(split).inputs.flatten(1) for split in SPLITS}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert torch.cdist(flat[a], flat[b]).min() > 0


@pytest.mark.parametrize("build", [synth_digits, hand_digits])
def test_same_seed_same_data_other_seed_differs(build, tmp_path: Path) -> None:
    kwargs = SMALL if build is synth_digits else {}
    first = build(str(tmp_path / "a"), seed=0, **kwargs)
    again = build(str(tmp_path / "b"), seed=0, **kwargs)  # a fresh root: rebuilt, not reloaded
    other = build(str(tmp_path / "c"), seed=1, **kwargs)
    for split in SPLITS:
        assert torch.equal(first.split(split).inputs, again.split(split).inputs)
        assert torch.equal(first.split(split).labels, again.split(split).labels)
        assert not torch.equal(first.split(split).inputs, other.split(split).inputs)


def _fail(*args, **kwargs):
    raise AssertionError("the cached domain should have been loaded, not rebuilt")


@pytest.mark.parametrize(
    ("build", "module", "source"),
    [(synth_digits, synth_module, "render_glyphs"), (hand_digits, hand_module, "load_digits")],
)
def test_cache_is_reused_and_a_truncated_cache_rebuilt(
    build, module, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = SMALL if build is synth_digits else {}
    built = build(str(tmp_path), **kwargs)
    cache = Path(built.info["cache"])
    assert cache.parent == tmp_path / "embedded" and cache.is_file()

    with monkeypatch.context() as patch:
        patch.setattr(module, source, _fail)
        loaded = build(str(tmp_path), mean=0.0, std=1.0, **kwargs)  # normalisation isn't cached
    assert torch.allclose(loaded.test.inputs, built.test.inputs * 0.5 + 0.5)

    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    rebuilt = build(str(tmp_path), **kwargs)
    assert torch.equal(rebuilt.train.inputs, built.train.inputs)
    with monkeypatch.context() as patch:  # and the rebuilt file is whole again
        patch.setattr(module, source, _fail)
        build(str(tmp_path), **kwargs)


def test_every_digit_font_renders_ten_distinct_digits() -> None:
    glyphs = render_glyphs("0123456789", DIGIT_FONTS, size=32)
    assert glyphs.shape == (len(DIGIT_FONTS), 10, 32, 32)
    for font, digits in zip(DIGIT_FONTS, glyphs, strict=True):
        for glyph in digits:  # the larger side of its box fills 80% of the square: ~26 px
            rows, cols = torch.nonzero(glyph > 0, as_tuple=True)
            side = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
            assert abs(side - 0.8 * 32) <= 2, font
        assert (digits.flatten(1).amax(dim=1) > 0.5).all(), font
        distances = torch.cdist(digits.flatten(1), digits.flatten(1))
        assert distances[~torch.eye(10, dtype=torch.bool)].min() > 1.0, font


def test_render_glyphs_names_the_font_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="NoSuchFont.ttf"):
        render_glyphs("0", ["NoSuchFont.ttf"])
    with pytest.raises(ValueError, match="DejaVuSans.ttf"):
        render_glyphs(" ", ["DejaVuSans.ttf"])


def _accuracy(train: Domain, test: Domain) -> float:
    x, y = train.train.inputs.flatten(1).numpy(), train.train.labels.numpy()
    with threadpool_limits(1):  # BLAS threads fighting over a small problem make it 10x slower
        model = LogisticRegression(max_iter=100).fit(x, y)
    return model.score(test.test.inputs.flatten(1).numpy(), test.test.labels.numpy())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_linear_model_learns_each_domain(synth: Domain, hand: Domain) -> None:
    assert _accuracy(synth, synth) > 0.8
    assert _accuracy(hand, hand) > 0.85
