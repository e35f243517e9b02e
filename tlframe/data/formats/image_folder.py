"""Image-folder domains: any ``root/<class>/<image>`` tree, streamed from disk.

The tree is scanned as torchvision's ImageFolder scans it (class names are the folder names, sorted,
so two domains with the same folders get the same classes in the same order). A root that
holds only ``train/`` (and optionally ``val/``, ``test/``) folders of such trees uses them
as its splits; a missing split, or all three for a plain tree, is split off the training
images, stratified, with ``seed``. Images are decoded in DataLoader workers
(``data.num_workers``), or, when nothing about them is drawn at random and they fit in
memory, decoded once and held as uint8 tensors (``decode``, ``decode_in_memory``).

What the transforms do is chosen from the images unless the YAML sets it (``choose_inputs``):
small images (digits, object thumbnails: at most ``SMALL`` pixels a side) are read whole
at their own size, grey when they are grey, without crops or flips, and scaled to [-1, 1]
(mean 0.5, std 0.5, the digit adaptation recipes'); larger ones (photos) get
ImageNet's recipe: 256-pixel resize, 224 crops (random, with flips, when training) and
ImageNet's statistics, as pretrained backbones expect.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from tlframe.data.domain import SPLITS, Domain
from tlframe.data.files import fetch, override, relocate_hint
from tlframe.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageSplit, model_inputs
from tlframe.data.splits import split_pool
from tlframe.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SMALL = 64  # pixels a side at most: read whole, at their own size
PROBE = 256  # training images looked at for the size and the colours
# Small images are scaled to [-1, 1] by fixed constants, as the digit adaptation recipes do
# (DANN's and ADDA's digit experiments, tllib): per-domain statistics would hand a
# source-only control the target's input statistics, a first step of adaptation.
SMALL_MEAN, SMALL_STD = (0.5,), (0.5,)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
DECODE_CHOICES = ("auto", True, False)
DECODE_LIMIT_MB = 1024  # decode=auto holds a folder's uint8 images in memory up to this


class UnreadableImageError(DataError):
    """An image file that cannot be decoded.

    Raised in a DataLoader worker, torch re-raises it in the main process with the worker's
    traceback as its message; ``str`` keeps only the line that names the file.
    """

    PREFIX = "cannot read image "

    def __str__(self) -> str:
        text = super().__str__()
        lines = [line for line in text.splitlines() if self.PREFIX in line]
        return lines[-1][lines[-1].index(self.PREFIX) :] if lines else text


def read_image(path: str, mode: str = "RGB") -> Image.Image:
    """The decoded image at ``path`` in ``mode`` (RGB or L), or an ``UnreadableImageError``
    naming it."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UnreadableImageError(
            f"{UnreadableImageError.PREFIX}{path} ({reason}); replace or delete the file"
        ) from err


class FolderSplit(Dataset):
    """``(path, class index)`` samples decoded and transformed one at a time: ``pixels``
    gives the uint8 image (resize, crop), which ``model_inputs`` turns into the model's
    input as it does for images held in memory, so that both give the same numbers."""

    def __init__(self, samples: Sequence[tuple[str, int]], pixels, inputs: Inputs):
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.pixels, self.inputs = pixels, inputs
        self.mode = "L" if inputs.channels == 1 else "RGB"
        to_input = partial(model_inputs, mean=list(inputs.mean), std=list(inputs.std))
        self.transform = v2.Compose([pixels, to_input])  # as a torchvision dataset's

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_image(path, self.mode)), label

    def decoded(self) -> ImageSplit:
        """Every image decoded once, held as uint8 and normalised a batch at a time: what
        streaming gives, when ``pixels`` draws nothing at random."""
        images = [self.pixels(read_image(path, self.mode)) for path, _ in self.samples]
        stacked = torch.stack(images) if images else torch.empty(0, self.inputs.channels, 0, 0)
        labels = torch.as_tensor(self.targets, dtype=torch.long)
        inputs = self.inputs
        return ImageSplit(stacked.contiguous(), labels, inputs.channels, inputs.mean, inputs.std)


