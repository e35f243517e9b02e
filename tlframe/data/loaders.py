"""DataLoaders for in-memory and streamed splits.

In-memory splits (``TensorSplit``) are indexed a whole batch at a time: the sampler yields
lists of indices and one tensor indexing builds the batch, with no per-sample Python work.
Other datasets go through the usual per-item path with workers.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from tlframe.data.domain import TensorSplit


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


def _loader(dataset: Dataset, sampler, batch_size: int, collate, loader_cfg: dict) -> DataLoader:
    if isinstance(dataset, TensorSplit):
        batches = BatchSampler(sampler, batch_size, drop_last=isinstance(sampler, RandomSampler))
        pin = bool(loader_cfg.get("pin_memory", False))
        return DataLoader(
            dataset, batch_size=None, sampler=batches, collate_fn=collate, pin_memory=pin
        )
    workers = int(loader_cfg.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=isinstance(sampler, RandomSampler),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=bool(loader_cfg.get("pin_memory", False)),
        persistent_workers=bool(loader_cfg.get("persistent_workers", False)) and workers > 0,
    )


def train_loader(
    dataset: Dataset, batch_size: int, num_batches: int, labeled: bool, loader_cfg: dict
) -> DataLoader:
    """Exactly ``num_batches`` shuffled batches per epoch, cycling small data sets.

    A fixed epoch length keeps domains of different sizes in step inside a CombinedLoader
    and makes the training budget independent of how many labels a setting has.
    """
    batched = isinstance(dataset, TensorSplit)
    if batched and not labeled:
        dataset, collate = dataset.unlabeled(), None
    else:
        collate = None if labeled else Unlabeled(batched)
    if collate is None and not batched:
        collate = default_collate
    sampler = RandomSampler(dataset, replacement=False, num_samples=num_batches * batch_size)
    return _loader(dataset, sampler, batch_size, collate, loader_cfg)


def eval_loader(
    dataset: Dataset, domain: str, split: str, batch_size: int, loader_cfg: dict
) -> DataLoader:
    batched = isinstance(dataset, TensorSplit)
    collate = Tagged(domain, split, batched)
    return _loader(dataset, SequentialSampler(dataset), batch_size, collate, loader_cfg)
