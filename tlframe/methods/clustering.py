"""Clustering the unlabeled target: self-taught clustering (Dai et al. 2008), and k-means.

``TargetClusters`` is an evaluator: at test time it clusters each target split (val, test)
into as many clusters as the target has classes, on the features of the backbone it
inherited (learned on unlabeled source data by the pretraining stage) or, as the first
stage of a method, of an untrained one (``backbone=mlp backbone.hidden_dims=[]``: raw
pixels). ``algorithm=stc`` co-clusters the split with the unlabeled source training
examples, the two sharing one clustering of the features (``tlframe.methods.coclustering``);
``kmeans`` clusters the split alone. The labels only score the clusters:
``{split}/target/cluster_acc`` (accuracy under the best one-to-one cluster-to-class map,
found by the Hungarian algorithm) and ``{split}/target/nmi``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Subset

from tlframe.data.domain import TensorSplit, batches
from tlframe.engine.context import StageContext
from tlframe.engine.evaluation import Evaluator
from tlframe.engine.method import Method, Stage, method
from tlframe.engine.model import FeatureExtractor, TransferModel
from tlframe.engine.objective import Objective
from tlframe.errors import ConfigError
from tlframe.methods.coclustering import self_taught_clustering as co_cluster
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


ALGORITHMS = ("stc", "kmeans")
MAX_AUXILIARY = 5000  # unlabeled source examples co-clustered with a target split


class TargetClusters(Evaluator):
    """Clusters (as many as the target's classes) of the model's features of each target
    split, at test time; the stage trains nothing (0 epochs, no objectives). ``stc``:
    self-taught clustering with the unlabeled source (``feature_clusters``: null is a
    quarter of the feature dimensions, ``trade_off`` lambda, ``iterations``; features
    shifted to be non-negative); ``kmeans``: k-means
    (``normalize``: L2-normalised features first, ``n_init`` restarts)."""

    def __init__(
        self,
        *,
        model: TransferModel | None = None,
        context: StageContext,
        objectives=None,
        algorithm: str = "kmeans",
        normalize: bool = True,
        n_init: int = 10,
        feature_clusters: int | None = None,
        trade_off: float = 1.0,
        iterations: int = 20,
    ):
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"method.algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        self.normalize = normalize
        self.n_init = n_init
        self.stc = {"feature_clusters": feature_clusters, "trade_off": trade_off}
        self.iterations = iterations
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

        auxiliary = (
            self.auxiliary_features(engine) if self._features and self.algorithm == "stc" else None
        )
        for split, parts in self._features.items():
            features = torch.cat(parts)
            labels = torch.cat(self._labels[split]).numpy()
            clusters = self.cluster(features, auxiliary)
            engine.log(f"{split}/target/cluster_acc", cluster_accuracy(labels, clusters))
            engine.log(f"{split}/target/nmi", float(normalized_mutual_info_score(labels, clusters)))
        self._features.clear()
        self._labels.clear()

    @torch.no_grad()
    def auxiliary_features(self, engine: pl.LightningModule) -> Tensor:
        """The model's features of evenly spaced unlabeled source training examples (their
        labels are never read)."""
        train = engine.trainer.datamodule.domains["source"].train
        indices = torch.linspace(0, len(train) - 1, min(MAX_AUXILIARY, len(train))).long()
        subset = train.subset(indices) if isinstance(train, TensorSplit) else Subset(train, indices)
        parts = [engine.model.features(x.to(engine.device), "source") for x, _ in batches(subset)]
        return torch.cat(parts).flatten(1).float().cpu()

    def cluster(self, features: Tensor, auxiliary: Tensor | None) -> np.ndarray:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        if self.algorithm == "stc":
            lowest = torch.minimum(features.min(dim=0).values, auxiliary.min(dim=0).values)
            return co_cluster(
                (features - lowest).double().numpy(),
                (auxiliary - lowest).double().numpy(),
                self.clusters,
                self.clusters,
                iterations=self.iterations,
                seed=self.seed,
                **self.stc,
            )
        if self.normalize:  # cosine geometry
            features = F.normalize(features, dim=1)
        kmeans = KMeans(self.clusters, n_init=self.n_init, random_state=self.seed)
        with threadpool_limits(1):  # far faster than sklearn's BLAS threads on small data
            return kmeans.fit_predict(features.numpy())


def cluster_stage(name: str, clusters: Callable[..., Evaluator], inherits: bool) -> Stage:
    """Clusters of the target at test time on the (inherited or untrained) backbone."""
    return Stage(
        name,
        {"target": "none"},
        model=FeatureExtractor,
        objectives={},
        evaluator=clusters,
        trainer={"max_epochs": 0},
        inherits=inherits,
    )


@method
def kmeans(clusters: Callable[..., Evaluator] = TargetClusters) -> Method:
    """Control for clustering: k-means of each target split on the backbone as built,
    untrained (with ``backbone=mlp backbone.hidden_dims=[]``: on raw pixels). Reports
    {val,test}/target/cluster_acc and nmi. ``method.clusters.*``: TargetClusters' options."""
    return Method("kmeans", [cluster_stage("target", clusters, False)], False)


@method
def self_taught_clustering(
    pretext: Callable[..., Objective] = PRETEXT,
    epochs_pretrain: int | None = None,
    lr_pretrain: float | None = None,
    clusters: Callable[..., Evaluator] = partial(TargetClusters, algorithm="stc"),
) -> Method:
    """Self-taught clustering, both sides unlabeled: pretrain the backbone on the unlabeled
    source exactly as self_taught's first stage (the same cached stage), then co-cluster
    each target split with the unlabeled source on those features (Dai et al.'s STC;
    ``method.clusters.algorithm=kmeans``: k-means of the target alone, tlframe's earlier
    form); the target labels only score the clusters.
    Control: method=kmeans backbone=mlp backbone.hidden_dims=[] (raw pixels)."""
    stages = [
        pretrain_stage(pretext, epochs_pretrain, lr_pretrain),
        cluster_stage("cluster", clusters, True),
    ]
    return Method("self_taught_clustering", stages, same_classes=False)
