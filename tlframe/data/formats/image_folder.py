"""Image-folder domains: any ``root/<class>/<image>`` tree, streamed from disk.

The tree is scanned as torchvision's ImageFolder scans it (class names are the folder names, sorted,
so two domains with the same folders get the same classes in the same order). A root that
holds only ``train/`` (and optionally ``val/``, ``test/``) folders of such trees uses them
as its splits; a missing split, or all three for a plain tree, is split off the training
images, stratified, with ``seed``. Images are decoded in DataLoader workers
(``data.num_workers``) with the usual ImageNet-style transforms from the domain's YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from tlframe.data.domain import SPLITS, Domain
from tlframe.data.files import fetch, override, relocate_hint
from tlframe.data.splits import split_pool
from tlframe.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def read_rgb(path: str) -> Image.Image:
    """The decoded image at ``path`` in RGB, or an ``UnreadableImageError`` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UnreadableImageError(
            f"{UnreadableImageError.PREFIX}{path} ({reason}); replace or delete the file"
        ) from err


class FolderSplit(Dataset):
    """``(path, class index)`` samples decoded and transformed one at a time."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform):
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_rgb(path)), label


def folder_transform(
    train: bool,
    image_size: int,
    resize_size: int,
    augment: bool,
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Compose:
    """Resize the shorter side to ``resize_size``, crop ``image_size`` (random + flips when
    training with ``augment``, else centred), scale to [0, 1] and normalise."""
    if resize_size < image_size:
        raise ConfigError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
    crop = (
        [v2.RandomCrop(image_size), v2.RandomHorizontalFlip()]
        if train and augment
        else [v2.CenterCrop(image_size)]
    )
    return v2.Compose(
        [
            v2.Resize(resize_size),
            *crop,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


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
    image_size: int = 224,
    resize_size: int = 256,
    augment: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Domain:
    """A streamed domain over the image tree at ``root`` (see the module docstring).

    ``url`` (+ ``md5``) is an archive that unpacks to ``root`` inside its parent folder,
    fetched only with ``download``; ``instructions`` tell the user how to get the data
    where no stable URL exists.
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
    transforms = {
        train: folder_transform(train, image_size, resize_size, augment, mean, std)
        for train in (True, False)
    }
    samples = _split_samples(folder, val_fraction, test_fraction, seed)
    classes = samples.pop("classes")
    splits = {split: FolderSplit(samples[split], transforms[split == "train"]) for split in SPLITS}
    return Domain(
        name=name,
        class_names=classes,
        input_shape=(3, image_size, image_size),
        **splits,
        info={"root": str(folder)},
    )


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
