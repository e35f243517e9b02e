"""DataLoaders for in-memory and streamed splits.

In-memory splits (``TensorSplit``) are indexed a whole batch at a time: the sampler yields
a tensor of indices and one tensor indexing builds the batch, with no per-sample Python work.
Other datasets go through the usual per-item path with workers.

Training order is drawn by ``EpochSampler``: each epoch one shuffle, seeded by the run's seed,
the domain and the epoch number, is shared by all processes of a distributed run, and each
process takes its own slice of it. Evaluation loaders read whole splits in order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from tlframe.data.domain import TensorSplit


class EpochSampler(Sampler[int]):
    """``num_samples`` shuffled indices per epoch for process ``rank`` of ``world_size``.

    Every process draws the same shuffle of ``num_samples * world_size`` indices (whole
    permutations of the data set, repeated as often as needed, as ``RandomSampler`` does
    for more samples than examples) from a generator seeded by ``seed``, ``stream`` (one per
    domain) and the epoch, and keeps every ``world_size``-th index from position ``rank``:
    the processes see different examples and run the same number of steps. With one
    process it is a seeded shuffle. Lightning calls ``set_epoch`` before each epoch (also
    after a resume); without it the epoch advances on each pass.
    """

    def __init__(
        self,
        size: int,
        num_samples: int,
        seed: int = 0,
        stream: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if size < 1:
            raise ValueError("cannot sample from an empty data set")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.size, self.num_samples = size, num_samples
        self.seed, self.stream = seed, stream
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This process's indices for ``epoch``."""
        entropy = [self.seed % 2**63, self.stream, epoch]
        state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state) >> 1)
        total = self.num_samples * self.world_size
        order = torch.cat(
            [
                torch.randperm(self.size, generator=generator)
                for _ in range(math.ceil(total / self.size))
            ]
        )
        return order[:total][self.rank :: self.world_size]

    def next_order(self) -> torch.Tensor:
        """The indices of the current epoch, advancing to the next one."""
        order = self.epoch_order(self.epoch)
        self.epoch += 1
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.next_order().tolist())


class _BatchSampler(BatchSampler):
    """A ``BatchSampler`` that hands ``set_epoch`` on to its sampler (Lightning calls it on
    a loader's ``sampler``, which for batch-indexed splits is this object).

    Over an ``EpochSampler`` it yields each batch's indices as a slice of the epoch's index
    tensor rather than a list built one Python int at a time (about 30 us less per batch).
    """

    def __iter__(self) -> Iterator[torch.Tensor | list[int]]:
        if not isinstance(self.sampler, EpochSampler):
            yield from super().__iter__()
            return
        order = self.sampler.next_order()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        yield from order[:stop].split(self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class Unlabeled:
    """Collate that drops labels, so a method without access to them gets ``(x, None)``."""

    def __init__(self, batched: bool):
        self.batched = batched

    def __call__(self, batch: Any) -> tuple[Any, None]:
        x, _ = batch if self.batched else default_collate(batch)
        return x, None


class Tagged:
    """Collate that marks an evaluation batch with the domain and split it came from."""

    def __init__(self, domain: str, split: str, batched: bool):
        self.domain, self.split, self.batched = domain, split, batched

    def __call__(self, batch: Any) -> dict[str, Any]:
        x, y = batch if self.batched else default_collate(batch)
        return {"x": x, "y": y, "domain": self.domain, "split": self.split}


AUTO_WORKERS_MAX = 8  # data.num_workers=auto: at most this many workers per loader


def worker_count(option: int | str) -> int:
    """``data.num_workers`` as a number: ``auto`` is one worker per core this process may
    use, at most ``AUTO_WORKERS_MAX`` (decoding and augmenting a batch of photos on one
    core would starve even a CPU model; more workers than that seldom help)."""
    if option == "auto":
        return min(AUTO_WORKERS_MAX, len(os.sched_getaffinity(0)) or 1)
    return int(option)


def _loader(dataset: Dataset, sampler, batch_size: int, collate, loader_cfg: dict) -> DataLoader:
    if isinstance(dataset, TensorSplit):
        batches = _BatchSampler(sampler, batch_size, drop_last=isinstance(sampler, EpochSampler))
        pin = bool(loader_cfg.get("pin_memory", False))
        return DataLoader(
            dataset, batch_size=None, sampler=batches, collate_fn=collate, pin_memory=pin
        )
    workers = worker_count(loader_cfg.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=isinstance(sampler, EpochSampler),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=bool(loader_cfg.get("pin_memory", False)),
        persistent_workers=bool(loader_cfg.get("persistent_workers", False)) and workers > 0,
    )


def train_loader(
    dataset: Dataset,
    batch_size: int,
    num_batches: int,
    labeled: bool,
    loader_cfg: dict,
    seed: int = 0,
    stream: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Exactly ``num_batches`` shuffled batches per epoch, cycling small data sets.

    A fixed epoch length keeps domains of different sizes in step inside a CombinedLoader
    and makes the training budget independent of how many labels a setting has. In a
    distributed run every process gets ``num_batches`` batches of ``batch_size`` (per
    process) from its own slice of the epoch's shuffle (``EpochSampler``).
    """
    batched = isinstance(dataset, TensorSplit)
    if batched and not labeled:
        dataset, collate = dataset.unlabeled(), None
    else:
        collate = None if labeled else Unlabeled(batched)
    if collate is None and not batched:
        collate = default_collate
    sampler = EpochSampler(len(dataset), num_batches * batch_size, seed, stream, rank, world_size)
    return _loader(dataset, sampler, batch_size, collate, loader_cfg)


def eval_loader(
    dataset: Dataset, domain: str, split: str, batch_size: int, loader_cfg: dict
) -> DataLoader:
    batched = isinstance(dataset, TensorSplit)
    collate = Tagged(domain, split, batched)
    return _loader(dataset, SequentialSampler(dataset), batch_size, collate, loader_cfg)
