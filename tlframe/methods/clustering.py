"""Self-taught clustering: group the unlabeled target by k-means on backbone features.

``KMeansClusters`` trains nothing: at test time it clusters each target split (val, test)
into as many clusters as the target has classes, with the backbone it inherited (learned
on unlabeled source data by ``SelfTaughtPretrain``) or, as the first stage of a method,
with an untrained one (``backbone=mlp backbone.hidden_dims=[]`` is k-means on raw pixels).
The labels only score the clusters: ``{split}/target/cluster_acc`` (accuracy under the best
one-to-one cluster-to-class map, found by the Hungarian algorithm) and ``{split}/target/nmi``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from threadpoolctl import threadpool_limits
from torch import Tensor

from tlframe.methods.base import TransferModule


def cluster_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of examples whose cluster maps to their class under the one-to-one map of
    clusters to classes that maximises it (Hungarian matching on the contingency table)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    size = max(labels.max(), clusters.max()) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


class KMeansClusters(TransferModule):
    """k-means (k = the target's classes) on the backbone's features of each target split."""

    needs_labels = False

    def __init__(self, *, normalize: bool = True, n_init: int = 10, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize  # L2-normalise features first (cosine geometry)
        self.n_init = n_init
        self.seed = seed
        self._features: dict[str, list[Tensor]] = {}
        self._labels: dict[str, list[Tensor]] = {}

    def training_step(self, batch: Mapping, batch_idx: int) -> None:
        return None  # nothing to train: the stage runs no epochs

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.0)  # unused; Lightning wants one

    def validation_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        return None

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch["domain"] != "target":
            return
        features = self.backbone(batch["x"]).flatten(1).float()
        self._features.setdefault(batch["split"], []).append(features.cpu())
        self._labels.setdefault(batch["split"], []).append(batch["y"].cpu())

    def on_test_epoch_end(self) -> None:
        for split, parts in self._features.items():
            features = torch.cat(parts)
            if self.normalize:
                features = F.normalize(features, dim=1)
            labels = torch.cat(self._labels[split]).numpy()
            clusters = self.cluster(features.numpy())
            self.log(f"{split}/target/cluster_acc", cluster_accuracy(labels, clusters))
            self.log(f"{split}/target/nmi", float(normalized_mutual_info_score(labels, clusters)))
        self._features.clear()
        self._labels.clear()

    def cluster(self, features: np.ndarray) -> np.ndarray:
        kmeans = KMeans(len(self.class_names), n_init=self.n_init, random_state=self.seed)
        with threadpool_limits(1):  # far faster than sklearn's BLAS threads on small data
            return kmeans.fit_predict(features)
