"""Step 6: Ward clustering of image descriptors, with ``predict`` and automatic k."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import cdist, pdist
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.metrics import pairwise_distances_argmin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._random import Seeds
from ._ward_tree import estimate_n_clusters, ward_tree_cut

__all__ = ["WardClustering", "estimate_n_clusters", "ward_tree_cut"]

# predict: a sample this close to a fitted one (as a fraction of that one's
# distance to its nearest fitted neighbour) is that fitted sample seen again.
_SAME_SAMPLE_FRACTION = 0.1


def _resampled_consensus(X, n_clusters, n_resamples, fraction, rng):
    """Labels agreed over Ward clusterings of random subsets (evidence accumulation).

    Each subset is clustered by Ward and every sample takes the label of its
    nearest sample in the subset; the share of clusterings that separate two
    samples is their distance, clustered by average linkage. Small changes of
    the descriptors (another seed of the earlier steps) move single merges of
    one Ward tree, but far less this consensus.

    The nearest subset sample, rather than the nearest cluster centroid,
    keeps the shape of Ward's clusters: elongated clusters lose their tips to
    a neighbouring centroid (figures in the user guide, "Why the clustering
    is a consensus").
    """
    n = len(X)
    size = max(n_clusters, int(round(fraction * n)))
    # Every subset's Ward tree reads its pairs from one condensed distance
    # matrix: the same tree as linkage(X[subset], "ward") without recomputing
    # the distances each time (about twice as fast at MTD's size).
    distances = pdist(X)
    first, second = np.triu_indices(size, k=1)
    votes = np.empty((n_resamples, n), dtype=np.intp)
    for row in votes:
        subset = np.sort(rng.choice(n, size, replace=False))
        a, b = subset[first], subset[second]
        pairs = distances[n * a - a * (a + 1) // 2 + (b - a - 1)]
        labels = ward_tree_cut(linkage(pairs, "ward"), size, n_clusters)
        row[:] = labels[pairwise_distances_argmin(X, X[subset])]
    del distances, first, second
    # Share of the clusterings that separate two samples: Hamming distance of their votes.
    tree = linkage(pdist(votes.T, "hamming"), "average")
    return ward_tree_cut(tree, n, n_clusters)


def _nearest_other_distances(X, block=1024):
    """Distance from every row of ``X`` to its nearest other row (chunked)."""
    distances = np.empty(len(X))
    for start in range(0, len(X), block):
        part = cdist(X[start : start + block], X)
        part[np.arange(len(part)), np.arange(start, start + len(part))] = np.inf
        distances[start : start + block] = part.min(axis=1)
    return distances


class WardClustering(ClusterMixin, BaseEstimator):
    """Ward agglomerative clustering that can also assign new samples.

    ``fit`` gives the partition of
    ``sklearn.cluster.AgglomerativeClustering(n_clusters, linkage="ward")``,
    numbered by first appearance. ``predict`` assigns new samples to the
    nearest cluster centroid (the inductive-clustering pattern); samples
    identical to a fitted sample keep that sample's label, so ``predict`` on
    the training data returns ``labels_``.

    Parameters
    ----------
    n_clusters : int or "auto", default=2
        Number of clusters, or ``"auto"`` to estimate it with
        :func:`estimate_n_clusters` (which may find one cluster). With fewer
        distinct samples than ``n_clusters``, identical samples are never
        split: there are only as many clusters as distinct samples (with a
        warning).
    max_clusters : int, default=15
        Largest k considered when ``n_clusters="auto"``.
    criterion : {"lmethod", "silhouette", "calinski_harabasz", "gap"}, default="lmethod"
        Rule used when ``n_clusters="auto"``.
    n_resamples : int, default=0
        With more than 0, the labels are the consensus of this many Ward
        clusterings of random subsets (:func:`_resampled_consensus`), steadier
        under small changes of the descriptors; 0 is plain Ward.
        :func:`~skanomclust.make_blind_pipeline` uses 50 (it costs about 50
        Ward clusterings of 80% of the samples: 2.9 s for MTD's 1344 images on
        two CPU cores, against 0.4 s for one).
    resample_fraction : float, default=0.8
        Share of the samples in each subset.
    random_state : int, RandomState instance or None, default=None
        Seeds the resampling and the reference samples of the automatic k.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample.
    n_clusters_ : int
        Number of clusters used.
    cluster_centers_ : ndarray of shape (n_clusters_, n_features)
        Mean descriptor of each cluster.
    n_clusters_scores_ : dict or None
        Score of each candidate k when ``n_clusters="auto"`` (largest = chosen).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame.

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
        "criterion": [StrOptions({"lmethod", "silhouette", "calinski_harabasz", "gap"})],
        "n_resamples": [Interval(Integral, 0, None, closed="left")],
        "resample_fraction": [Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_clusters=2,
        *,
        max_clusters=15,
        criterion="lmethod",
        n_resamples=0,
        resample_fraction=0.8,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.criterion = criterion
        self.n_resamples = n_resamples
        self.resample_fraction = resample_fraction
        self.random_state = random_state

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
        seeds = Seeds(self.random_state)
        n_distinct = len(np.unique(X, axis=0))
        self.n_clusters_scores_ = None
        if self.n_clusters == "auto":
            k = 1
            if n >= 3:
                k, self.n_clusters_scores_ = estimate_n_clusters(
                    X,
                    max_clusters=self.max_clusters,
                    criterion=self.criterion,
                    random_state=seeds.legacy("n_clusters"),
                )
        else:
            k = self.n_clusters
            if k > n:
                raise ValueError(f"n_clusters={k} is larger than the number of samples ({n})")
        if k > n_distinct:
            warnings.warn(
                f"Only {n_distinct} of the {n} samples are distinct; identical samples are "
                f"not split, so there {'is' if n_distinct == 1 else 'are'} "
                f"{n_distinct} cluster{'' if n_distinct == 1 else 's'} instead of {k}.",
                UserWarning,
                stacklevel=2,
            )
            k = n_distinct
        self.n_clusters_ = int(k)
        self.labels_ = self._partition(X, seeds)
        self.cluster_centers_ = np.stack(
            [X[self.labels_ == c].mean(axis=0) for c in range(self.n_clusters_)]
        )
        self._fit_X = X
        self._fit_spacing = _nearest_other_distances(X)
        return self

    def _partition(self, X, seeds):
        n, k = X.shape[0], self.n_clusters_
        if k == 1:
            return np.zeros(n, dtype=np.intp)
        if self.n_resamples > 0 and n > k:
            labels = _resampled_consensus(
                X, k, self.n_resamples, self.resample_fraction, seeds.numpy("resamples")
            )
            if len(np.unique(labels)) == k:
                return labels
        return ward_tree_cut(linkage(X, "ward"), n, k)

    def predict(self, X):
        """Assign samples to the fitted clusters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Descriptors.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Nearest cluster centroid, except for a fitted sample seen again:
            a sample within a tenth of a fitted sample's distance to its own
            nearest fitted neighbour gets that sample's fitted label.

        Notes
        -----
        Ward's labels are not nearest-centroid labels: near a boundary a
        fitted sample can be closer to another cluster's centroid. Looking the
        fitted samples up keeps ``predict`` on the training images equal to
        ``labels_``. The lookup tolerates rounding: the same image's
        descriptor computed on another device (a model fitted on a GPU and
        used on a CPU) moved by at most 2% of that distance on MTD, while
        nearest-centroid labels disagreed with Ward's for 3% of its images.
        """
        check_is_fitted(self, "labels_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        labels = np.argmin(cdist(X, self.cluster_centers_, "sqeuclidean"), axis=1)
        # Models saved before the tolerance existed look up exact copies only.
        spacing = getattr(self, "_fit_spacing", np.zeros(len(self._fit_X)))
        # Training rows: look them up (in chunks, never an n x n_fit matrix at once).
        for start in range(0, len(X), 1024):
            block = cdist(X[start : start + 1024], self._fit_X)
            nearest = np.argmin(block, axis=1)
            distance = block[np.arange(len(block)), nearest]
            seen = distance <= _SAME_SAMPLE_FRACTION * spacing[nearest]
            labels[start : start + 1024][seen] = self.labels_[nearest[seen]]
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags
