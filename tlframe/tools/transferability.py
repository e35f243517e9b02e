"""Transferability scores: how well a source model should transfer to a target, before any
fine-tuning. Pure functions of arrays (features, predictions, labels); ``tlframe-rank``
(:mod:`tlframe.tools.rank`) extracts those from the source models.

- :func:`logme` (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning"): the maximised log evidence of a Bayesian linear model from the
  features to each one-hot target label, per example, averaged over the classes. Higher is
  better.
- :func:`leep` (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of
  Learned Representations"): the log expected empirical prediction of the source model's
  soft predictions turned into target labels through the empirical P(y | z). Higher is
  better.
- :func:`proxy_a_distance` (Ben-David et al. 2007): 2 (1 - 2 err) of a linear classifier
  telling source from target features apart; the same function that records
  ``test/target/a_distance`` after training. Lower means closer domains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "SCORES",
    "SCORE_NAMES",
    "leep",
    "log_evidence",
    "logme",
    "max_log_evidence",
    "proxy_a_distance",
    "ranks",
    "spearman",
]

# Each score and whether a higher value predicts better transfer.
SCORES = {"logme": True, "leep": True, "a_distance": False}
SCORE_NAMES = {"logme": "LogME", "leep": "LEEP", "a_distance": "A-distance"}


def _as_2d(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [n, D] array, got shape {features.shape}")
    return features


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (>= 0) and eigenvectors of F^T F."""
    sigma, vectors = np.linalg.eigh(features.T @ features)
    return np.clip(sigma, 0.0, None), vectors


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of the Bayesian linear model y = F w + noise, with prior
    w ~ N(0, I / alpha) and noise ~ N(0, I / beta) (Bishop 2006, eq. 3.86)::

        D/2 log a + n/2 log b - n/2 log 2pi - b/2 |y - F m|^2 - a/2 |m|^2 - 1/2 log|A|

    with A = a I + b F^T F and m = b A^-1 F^T y (the posterior mean of w).
    """
    features = _as_2d(features)
    y = np.asarray(y, dtype=np.float64)
    sigma, vectors = _spectrum(features)
    z = vectors.T @ (features.T @ y)
    return _evidence(sigma, z, float(y @ y), len(y), alpha, beta)[0]


def _evidence(
    sigma: np.ndarray, z: np.ndarray, yy: float, n: int, alpha: float, beta: float
) -> tuple[float, float, float, float]:
    """Log evidence, |m|^2, |y - F m|^2 and gamma, all in the eigenbasis of F^T F."""
    d = len(sigma)
    precision = alpha + beta * sigma  # eigenvalues of A
    coords = beta * z / precision  # m in the eigenbasis
    m2 = float(coords @ coords)
    residual = max(yy - 2.0 * float(coords @ z) + float(sigma @ coords**2), 1e-12 * max(yy, 1.0))
    gamma = float((beta * sigma / precision).sum())
    evidence = (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - 0.5 * float(np.log(precision).sum())
    )
    return evidence, m2, residual, gamma


def max_log_evidence(
    features: np.ndarray, y: np.ndarray, max_iter: int = 200, tol: float = 1e-7
) -> tuple[float, float, float]:
    """The log evidence maximised over alpha and beta by MacKay's fixed-point iteration
    (alpha = gamma / |m|^2, beta = (n - gamma) / |y - F m|^2), per example; returns
    (evidence / n, alpha, beta)."""
    features = _as_2d(features)
    y = np.asarray(y, dtype=np.float64)
    sigma, vectors = _spectrum(features)
    return _fixed_point(sigma, vectors.T @ (features.T @ y), float(y @ y), len(y), max_iter, tol)


def _fixed_point(
    sigma: np.ndarray, z: np.ndarray, yy: float, n: int, max_iter: int, tol: float
) -> tuple[float, float, float]:
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        _, m2, residual, gamma = _evidence(sigma, z, yy, n, alpha, beta)
        new_alpha = gamma / max(m2, 1e-300)
        new_beta = (n - gamma) / residual
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence(sigma, z, yy, n, alpha, beta)[0] / n, alpha, beta


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the mean over the target classes present in ``labels`` of the maximised log
    evidence per example of a linear model from ``features`` [n, D] to the class's one-hot
    column."""
    features = _as_2d(features)
    labels = np.asarray(labels)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    sigma, vectors = _spectrum(features)
    classes = np.unique(labels)
    onehot = (labels[:, None] == classes[None, :]).astype(np.float64)  # [n, K]
    projected = vectors.T @ (features.T @ onehot)  # [D, K]
    n = len(labels)
    evidences = [
        _fixed_point(sigma, projected[:, k], float(onehot[:, k].sum()), n, 200, 1e-7)[0]
        for k in range(len(classes))
    ]
    return float(np.mean(evidences))


def leep(probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of a source model's soft predictions ``probs`` [n, Z] (rows sum to 1, over the
    source classes z) on target examples with ``labels`` [n]::

        P(y, z) = 1/n sum_{i: y_i = y} probs[i, z],   P(y | z) = P(y, z) / sum_y' P(y', z)
        LEEP    = 1/n sum_i log sum_z P(y_i | z) probs[i, z]
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"need probs [n, Z] and n labels, got {probs.shape} and {labels.shape}")
    classes, y = np.unique(labels, return_inverse=True)
    joint = np.zeros((len(classes), probs.shape[1]))
    np.add.at(joint, y, probs)
    joint /= len(labels)
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = (probs * conditional[y]).sum(axis=1)
    return float(np.mean(np.log(np.maximum(expected, 1e-300))))


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """2 (1 - 2 err) of a linear domain classifier trained on half of the features and tested
    on the other half: the function that records ``test/target/a_distance`` after training."""
    from tlframe.engine.callbacks.feature_space import proxy_a_distance as a_distance

    return a_distance(source, target, seed=seed)


def ranks(values: Sequence[float | None], higher_is_better: bool = True) -> list[int | None]:
    """1 = best; ties share the better rank; a missing value gets no rank."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    ordered = sorted(present, reverse=higher_is_better)
    return [None if v is None or math.isnan(v) else ordered.index(v) + 1 for v in values]


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two paired sequences (None if it is undefined: fewer
    than two pairs, or one side constant)."""
    if len(a) != len(b) or len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
