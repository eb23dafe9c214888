"""WardClustering: identical to AgglomerativeClustering, predict, automatic k."""

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering

from skanomclust import WardClustering
from skanomclust.clustering import estimate_n_clusters


def _blobs(seed, centers=(0.0, 4.0, 8.0, 12.0), n=25, dim=6, spread=1.0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, spread, (n, dim)) for c in centers])
    y = np.repeat(np.arange(len(centers)), n)
    return X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_labels_identical_to_agglomerative_ward(seed, k):
    X, _ = _blobs(seed, spread=3.0)
    expected = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)
    np.testing.assert_array_equal(WardClustering(n_clusters=k).fit_predict(X), expected)


def test_predict_on_training_data_returns_fitted_labels():
    X, _ = _blobs(0, spread=4.0)  # overlapping: centroid rule alone would disagree somewhere
    model = WardClustering(n_clusters=4).fit(X)
    centroid_rule = np.argmin(((X[:, None] - model.cluster_centers_[None]) ** 2).sum(-1), axis=1)
    assert (centroid_rule != model.labels_).any(), "test needs a case where the rules differ"
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_predict_new_samples_nearest_centroid():
    X, _ = _blobs(0)
    model = WardClustering(n_clusters=4).fit(X)
    new = model.cluster_centers_ + 0.01
    np.testing.assert_array_equal(model.predict(new), np.arange(4))
    assert model.cluster_centers_.shape == (4, 6)


@pytest.mark.parametrize("criterion", ["silhouette", "calinski_harabasz", "gap"])
def test_auto_recovers_well_separated_k(criterion):
    X, _ = _blobs(3, spread=0.5)
    model = WardClustering(n_clusters="auto", criterion=criterion).fit(X)
    assert model.n_clusters_ == 4
    assert set(model.n_clusters_scores_) == set(range(2, 11))


def test_estimate_caps_k_by_samples():
    X = np.arange(8, dtype=float).reshape(4, 2)
    k, scores = estimate_n_clusters(X, max_clusters=10)
    assert max(scores) == 3 and 2 <= k <= 3


def test_errors():
    X, _ = _blobs(0)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        WardClustering(n_clusters=500).fit(X)
    with pytest.raises(ValueError, match="at least 3 samples"):
        estimate_n_clusters(X[:2])
    model = WardClustering(n_clusters=2).fit(X)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])
