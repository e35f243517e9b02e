"""What adaptation did to the feature space: proxy A-distance and a t-SNE picture.

After a stage is tested, features of the source and target test splits are compared:
the proxy A-distance (Ben-David et al. 2007) is 2 (1 - 2 err) for the error of a linear
classifier telling the domains apart, logged as ``test/target/a_distance``; a 2-D t-SNE of
the same features, colored by domain and by class, is saved as a PNG in the run dir and
logged to TensorBoard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import Dataset

from tlframe.data.domain import TensorSplit, batches
from tlframe.engine.model import TransferModel

log = logging.getLogger(__name__)


def extract_features(
    model: TransferModel,
    role: str,
    dataset: Dataset,
    limit: int,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The model's features of at most ``limit`` evenly spaced examples of ``role``'s
    ``dataset``, and their labels (on ``device``: a model may have no parameters to tell
    it, e.g. raw pixels)."""
    indices = torch.linspace(0, len(dataset) - 1, min(limit, len(dataset))).long()
    features, labels = [], []
    with torch.no_grad():
        subset = (
            dataset.subset(indices)
            if isinstance(dataset, TensorSplit)
            else torch.utils.data.Subset(dataset, indices)
        )
        for x, y in batches(subset, batch_size):
            features.append(model.features(x.to(device), role).flatten(1).float().cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """2 (1 - 2 err) of a linear domain classifier trained on half, tested on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.5, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    with threadpool_limits(1):  # BLAS threads slow small fits down on few cores
        classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    error = 1.0 - classifier.score(scaler.transform(x_test), y_test)
    return float(2.0 * (1.0 - 2.0 * error))


def tsne_figure(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    roles = list(features)
    points = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(
        np.concatenate([features[r] for r in roles])
    )
    sizes = np.cumsum([0] + [len(features[r]) for r in roles])
    figure, (by_domain, by_class) = plt.subplots(1, 2, figsize=(11, 5))
    for i, role in enumerate(roles):
        part = points[sizes[i] : sizes[i + 1]]
        marker = "o" if role == "source" else "^"
        by_domain.scatter(*part.T, s=6, alpha=0.6, marker=marker, label=role)
        by_class.scatter(
            *part.T,
            s=6,
            alpha=0.6,
            marker=marker,
            c=labels[role] % 10,
            cmap="tab10",
            vmin=0,
            vmax=9,
        )
    by_domain.set_title("by domain")
    by_domain.legend(markerscale=3)
    by_class.set_title("by class (o source, ^ target)")
    for axis in (by_domain, by_class):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure


class FeatureSpace(pl.Callback):
    """Proxy A-distance and t-SNE of source vs target test features after each test."""

    def __init__(self, max_points: int = 500, tsne: bool = True):
        self.max_points = max_points
        self.tsne = tsne

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        model = getattr(pl_module, "model", None)
        if trainer.sanity_checking or not getattr(model, "has_features", False) or not datamodule:
            return
        domains = datamodule.domains
        if not {"source", "target"} <= set(domains):
            return
        features, labels = {}, {}
        count = min(len(domains["source"].test), len(domains["target"].test), self.max_points)
        for role in ("source", "target"):
            features[role], labels[role] = extract_features(
                model, role, domains[role].test, count, device=pl_module.device
            )
        distance = proxy_a_distance(features["source"], features["target"])
        pl_module.log("test/target/a_distance", distance)
        if self.tsne and not trainer.fast_dev_run and trainer.is_global_zero:
            self._save_picture(trainer, pl_module, features, labels, distance)

    def _save_picture(self, trainer, pl_module, features, labels, distance: float) -> None:
        import matplotlib.pyplot as plt

        stage = getattr(getattr(pl_module, "context", None), "name", "model")
        names = {r: d.name for r, d in trainer.datamodule.domains.items()}
        title = (
            f"{type(pl_module).__name__} ({stage}): {names['source']} -> {names['target']}, "
            f"proxy A-distance {distance:.2f}"
        )
        figure = tsne_figure(features, labels, title)
        path = Path(trainer.default_root_dir) / f"feature_space_{stage}.png"
        figure.savefig(path, dpi=110)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("feature_space/tsne", figure, trainer.global_step)
        plt.close(figure)
        log.info("feature space picture: %s", path)
