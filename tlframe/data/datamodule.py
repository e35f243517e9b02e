"""The TransferDataModule: pairs a source and a target domain for one training stage."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from tlframe.data.domain import Domain, TensorSplit, split_labels
from tlframe.data.labels import LabelRegime, hold_out, k_per_class, parse_regime
from tlframe.data.loaders import AUTO_WORKERS_MAX, eval_loader, train_loader, worker_count
from tlframe.errors import ConfigError

log = logging.getLogger(__name__)

LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers")
STREAMS = {"source": 0, "target": 1}  # each domain's training order has its own random stream


class TransferDataModule(pl.LightningDataModule):
    """Training batches ``{"source": (x, y), "target": (x, y or None)}`` for the domains a
    stage trains on, each with the labels its regime allows; evaluation on the val and test
    splits of both domains, each batch tagged with its domain and split.

    ``train_on`` maps a domain role (``source``/``target``) to its label regime: ``all``,
    ``none`` or ``k`` labeled examples per class (drawn with ``seed``).

    In a distributed run (``trainer=ddp``) ``batch_size`` and ``steps_per_epoch`` are per
    process: each process trains on its own slice of every epoch's shuffle of each domain,
    so an epoch covers ``world_size`` times as many examples. Evaluation loaders are not
    sharded: every process evaluates the whole splits (same weights, same figures), so
    selection criteria that need a whole split (entropy, SND, clustering) stay exact.
    """

    def __init__(
        self,
        domains: Mapping[str, Domain],
        train_on: Mapping[str, object],
        batch_size: int = 128,
        eval_batch_size: int = 512,
        steps_per_epoch: int = 100,
        seed: int = 0,
        holdout_fraction: float | None = None,
        **loader_options,
    ):
        super().__init__()
        unknown = set(train_on) - set(domains)
        if unknown:
            raise ConfigError(
                f"a stage trains on {sorted(unknown)} but only {sorted(domains)} exist"
            )
        if batch_size < 1 or steps_per_epoch < 1:
            raise ConfigError("data.batch_size and data.steps_per_epoch must be positive integers")
        self.domains = dict(domains)
        self.regimes: dict[str, LabelRegime] = {d: parse_regime(r) for d, r in train_on.items()}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.holdout_fraction = holdout_fraction
        if holdout_fraction is not None and not isinstance(self.regimes.get("target"), int):
            raise ConfigError(
                "a held-out selection split needs a stage that trains on k labeled target "
                "examples per class (data.target_labels=k)"
            )
        self.loader_cfg = {k: v for k, v in loader_options.items() if k in LOADER_KEYS}
        streamed = sorted(
            {d.name for d in self.domains.values() if not isinstance(d.train, TensorSplit)}
        )
        if streamed and self.loader_cfg.get("num_workers") == "auto":
            log.info(
                "%s streamed from disk: %d DataLoader workers per loader (data.num_workers="
                "auto: one per core, at most %d)",
                ", ".join(streamed), worker_count("auto"), AUTO_WORKERS_MAX,
            )  # fmt: skip

    def labeled_indices(self, role: str) -> tuple[Tensor, Tensor | None]:
        """Indices of ``role``'s k labeled training examples per class that train, and of
        those held out for selection (None without a held-out split)."""
        domain = self.domains[role]
        labels = split_labels(domain.train)
        indices = k_per_class(labels, self.regimes[role], self.seed, domain=domain.name)
        if role != "target" or self.holdout_fraction is None:
            return indices, None
        return hold_out(labels, indices, self.holdout_fraction, self.seed)

    def labeled_train_split(self, role: str):
        """The training split of ``role`` restricted to what its regime may see (less the
        examples held out for selection)."""
        domain, regime = self.domains[role], self.regimes[role]
        if isinstance(regime, int):
            return _subset(domain.train, self.labeled_indices(role)[0])
        return domain.train

    def process_slot(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this process in the trainer's run (``(0, 1)`` alone)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> CombinedLoader:
        loaders = {}
        rank, world_size = self.process_slot()
        for i, (role, regime) in enumerate(self.regimes.items()):
            dataset = self.labeled_train_split(role)
            loaders[role] = train_loader(
                dataset,
                self.batch_size,
                self.steps_per_epoch,
                regime != "none",
                self.loader_cfg,
                seed=self.seed,
                stream=STREAMS.get(role, len(STREAMS) + i),
                rank=rank,
                world_size=world_size,
            )
            log.info(
                "train on %s (%s): %d examples, labels=%s",
                role,
                self.domains[role].name,
                len(dataset),
                regime,
            )
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loaders(self, splits: tuple[str, ...]) -> list[DataLoader]:
        return [
            eval_loader(domain.split(split), role, split, self.eval_batch_size, self.loader_cfg)
            for split in splits
            for role, domain in self.domains.items()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        loaders = self._eval_loaders(("val",))
        if self.holdout_fraction is not None:  # batches tagged split "holdout"
            held = _subset(self.domains["target"].train, self.labeled_indices("target")[1])
            loaders.append(
                eval_loader(held, "target", "holdout", self.eval_batch_size, self.loader_cfg)
            )
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        """Both splits of both domains, so the final record has val and test figures."""
        return self._eval_loaders(("val", "test"))


def _subset(dataset: Dataset, indices: Tensor) -> Dataset:
    return dataset.subset(indices) if isinstance(dataset, TensorSplit) else Subset(dataset, indices)
