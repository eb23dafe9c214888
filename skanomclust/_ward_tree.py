"""Cutting one Ward tree: the labels for any k, and the choice of k (step 6).

Kept apart from the estimator (:mod:`skanomclust.clustering`), which imports
these: every k is read from the same scipy ``linkage`` tree, so choosing k
costs one tree, not one clustering per candidate.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import linkage
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from ._random import Seeds

__all__ = ["estimate_n_clusters", "ward_tree_cut"]


def ward_tree_cut(tree, n_samples, n_clusters):
    """Labels of the ``n_clusters`` clusters left after the first merges of a linkage tree.

    Exact even when merge heights tie (unlike a cut at a height); clusters are
    numbered in the order of their first sample.

    Parameters
    ----------
    tree : ndarray of shape (n_samples - 1, 4)
        A scipy linkage matrix.
    n_samples : int
    n_clusters : int
        ``1 <= n_clusters <= n_samples``.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int
    """
    parent = np.arange(2 * n_samples - 1)
    for step, (a, b) in enumerate(tree[: n_samples - n_clusters, :2].astype(np.intp)):
        parent[a] = parent[b] = n_samples + step
    # Follow each sample's chain of merges to its root among the merges made.
    root = parent.copy()
    for _ in range(n_samples):
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, labels = np.unique(root[:n_samples], return_inverse=True)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # renumber by first appearance
    return order[labels]


def _within_cluster_sums(tree, max_clusters):
    """W(k), the total within-cluster sum of squares of the Ward cut at k, for k = 1..K.

    scipy's Ward merge height ``d`` of two clusters raises the sum by ``d**2 / 2``.
    """
    heights = tree[:, 2][::-1]  # heights[j]: the merge from j + 2 to j + 1 clusters
    increments = heights**2 / 2
    total = np.cumsum(increments[::-1])[::-1]  # total[j] = W(j + 1)
    return total[:max_clusters]


def _lmethod(curve):
    """The knee of a decreasing curve over k = 1..K: the L-method (Salvador & Chan, 2004).

    Two straight lines are fitted, to the points up to the knee and from the
    knee on; the knee minimising the size-weighted root mean squared error of
    the pair is returned, with minus that error for every candidate knee.
    """
    ks = np.arange(1, len(curve) + 1, dtype=np.float64)
    errors = {}
    for knee in range(2, len(curve) - 1):
        total = 0.0
        for part in (slice(0, knee), slice(knee - 1, len(curve))):
            x, y = ks[part], curve[part]
            coefficients = np.polyfit(x, y, 1)
            rmse = np.sqrt(np.mean((np.polyval(coefficients, x) - y) ** 2))
            total += rmse * len(x) / (len(curve) + 1)
        errors[knee] = -total
    return errors


def _has_structure(X, tree, max_clusters, seeds, n_references=10):
    """Tibshirani's gap statistic against k = 1: does any cut beat one cluster?

    ``gap(k)`` is how much lower the data's log W(k) lies than that of uniform
    samples in the box of the data's principal axes. The data have structure
    when, for some k in 2..``max_clusters``, ``gap(k)`` exceeds ``gap(1)`` by
    more than the reference spread ``s_k`` (Tibshirani, Walther & Hastie,
    2001); otherwise one cluster describes them as well as any split.
    """
    centred = X - X.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes.T
    low, high = projected.min(axis=0), projected.max(axis=0)
    rng = seeds.numpy("gap-reference")

    def log_curve(tree_):
        return np.log(np.maximum(_within_cluster_sums(tree_, max_clusters), 1e-300))

    reference = np.stack(
        [
            log_curve(linkage(rng.uniform(low, high, projected.shape), "ward"))
            for _ in range(n_references)
        ]
    )
    gap = reference.mean(axis=0) - log_curve(tree)
    spread = reference.std(axis=0) * np.sqrt(1 + 1 / n_references)
    return bool(np.any(gap[1:] - gap[0] > spread[1:]))


def estimate_n_clusters(X, *, max_clusters=15, criterion="lmethod", random_state=None):
    """Estimate the number of Ward clusters in ``X``, cutting one tree for every k.

    One Ward tree is built (:func:`scipy.cluster.hierarchy.linkage`) and cut
    at every k from 1 to ``max_clusters`` (at most ``n_samples - 1``); the
    criterion scores the cuts. One cluster is returned when all samples are
    identical, or when the data split no better than structureless samples
    (Tibshirani's gap rule at k = 1); otherwise the criterion picks k >= 2.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Descriptors.
    max_clusters : int, default=15
        Largest k considered.
    criterion : {"lmethod", "silhouette", "calinski_harabasz", "gap"}, default="lmethod"
        ``"lmethod"``: the knee of the within-cluster sum of squares W(k),
        where two straight lines fit the curve best (Salvador & Chan, 2004).
        ``"silhouette"``: mean silhouette coefficient (Rousseeuw, 1987).
        ``"calinski_harabasz"``: ratio of between- to within-cluster
        dispersion. ``"gap"``: the k just before the largest relative jump in
        Ward merge height.
    random_state : int, RandomState instance or None, default=None
        Seeds the reference samples of the k = 1 test.

    Returns
    -------
    n_clusters : int
    scores : dict
        Score of each candidate k >= 2 (the best is the largest); empty when
        one cluster was found.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.1, (20, 2)) for c in (0, 3, 6)])
    >>> estimate_n_clusters(X, random_state=0)[0]
    3
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"Estimating the number of clusters needs at least 3 samples, got {n}")
    if len(np.unique(X, axis=0)) == 1:
        return 1, {}
    tree = linkage(X, "ward")
    if not _has_structure(X, tree, min(max_clusters, n - 1), Seeds(random_state)):
        return 1, {}
    top = min(max_clusters, n - 1)
    candidates = range(2, top + 1)
    if criterion == "lmethod" and top >= 4:
        scores = _lmethod(_within_cluster_sums(tree, top))
    elif criterion in ("gap", "lmethod"):
        heights = tree[:, 2][::-1]  # heights[j]: merge that leaves j+1 clusters
        scores = {k: float(heights[k - 2] / max(heights[k - 1], 1e-12)) for k in candidates}
    else:
        score = silhouette_score if criterion == "silhouette" else calinski_harabasz_score
        scores = {}
        for k in candidates:
            labels = ward_tree_cut(tree, n, k)
            scores[k] = float(score(X, labels)) if len(np.unique(labels)) > 1 else -np.inf
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores
