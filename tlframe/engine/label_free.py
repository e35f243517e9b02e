"""Label-free criteria: how good is a model on a target whose labels the setting lacks?

An unsupervised-adaptation setting has the target's inputs and the labeled source. Each
criterion scores a candidate (a checkpoint, or a configuration of a search) from those
alone; ``tlframe.engine.selection.CRITERIA`` gives their directions. A criterion that a collapsed
model (every target example in one class) or an uninformative one (uniform predictions)
can win is no criterion: the tests check every offered one against both.

- **IM**, information maximisation: I(x; y_hat) = H(E[p]) - E[H(p)], the mutual information
  between an input and its prediction on the target. It needs confident *and* diverse
  predictions, so both degenerate models score about 0; Musgrave et al. (2022,
  "Benchmarking validation methods for unsupervised domain adaptation") found it among the
  most reliable validators.
- **SND**, soft neighbourhood density (Saito et al. 2021): the entropy of each target
  example's softmax similarity to the others. Its maximum, ln(N - 1), belongs to a model
  whose predictions are all alike, so Saito et al. compare *trained* candidates only;
  ``snd_among_trained`` makes that rule explicit (see there).
- **DEV**, deep embedded validation (You et al. 2019): the source validation loss
  importance-weighted towards the target by a domain classifier on the features, with a
  control variate that lowers its variance. A degenerate model has a high source loss.
- **entropy**: the mean prediction entropy. A collapsed model scores the best possible 0,
  so it is logged as a diagnostic (and as the validator study's cautionary example), not
  offered as a selection rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.engine.objective import entropy

# A candidate is "trained" for SND when its predictions carry at least this fraction of the
# label information a perfect classifier's carry (IM >= TRAINED_INFORMATION * ln C).
TRAINED_INFORMATION = 0.25
MAX_POINTS = 2000  # per domain: the criteria are whole-split statistics, kept cheap


def prediction_entropy(probs: Tensor) -> float:
    """Mean entropy of the predicted class distributions (lower = more confident)."""
    return float(entropy(probs).mean())


def information_maximization(probs: Tensor) -> float:
    """H(mean prediction) - mean H(prediction), in nats; between 0 and ln C."""
    return float(entropy(probs.mean(dim=0, keepdim=True))[0] - entropy(probs).mean())


def soft_neighborhood_density(probs: Tensor, temperature: float = 0.05) -> float:
    """SND as Saito et al. (2021) define it: the entropy of each point's softmax similarity
    (cosine, over ``temperature``) to the other points, averaged. Higher = denser."""
    probs = _evenly_spaced(probs)
    unit = F.normalize(probs, dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(float("-inf"))
    return prediction_entropy(F.softmax(similarity / temperature, dim=1))


def snd_among_trained(probs: Tensor, snd: float | None = None) -> float:
    """SND where the candidate is trained, below every trained candidate where it is not.

    A candidate counts as trained when its target predictions carry at least a quarter of
    the label information (IM >= ln C / 4): a collapsed or uniform model has IM near 0 and
    SND near its maximum. Untrained candidates score -1 + IM / ln C, in [-1, -0.75): below
    any SND (>= 0), ordered by how informative they are. ``snd``: SND, if already known."""
    information = information_maximization(probs)
    ceiling = math.log(probs.shape[1])
    if information >= TRAINED_INFORMATION * ceiling:
        return soft_neighborhood_density(probs) if snd is None else snd
    return -1.0 + information / ceiling


def deep_embedded_validation(
    source_features: Tensor,
    source_losses: Tensor,
    target_features: Tensor,
    seed: int = 0,
) -> float:
    """DEV risk (You et al. 2019): lower is better.

    w(x) = p(target | x) / p(source | x) * n_s / n_t from a logistic domain classifier on
    standardised features, cross-fitted over two folds (no point is weighted by a classifier
    that saw it); risk = mean(w l) + eta mean(w) - eta with eta = -Cov(w l, w) / Var(w).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    source = _evenly_spaced(source_features.float()).numpy()
    losses = _evenly_spaced(source_losses.float()).numpy()
    target = _evenly_spaced(target_features.float()).numpy()
    x = np.concatenate([source, target])
    domain = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    p_target = np.empty(len(x))
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # BLAS threads slow small fits down on few cores
        for fit, held in folds.split(x, domain):
            classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
            classifier.fit(x[fit], domain[fit])
            p_target[held] = classifier.predict_proba(x[held])[:, 1]
    p = np.clip(p_target[: len(source)], 1e-3, 1 - 1e-3)
    weights = p / (1 - p) * len(source) / len(target)
    weighted = weights * losses
    variance = weights.var(ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


@dataclass
class LabelFreeCriteria:
    """Collects one validation pass and computes the criteria at its end.

    Target predictions (and features) come from the target validation split; DEV also
    needs the source validation split's features and per-example losses, so it is computed
    only where the stage's setting has source labels and the model exposes its features.
    """

    target_probs: list[Tensor] = field(default_factory=list)
    target_features: list[Tensor] = field(default_factory=list)
    source_features: list[Tensor] = field(default_factory=list)
    source_losses: list[Tensor] = field(default_factory=list)

    def update_target(self, logits: Tensor, features: Tensor | None) -> None:
        self.target_probs.append(logits.detach().float().softmax(dim=1).cpu())
        if features is not None:
            self.target_features.append(features.detach().flatten(1).float().cpu())

    def update_source(self, logits: Tensor, labels: Tensor, features: Tensor | None) -> None:
        if features is None:
            return
        losses = F.cross_entropy(logits.detach().float(), labels, reduction="none")
        self.source_losses.append(losses.cpu())
        self.source_features.append(features.detach().flatten(1).float().cpu())

    def compute(self, with_dev: bool) -> dict[str, float]:
        """``{name: value}`` for the metrics ``val/target/<name>``; empties the buffers."""
        values: dict[str, float] = {}
        if self.target_probs:
            probs = torch.cat(self.target_probs)
            values["entropy"] = prediction_entropy(probs)
            values["im"] = information_maximization(probs)
            values["snd_raw"] = soft_neighborhood_density(probs)  # the paper's, unguarded
            values["snd"] = snd_among_trained(probs, values["snd_raw"])
        if with_dev and self.source_features and self.target_features:
            values["dev"] = deep_embedded_validation(
                torch.cat(self.source_features),
                torch.cat(self.source_losses),
                torch.cat(self.target_features),
            )
        for buffer in (
            self.target_probs,
            self.target_features,
            self.source_features,
            self.source_losses,
        ):
            buffer.clear()
        return values


def _evenly_spaced(values: Tensor, limit: int = MAX_POINTS) -> Tensor:
    """At most ``limit`` rows, evenly spaced (evaluation splits come in a fixed order)."""
    if len(values) <= limit:
        return values
    return values[torch.linspace(0, len(values) - 1, limit).long()]
