"""Self-taught clustering: group the unlabeled target by k-means on backbone features.

``KMeansClusters`` is an evaluator: at test time it clusters each target split (val, test)
into as many clusters as the target has classes, with the backbone it inherited (learned
on unlabeled source data by the pretraining stage) or, as the first stage of a method,
with an untrained one (``backbone=mlp backbone.hidden_dims=[]`` is k-means on raw pixels).
The labels only score the clusters: ``{split}/target/cluster_acc`` (accuracy under the best
one-to-one cluster-to-class map, found by the Hungarian algorithm) and ``{split}/target/nmi``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.engine.context import StageContext
from tlframe.engine.evaluation import Evaluator
from tlframe.engine.method import Method, Stage, method
from tlframe.engine.model import FeatureExtractor, TransferModel
from tlframe.engine.objective import Objective
from tlframe.methods.pretext import PRETEXT
from tlframe.methods.self_taught import pretrain_stage

if TYPE_CHECKING:
    import pytorch_lightning as pl


def cluster_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of examples whose cluster maps to their class under the one-to-one map of
    clusters to classes that maximises it (Hungarian matching on the contingency table)."""
    from scipy.optimize import linear_sum_assignment

    labels, clusters = np.asarray(labels), np.asarray(clusters)
    size = max(labels.max(), clusters.max()) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


class KMeansClusters(Evaluator):
    """k-means (k = the target's classes) on the model's features of each target split, at
    test time; the stage trains nothing (0 epochs, no objectives)."""

    def __init__(
        self,
        *,
        model: TransferModel | None = None,
        context: StageContext,
        objectives=None,
        normalize: bool = True,
        n_init: int = 10,
    ):
        super().__init__()
        self.normalize = normalize  # L2-normalise features first (cosine geometry)
        self.n_init = n_init
        self.clusters = context.task.num_classes
        self.seed = context.seed
        self._features: dict[str, list[Tensor]] = {}
        self._labels: dict[str, list[Tensor]] = {}

    def evaluate(self, engine: pl.LightningModule, batch: Mapping, batch_idx: int) -> None:
        if not engine.trainer.testing or batch["domain"] != "target":
            return
        features = engine.model.features(batch["x"], "target").flatten(1).float()
        self._features.setdefault(batch["split"], []).append(features.cpu())
        self._labels.setdefault(batch["split"], []).append(batch["y"].cpu())

    def finish(self, engine: pl.LightningModule, testing: bool) -> None:
        from sklearn.metrics import normalized_mutual_info_score

        for split, parts in self._features.items():
            features = torch.cat(parts)
            if self.normalize:
                features = F.normalize(features, dim=1)
            labels = torch.cat(self._labels[split]).numpy()
            clusters = self.cluster(features.numpy())
            engine.log(f"{split}/target/cluster_acc", cluster_accuracy(labels, clusters))
            engine.log(f"{split}/target/nmi", float(normalized_mutual_info_score(labels, clusters)))
        self._features.clear()
        self._labels.clear()

    def cluster(self, features: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        kmeans = KMeans(self.clusters, n_init=self.n_init, random_state=self.seed)
        with threadpool_limits(1):  # far faster than sklearn's BLAS threads on small data
            return kmeans.fit_predict(features)


def cluster_stage(name: str, normalize: bool, n_init: int, inherits: bool) -> Stage:
    """k-means of the target at test time on the (inherited or untrained) backbone."""
    return Stage(
        name,
        {"target": "none"},
        model=FeatureExtractor,
        objectives={},
        evaluator=partial(KMeansClusters, normalize=normalize, n_init=n_init),
        trainer={"max_epochs": 0},
        inherits=inherits,
    )


@method
def kmeans(normalize: bool = True, n_init: int = 10) -> Method:
    """Control for clustering: k-means of each target split on the backbone as built,
    untrained (with ``backbone=mlp backbone.hidden_dims=[]``: on raw pixels). Reports
    {val,test}/target/cluster_acc and nmi. ``normalize``: L2-normalise the features first;
    ``n_init``: k-means restarts."""
    return Method("kmeans", [cluster_stage("target", normalize, n_init, False)], False)


@method
def self_taught_clustering(
    pretext: Callable[..., Objective] = PRETEXT,
    epochs_pretrain: int | None = None,
    lr_pretrain: float | None = None,
    normalize: bool = True,
    n_init: int = 10,
) -> Method:
    """Self-taught clustering, both sides unlabeled: pretrain the backbone on the unlabeled
    source exactly as self_taught's first stage (the same cached stage), then cluster each
    target split by k-means on those features; the target labels only score the clusters.
    Control: method=kmeans backbone=mlp backbone.hidden_dims=[] (raw pixels)."""
    stages = [
        pretrain_stage(pretext, epochs_pretrain, lr_pretrain),
        cluster_stage("cluster", normalize, n_init, True),
    ]
    return Method("self_taught_clustering", stages, same_classes=False)