def pixel_transform(
    train: bool, image_size: int, resize_size: int, augment: bool, interpolation: str = "bilinear"
) -> v2.Compose:
    """Resize the shorter side to ``resize_size`` (with ``interpolation``) and crop
    ``image_size`` (random + flips when training with ``augment``, else centred): a uint8
    ``[C, H, W]`` image."""
    if resize_size < image_size:
        raise ConfigError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
    modes = [mode.value for mode in v2.InterpolationMode]
    if interpolation not in modes:
        raise ConfigError(f"interpolation must be one of {', '.join(modes)}, got {interpolation!r}")
    crop = (
        [v2.RandomCrop(image_size), v2.RandomHorizontalFlip()]
        if train and augment
        else [v2.CenterCrop(image_size)]
    )
    resize = v2.Resize(resize_size, interpolation=v2.InterpolationMode(interpolation))
    return v2.Compose([resize, *crop, v2.ToImage()])


def _scan(folder: Path, class_to_idx: dict[str, int] | None) -> tuple[list[str], list]:
    """Classes and samples of one tree. Given ``class_to_idx`` (the training split's), the
    tree is a val/test split: it may lack a class, but may not add one."""
    is_split = class_to_idx is not None
    try:
        classes, found = find_classes(str(folder))
        extra = sorted(set(classes) - set(class_to_idx or found))
        if extra:
            raise DataError(
                f"{folder} has classes the training images lack: {extra}; every split "
                "needs the training split's class folders"
            )
        class_to_idx = class_to_idx or found
        samples = make_dataset(
            str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=is_split
        )
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DataError(f"{folder}: {' '.join(str(err).split())}") from err
    if not samples:
        raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    return sorted(class_to_idx, key=class_to_idx.get), samples


