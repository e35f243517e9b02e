"""Self-taught clustering (Dai, Yang, Xue & Yu, ICML 2008): co-clustering with auxiliary data.

The target examples X and the auxiliary (unlabeled source) examples Y are co-clustered
with the features Z, the two sharing one clustering of the features, so that the plentiful
auxiliary data shapes the feature clusters through which the few target examples are
grouped. Each side is a joint distribution over (example, feature): p(X, Z) and q(Y, Z),
the non-negative data matrices normalised to sum to 1. STC minimises the information
lost by the clustering on both sides:

    J = I(X; Z) - I(X~; Z~) + lambda * (I(Y; Z) - I(Y~; Z~))

by alternating updates, each of which cannot increase J:

    x~(x) = argmin_x~ KL(p(Z|x) || p(Z|x~)),   p(z|x~) = p(z~|x~) p(z|z~)   (y alike)
    z~(z) = argmin_z~ p(z) KL(p(X|z) || p(X|z~)) + lambda q(z) KL(q(Y|z) || q(Y|z~)),
            p(x|z~) = p(x|x~) p(x~|z~)

Initialisation here (the paper leaves it open): k-means of the examples' feature
distributions p(Z|x), p(Z|y) and of the features' example distributions.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def _kmeans(rows: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return KMeans(clusters, n_init=4, random_state=seed).fit_predict(rows)


def _rows_normalised(matrix: np.ndarray) -> np.ndarray:
    return matrix / (matrix.sum(axis=1, keepdims=True) + EPS)


def _one_hot(assignment: np.ndarray, clusters: int) -> np.ndarray:
    return np.eye(clusters)[assignment]


def _conditionals(joint: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """For a joint p(A, Z) with row clusters ``rows`` and feature clusters ``cols`` (one-hot):
    p(z | a~) [a~, z] and p(a | z~) [a, z~] of the clustered approximation."""
    clustered = rows.T @ joint @ cols  # p(a~, z~)
    p_a, p_z = joint.sum(axis=1), joint.sum(axis=0)
    z_given_cluster = p_z / (cols @ (cols.T @ p_z) + EPS)  # p(z | z~(z))
    a_given_cluster = p_a / (rows @ (rows.T @ p_a) + EPS)  # p(a | a~(a))
    zc_given_ac = clustered / (clustered.sum(axis=1, keepdims=True) + EPS)  # p(z~ | a~)
    ac_given_zc = clustered / (clustered.sum(axis=0, keepdims=True) + EPS)  # p(a~ | z~)
    z_given_ac = (zc_given_ac @ cols.T) * z_given_cluster  # [a~, z]
    a_given_zc = a_given_cluster[:, None] * (rows @ ac_given_zc)  # [a, z~]
    return z_given_ac, a_given_zc


def _assign_rows(joint: np.ndarray, z_given_cluster: np.ndarray) -> np.ndarray:
    """argmin over row clusters of KL(p(Z|a) || p(Z|a~)): the largest cross term."""
    return np.argmax(_rows_normalised(joint) @ np.log(z_given_cluster + EPS).T, axis=1)


def self_taught_clustering(
    target: np.ndarray,
    auxiliary: np.ndarray,
    clusters: int,
    auxiliary_clusters: int,
    feature_clusters: int | None,
    trade_off: float = 1.0,
    iterations: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """STC's cluster of each target row. ``target`` [n, d] and ``auxiliary`` [m, d] are
    non-negative, over the same d features; ``feature_clusters`` None: d / 4 (on raw digit
    pixels, fewer clusters of the 784 pixels lose the digits' shapes)."""
    if (target < 0).any() or (auxiliary < 0).any():
        raise ValueError("self-taught clustering needs non-negative features")
    p = target / target.sum()
    q = auxiliary / auxiliary.sum()
    feature_clusters = min(feature_clusters or max(clusters, p.shape[1] // 4), p.shape[1])
    x_clusters = _kmeans(p / (p.sum(axis=1, keepdims=True) + EPS), clusters, seed)
    y_clusters = _kmeans(q / (q.sum(axis=1, keepdims=True) + EPS), auxiliary_clusters, seed)
    columns = np.concatenate([p, q]).T
    z_clusters = _kmeans(
        columns / (columns.sum(axis=1, keepdims=True) + EPS), feature_clusters, seed
    )
    for _ in range(iterations):
        rows_x, rows_y = _one_hot(x_clusters, clusters), _one_hot(y_clusters, auxiliary_clusters)
        cols = _one_hot(z_clusters, feature_clusters)
        z_given_x, _ = _conditionals(p, rows_x, cols)
        z_given_y, _ = _conditionals(q, rows_y, cols)
        new_x, new_y = _assign_rows(p, z_given_x), _assign_rows(q, z_given_y)
        rows_x, rows_y = _one_hot(new_x, clusters), _one_hot(new_y, auxiliary_clusters)
        _, x_given_zc = _conditionals(p, rows_x, cols)
        _, y_given_zc = _conditionals(q, rows_y, cols)
        cost = -(p.T @ np.log(x_given_zc + EPS)) - trade_off * (q.T @ np.log(y_given_zc + EPS))
        new_z = np.argmin(cost, axis=1)
        unchanged = (
            (new_x == x_clusters).all()
            and (new_y == y_clusters).all()
            and (new_z == z_clusters).all()
        )
        x_clusters, y_clusters, z_clusters = new_x, new_y, new_z
        if unchanged:
            break
    return x_clusters
