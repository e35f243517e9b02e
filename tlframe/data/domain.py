"""A domain: labeled train/val/test splits of one data distribution, with its classes.

Small domains keep their splits in memory as tensors (``TensorSplit``) so that a batch is
one indexing operation; large ones may hold any map-style ``Dataset`` of ``(x, y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

SPLITS = ("train", "val", "test")


class TensorSplit(Dataset):
    """One split held as tensors; indexing with a list of indices returns a whole batch.

    ``labels`` may be ``None`` for an unlabeled view: batches are then ``(x, None)``.
    """

    def __init__(self, inputs: Tensor, labels: Tensor | None):
        if labels is not None and len(labels) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor | None]:
        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.long)
        y = None if self.labels is None else self.labels[index]
        return self.inputs[index], y

    def with_data(self, inputs: Tensor, labels: Tensor | None) -> TensorSplit:
        """A split of the same kind (and input conversion) holding other examples."""
        return TensorSplit(inputs, labels)

    def subset(self, indices: Tensor) -> TensorSplit:
        labels = None if self.labels is None else self.labels[indices]
        return self.with_data(self.inputs[indices], labels)

    def unlabeled(self) -> TensorSplit:
        return self.with_data(self.inputs, None)

    def targets(self) -> Tensor:
        """All labels of the split (for stratified sampling)."""
        if self.labels is None:
            raise ValueError("this split has no labels")
        return self.labels


def batches(dataset: Dataset, batch_size: int = 512):
    """``(x, y)`` batches of a split in order, as the model reads them: a tensor split is
    indexed a batch at a time (an image split converts its stored images), any other
    dataset goes through a ``DataLoader``."""
    if isinstance(dataset, TensorSplit):
        for start in range(0, len(dataset), batch_size):
            yield dataset[torch.arange(start, min(start + batch_size, len(dataset)))]
    else:
        yield from DataLoader(dataset, batch_size=batch_size)


@dataclass
class Domain:
    """A named data distribution with train/val/test splits over ``class_names``."""

    name: str
    class_names: list[str]
    input_shape: tuple[int, ...]
    train: Dataset
    val: Dataset
    test: Dataset
    class_attributes: Tensor | None = None  # [classes, D] side information (zero-shot)
    info: dict = field(default_factory=dict)
    seen_classes: list[int] | None = None  # zero-shot: classes with training examples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def split_labels(dataset: Dataset) -> Tensor:
    """The labels of a split, without loading its inputs where the dataset allows it."""
    if isinstance(dataset, TensorSplit):
        return dataset.targets()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