def _split_folders(root: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when ``root`` holds only split folders (``train`` and maybe
    ``val``, ``test``), else ``None`` (``root`` is itself the class tree)."""
    names = {p.name for p in root.iterdir() if p.is_dir()}
    if "train" in names and names <= set(SPLITS):
        return {split: root / split for split in SPLITS if split in names}
    return None


@dataclass(frozen=True)
class Inputs:
    """How a folder's images become model inputs."""

    channels: int
    image_size: int
    resize_size: int
    augment: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


def choose_inputs(
    samples: Sequence[tuple[str, int]],
    channels: int | None,
    image_size: int | None,
    resize_size: int | None,
    augment: bool | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> tuple[Inputs, str]:
    """The options the YAML left to tlframe (None), chosen from up to ``PROBE`` evenly
    spaced training images, and what was chosen, for the log."""
    probe = [
        samples[i][0]
        for i in np.linspace(0, len(samples) - 1, min(PROBE, len(samples))).astype(int)
    ]
    opened = [_size_and_mode(path) for path in probe]
    side = max(max(size) for size, _ in opened)
    small = side <= SMALL
    grey = all(mode in GREY_MODES for _, mode in opened)
    channels = channels or (1 if grey and small else 3)
    image_size = image_size or (side if small else 224)
    resize_size = resize_size or (image_size if small else 256)
    augment = (not small) if augment is None else augment
    told = [f"{'grey' if channels == 1 else 'colour'} {image_size}x{image_size} inputs"]
    told.append("random crops and flips" if augment else "no augmentation")
    if mean is None or std is None:
        if small:  # every domain scaled alike, so a source-only control reads no target input
            mean, std = mean or SMALL_MEAN * channels, std or SMALL_STD * channels
            told.append(f"mean {_numbers(mean)}, std {_numbers(std)} (pixels to [-1, 1])")
        else:
            mean, std = mean or IMAGENET_MEAN[:channels], std or IMAGENET_STD[:channels]
            told.append("ImageNet's mean and std")
    inputs = Inputs(channels, image_size, resize_size, augment, tuple(mean), tuple(std))
    return inputs, ", ".join(told)


def _size_and_mode(path: str) -> tuple[tuple[int, int], str]:
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        read_image(path)  # raises the one-line error naming the file
        raise


def _numbers(values: Sequence[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)


def image_folder(
    root: str,
    name: str = "image_folder",
    role: str | None = None,
    download: bool = False,
    url: str | None = None,
    md5: str | None = None,
    instructions: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    channels: int | None = None,
    image_size: int | None = None,
    resize_size: int | None = None,
    augment: bool | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    decode: str | bool = "auto",
) -> Domain:
    """A streamed domain over the image tree at ``root`` (see the module docstring).

    ``url`` (+ ``md5``) is an archive that unpacks to ``root`` inside its parent folder,
    fetched only with ``download``; ``instructions`` tell the user how to get the data
    where no stable URL exists. The input options left None are chosen from the images;
    ``interpolation`` (None: bilinear) is a timm model's when ``backbone=timm``.
    ``decode`` says whether the images may be decoded once and held in memory
    (``decode_in_memory``).
    """
    folder = Path(root)
    if download and url and not folder.is_dir():
        parent = folder.parent
        fetch(name, parent, lambda: download_and_extract_archive(url, str(parent), md5=md5))
    if not folder.is_dir():
        fixes = [f"add {override(role, 'download', 'true')} to download {url}"] if url else []
        fixes += [instructions] if instructions else []
        fixes.append(relocate_hint(role, "the class folders"))
        raise DataError(
            f"{name}: no image folder at {folder} (expected <class>/<image> folders, or "
            "train/ val/ test/ folders of them); " + ", ".join(fixes)
        )
    samples = _split_samples(folder, val_fraction, test_fraction, seed)
    classes = samples.pop("classes")
    inputs, told = choose_inputs(
        samples["train"], channels, image_size, resize_size, augment, mean, std
    )
    log.info("%s: %s", name, told)
    interpolation = interpolation or "bilinear"
    splits = {
        split: FolderSplit(
            samples[split],
            pixel_transform(
                split == "train",
                inputs.image_size,
                inputs.resize_size,
                inputs.augment,
                interpolation,
            ),
            inputs,
        )
        for split in SPLITS
    }
    return Domain(
        name=name,
        class_names=classes,
        input_shape=(inputs.channels, inputs.image_size, inputs.image_size),
        **splits,
        info={"root": str(folder), "inputs": told, "decode": _decode_choice(decode, inputs)},
    )


def _decode_choice(decode: str | bool, inputs: Inputs) -> str | bool:
    """``decode`` checked against the inputs: images drawn at random per step (``augment``)
    cannot be decoded once."""
    if decode not in DECODE_CHOICES:
        raise ConfigError(f"decode must be auto, true or false, got {decode!r}")
    if decode is True and inputs.augment:
        raise ConfigError(
            "decode=true holds each image decoded once, but augment draws random crops at "
            "every step; set augment=false or decode=auto"
        )
    return False if inputs.augment else decode


def decode_in_memory(domains: dict[str, Domain]) -> None:
    """Image-folder domains that ask for it (``decode``: true, or auto within
    ``DECODE_LIMIT_MB`` of uint8 images) are decoded once and held in memory, so that a
    step slices a batch instead of reading and transforming files: the same inputs
    streaming gives, when nothing is drawn at random. Called once the inputs are settled
    (after pairing), so no folder is decoded twice."""
    done: set[int] = set()
    for role, domain in domains.items():
        choice = domain.info.get("decode", False)
        if id(domain) in done or choice is False or not isinstance(domain.train, FolderSplit):
            continue
        done.add(id(domain))
        count = sum(len(domain.split(split)) for split in SPLITS)
        megabytes = count * math.prod(domain.input_shape) / 2**20
        if choice == "auto" and megabytes > DECODE_LIMIT_MB:
            log.info(
                "%s %s: %d images (%.0f MB decoded) are streamed from disk, over the %d MB "
                "that decode=auto holds in memory (%s.decode=true to hold them)",
                role, domain.name, count, megabytes, DECODE_LIMIT_MB, role,
            )  # fmt: skip
            continue
        for split in SPLITS:
            setattr(domain, split, domain.split(split).decoded())
        log.info(
            "%s %s: %d images decoded once and held in memory (%.0f MB; %s.decode=false "
            "streams them instead)",
            role, domain.name, count, megabytes, role,
        )  # fmt: skip


def _split_samples(folder: Path, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """``{"classes": names, split: samples}`` from split folders or by splitting one tree."""
    split_dirs = _split_folders(folder) or {"train": folder}
    classes, train = _scan(split_dirs["train"], None)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    given = {s: _scan(d, class_to_idx)[1] for s, d in split_dirs.items() if s != "train"}
    fractions = {"test": test_fraction, "val": val_fraction}
    carve = {s: f for s, f in fractions.items() if s not in given}
    if carve:
        parts = split_pool([label for _, label in train], seed, **carve)
        given.update({s: [train[i] for i in idx] for s, idx in parts.items()})
    else:
        given["train"] = train
    return {"classes": classes, **given}
