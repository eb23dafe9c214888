"""Step 6: Ward clustering of image descriptors, with ``predict`` and automatic k."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import calinski_harabasz_score, silhouette_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["WardClustering", "estimate_n_clusters"]


def _ward_labels(X, n_clusters):
    return AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(X)


def estimate_n_clusters(X, *, max_clusters=10, criterion="silhouette"):
    """Estimate the number of Ward clusters in ``X``.

    Every k from 2 to ``max_clusters`` (at most ``n_samples - 1``) is cut
    from one Ward tree and scored; the best-scoring k is returned.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Descriptors.
    max_clusters : int, default=10
        Largest k considered.
    criterion : {"silhouette", "calinski_harabasz", "gap"}, default="silhouette"
        ``"silhouette"``: mean silhouette coefficient (Rousseeuw 1987),
        robust to unequal cluster sizes. ``"calinski_harabasz"``: ratio of
        between- to within-cluster dispersion. ``"gap"``: the k just before
        the largest relative jump in Ward merge height (the longest branch
        of the dendrogram).

    Returns
    -------
    n_clusters : int
    scores : dict
        Score per candidate k.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.1, (20, 2)) for c in (0, 3, 6)])
    >>> estimate_n_clusters(X)[0]
    3
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"Estimating the number of clusters needs at least 3 samples, got {n}")
    top = min(max_clusters, n - 1)
    candidates = range(2, top + 1)
    if criterion == "gap":
        tree = AgglomerativeClustering(
            n_clusters=None, distance_threshold=0.0, linkage="ward", compute_distances=True
        ).fit(X)
        heights = np.sort(tree.distances_)[::-1]  # heights[j]: merge that leaves j+1 clusters
        scores = {k: float(heights[k - 2] / max(heights[k - 1], 1e-12)) for k in candidates}
    else:
        score = silhouette_score if criterion == "silhouette" else calinski_harabasz_score
        scores = {}
        for k in candidates:
            labels = _ward_labels(X, k)
            scores[k] = float(score(X, labels)) if len(np.unique(labels)) > 1 else -np.inf
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


class WardClustering(ClusterMixin, BaseEstimator):
    """Ward agglomerative clustering that can also assign new samples.

    ``fit`` produces exactly the labels of
    ``sklearn.cluster.AgglomerativeClustering(n_clusters, linkage="ward")``.
    ``predict`` assigns new samples to the nearest cluster centroid (the
    inductive-clustering pattern); samples identical to a fitted sample keep
    that sample's label, so ``predict`` on the training data returns
    ``labels_``.

    Parameters
    ----------
    n_clusters : int or "auto", default=2
        Number of clusters, or ``"auto"`` to estimate it with
        :func:`estimate_n_clusters`.
    max_clusters : int, default=10
        Largest k considered when ``n_clusters="auto"``.
    criterion : {"silhouette", "calinski_harabasz", "gap"}, default="silhouette"
        Rule used when ``n_clusters="auto"``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample.
    n_clusters_ : int
        Number of clusters used.
    cluster_centers_ : ndarray of shape (n_clusters_, n_features)
        Mean descriptor of each cluster.
    n_clusters_scores_ : dict or None
        Score of each candidate k when ``n_clusters="auto"``.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame (e.g. a pipeline with
        ``set_output(transform="pandas")``).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import WardClustering
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> model = WardClustering(n_clusters=2).fit(X)
    >>> model.labels_
    array([0, 0, 1, 1])
    >>> model.predict([[4.9, 5.2], [0.2, -0.1]])
    array([1, 0])
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_clusters": [Interval(Integral, 2, None, closed="left")],
        "criterion": [StrOptions({"silhouette", "calinski_harabasz", "gap"})],
    }

    def __init__(self, n_clusters=2, *, max_clusters=10, criterion="silhouette"):
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.criterion = criterion

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Cluster the descriptors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Descriptors.
        y : None
            Ignored.

        Returns
        -------
        self : WardClustering
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n = X.shape[0]
        if self.n_clusters == "auto":
            if n < 3:
                self.n_clusters_, self.n_clusters_scores_ = 1, None
            else:
                self.n_clusters_, self.n_clusters_scores_ = estimate_n_clusters(
                    X, max_clusters=self.max_clusters, criterion=self.criterion
                )
        else:
            if self.n_clusters > n:
                raise ValueError(
                    f"n_clusters={self.n_clusters} is larger than the number of samples ({n})"
                )
            self.n_clusters_, self.n_clusters_scores_ = self.n_clusters, None
        self.labels_ = (
            _ward_labels(X, self.n_clusters_)
            if self.n_clusters_ > 1
            else np.zeros(n, dtype=np.intp)
        )
        self.cluster_centers_ = np.stack(
            [X[self.labels_ == c].mean(axis=0) for c in range(self.n_clusters_)]
        )
        self._fit_X = X
        return self

    def predict(self, X):
        """Assign samples to the fitted clusters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Descriptors.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Nearest cluster centroid; a sample identical to a fitted one gets
            that sample's fitted label.
        """
        check_is_fitted(self, "labels_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        labels = np.argmin(cdist(X, self.cluster_centers_, "sqeuclidean"), axis=1)
        to_fitted = cdist(X, self._fit_X)
        nearest = np.argmin(to_fitted, axis=1)
        seen = to_fitted[np.arange(len(X)), nearest] == 0.0
        labels[seen] = self.labels_[nearest[seen]]
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags
