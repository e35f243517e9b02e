"""In-memory image domains: the one path from uint8 image arrays to a ``Domain``.

Digit domains of different origins (grey 16x16 USPS, grey 28x28 MNIST, colour 32x32 SVHN,
the embedded font and scan digits) pair only when they give one input shape;
``image_domain`` brings any of them to the ``channels`` x ``image_size`` x ``image_size``
a domain's YAML asks for, with the resizing, channel matching and normalisation here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.data.domain import SPLITS, Domain, TensorSplit
from tlframe.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what ImageNet-pretrained backbones expect
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as PIL's convert("L") and torchvision use
CHUNK = 4096  # images resized at once, bounding the float copy to ~50 MB at 32x32x3


def check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def match_channels(images: Tensor, channels: int) -> Tensor:
    """Float ``[N, C, H, W]`` with ``channels`` channels: grey is repeated (as a view, no
    copy), colour is averaged to luminance."""
    check_channels(channels)
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1)
    if have == 3:
        weights = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"images with {have} channels cannot be made {channels}-channel")


def normalise(
    images: Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> Tensor:
    """``(images - mean) / std`` with a scalar or a per-channel ``mean`` and ``std``."""
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype).reshape(shape)
    std_t = torch.as_tensor(std, dtype=images.dtype).reshape(shape)
    if mean_t.shape[1] not in (1, images.shape[1]) or std_t.shape[1] not in (1, images.shape[1]):
        raise ConfigError(
            f"mean {mean!r} and std {std!r} must be one number or one per channel "
            f"({images.shape[1]})"
        )
    return (images - mean_t) / std_t


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """uint8 ``[N, C, H, W]`` resized to ``size`` x ``size`` (bilinear, antialiased)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for start in range(0, len(images), CHUNK):
        part = images[start : start + CHUNK].float()
        resized = F.interpolate(
            part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + CHUNK] = resized.round().clamp(0, 255).to(torch.uint8)
    return out


def model_inputs(
    images: Tensor,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    channels: int | None = None,
) -> Tensor:
    """Normalised float inputs from uint8 ``[C, H, W]`` or ``[N, C, H, W]`` images, with
    ``channels`` channels (None: their own): the one conversion of images held in memory
    and of streamed ones, so that both give the same numbers."""
    single = images.dim() == 3
    x = (images[None] if single else images).float() / 255
    x = normalise(x if channels is None else match_channels(x, channels), mean, std)
    return x[0] if single else x.contiguous()


def _plain(value: float | Sequence[float]) -> float | list[float]:
    """A number or a list of numbers (not a config node), as a tensor can be made from."""
    return float(value) if isinstance(value, (int, float)) else [float(v) for v in value]


class ImageSplit(TensorSplit):
    """A split stored as uint8 images (a quarter of float32's memory; a grey image stays one
    channel even when the model sees three), converted to normalised float inputs a whole
    batch at a time. ``inputs`` holds the stored uint8 images; indexing gives model inputs.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        channels: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"expected uint8 [N, C, H, W] images, got {images.dtype} {images.shape}"
            )
        check_channels(channels)
        super().__init__(images, labels)
        self.channels, self.mean, self.std = channels, _plain(mean), _plain(std)
        normalise(torch.zeros(1, channels, 1, 1), mean, std)  # reject bad mean/std now

    def __getitem__(self, index) -> tuple[Tensor, Tensor | None]:
        images, labels = super().__getitem__(index)
        return model_inputs(images, self.mean, self.std, self.channels), labels

    def with_data(self, inputs: Tensor, labels: Tensor | None) -> ImageSplit:
        return ImageSplit(inputs, labels, self.channels, self.mean, self.std)


def _normalised(
    images: Tensor, channels: int, mean: float | Sequence[float], std: float | Sequence[float]
) -> Tensor:
    """Float model inputs from uint8 images. With one mean and std a grey image repeated
    into RGB stays a view of its one channel; per-channel ones (a pretrained model's) are
    those of the channels the model reads."""
    x = images.float() / 255
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        return match_channels((x - mean) / std, channels)
    return normalise(match_channels(x, channels), _plain(mean), _plain(std))


def image_domain(
    name: str,
    arrays: dict[str, tuple[Tensor, Tensor]],
    class_names: Sequence[str],
    image_size: int,
    channels: int | None,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    info: dict,
    stored: str = "float",
) -> Domain:
    """A ``Domain`` from uint8 ``[N, C, H, W]`` images and labels per split, resized to
    ``image_size`` with ``channels`` channels (None: the images' own; grey is repeated as a
    view, colour averaged to luminance) and normalised. ``stored="float"`` normalises once
    and keeps float inputs (small data sets); ``"uint8"`` keeps the images as uint8 and
    converts a batch at a time (a quarter of the memory: the torchvision benchmarks)."""
    channels = channels or int(arrays["train"][0].shape[1])
    check_channels(channels)
    splits = {}
    for split in SPLITS:
        images, labels = arrays[split]
        images = resize_uint8(images, image_size)
        if stored == "uint8":
            splits[split] = ImageSplit(images, labels.long(), channels, mean, std)
        else:
            splits[split] = TensorSplit(_normalised(images, channels, mean, std), labels.long())
    return Domain(
        name=name,
        class_names=list(class_names),
        input_shape=(channels, image_size, image_size),
        **splits,
        info=info,
    )
