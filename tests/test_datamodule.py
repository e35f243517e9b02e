"""The TransferDataModule's batch contract and label regimes."""

from __future__ import annotations

import pytest
import torch

from tlframe.data.datamodule import TransferDataModule
from tlframe.data.domain import Domain, TensorSplit
from tlframe.errors import ConfigError


def toy_domain(name: str, n: int = 60, classes: int = 3, offset: float = 0.0) -> Domain:
    def split(count: int, seed: int) -> TensorSplit:
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(count) % classes
        return TensorSplit(torch.randn(count, 4, generator=g) + offset + y[:, None], y)

    return Domain(
        name, [str(c) for c in range(classes)], (4,), split(n, 0), split(12, 1), split(9, 2)
    )


DOMAINS = {"source": toy_domain("a"), "target": toy_domain("b", offset=5.0)}


def batches(dm: TransferDataModule) -> list:
    loader = dm.train_dataloader()
    iter(loader)
    return list(loader)


def test_training_batch_pairs_domains_and_hides_target_labels():
    dm = TransferDataModule(
        DOMAINS, {"source": "all", "target": "none"}, batch_size=8, steps_per_epoch=5
    )
    items = batches(dm)
    assert len(items) == 5
    batch = items[0][0]
    assert set(batch) == {"source", "target"}
    xs, ys = batch["source"]
    xt, yt = batch["target"]
    assert xs.shape == (8, 4) and ys.shape == (8,) and xt.shape == (8, 4)
    assert yt is None


def test_k_labels_per_class_are_drawn_with_the_seed():
    dm = TransferDataModule(DOMAINS, {"target": 2}, batch_size=4, steps_per_epoch=3, seed=1)
    subset = dm.labeled_train_split("target")
    assert torch.bincount(subset.labels).tolist() == [2, 2, 2]
    again = TransferDataModule(DOMAINS, {"target": 2}, seed=1).labeled_train_split("target")
    other = TransferDataModule(DOMAINS, {"target": 2}, seed=2).labeled_train_split("target")
    assert torch.equal(subset.inputs, again.inputs)
    assert not torch.equal(subset.inputs, other.inputs)
    for batch, *_ in batches(dm):  # a small labeled set is cycled to fill the epoch
        assert set(batch) == {"target"} and batch["target"][1] is not None


def test_too_many_labels_per_class_is_a_clear_error():
    dm = TransferDataModule(DOMAINS, {"target": 500})
    with pytest.raises(ConfigError, match="fewer than data.target_labels=500"):
        dm.labeled_train_split("target")


def test_evaluation_batches_carry_domain_and_split():
    dm = TransferDataModule(DOMAINS, {"source": "all"}, eval_batch_size=5)
    tags = {(b["domain"], b["split"]) for loader in dm.test_dataloader() for b in loader}
    assert tags == {("source", "val"), ("target", "val"), ("source", "test"), ("target", "test")}
    total = sum(len(b["y"]) for b in dm.val_dataloader()[1])
    assert total == len(DOMAINS["target"].val)  # evaluation sees every example once


def test_streamed_datasets_use_the_same_contract():
    class PerItem(torch.utils.data.Dataset):
        def __init__(self, split: TensorSplit):
            self.split = split

        def __len__(self) -> int:
            return len(self.split)

        def __getitem__(self, i: int):
            return self.split.inputs[i], int(self.split.labels[i])

    wrapped = {
        role: Domain(
            d.name, d.class_names, d.input_shape, PerItem(d.train), PerItem(d.val), PerItem(d.test)
        )
        for role, d in DOMAINS.items()
    }
    dm = TransferDataModule(
        wrapped, {"source": "all", "target": "none"}, batch_size=6, steps_per_epoch=2
    )
    batch = batches(dm)[0][0]
    assert batch["source"][1].shape == (6,) and batch["target"][1] is None
    eval_batch = next(iter(dm.val_dataloader()[0]))
    assert eval_batch["domain"] == "source" and eval_batch["y"].dtype == torch.long
