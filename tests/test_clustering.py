"""WardClustering: Ward's partition, predict, automatic k (k = 1 included), resampling."""

import warnings

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from skanomclust import WardClustering
from skanomclust.clustering import estimate_n_clusters, ward_tree_cut


def _blobs(seed, centers=(0.0, 4.0, 8.0, 12.0), n=25, dim=6, spread=1.0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, spread, (n, dim)) for c in centers])
    y = np.repeat(np.arange(len(centers)), n)
    return X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_partition_identical_to_agglomerative_ward(seed, k):
    X, _ = _blobs(seed, spread=3.0)
    expected = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)
    labels = WardClustering(n_clusters=k).fit_predict(X)
    assert adjusted_rand_score(expected, labels) == 1.0
    # numbered by first appearance
    _, first = np.unique(labels, return_index=True)
    assert list(labels[np.sort(first)]) == list(range(k))


def test_tree_cut_is_exact_with_tied_heights():
    X = np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0]])  # three equal pairs
    from scipy.cluster.hierarchy import linkage

    tree = linkage(X, "ward")
    for k in range(1, 7):
        assert len(np.unique(ward_tree_cut(tree, 6, k))) == k


def test_predict_on_training_data_returns_fitted_labels():
    X, _ = _blobs(0, spread=4.0)  # overlapping: centroid rule alone would disagree somewhere
    model = WardClustering(n_clusters=4).fit(X)
    centroid_rule = np.argmin(((X[:, None] - model.cluster_centers_[None]) ** 2).sum(-1), axis=1)
    assert (centroid_rule != model.labels_).any(), "test needs a case where the rules differ"
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_predict_tolerates_rounding_of_training_samples():
    # The same images' descriptors computed elsewhere (another device) differ by
    # rounding: they still get their fitted labels, not the centroid rule's.
    X, _ = _blobs(0, spread=4.0)
    model = WardClustering(n_clusters=4).fit(X)
    spacing = np.sort(np.linalg.norm(X[:, None] - X[None], axis=-1), axis=1)[:, 1]
    direction = np.random.default_rng(1).normal(size=X.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    rounded = X + 0.05 * spacing[:, None] * direction
    np.testing.assert_array_equal(model.predict(rounded), model.labels_)
    # Moved by half the spacing, a sample is a new one: the centroid rule decides.
    moved = X + 0.5 * spacing[:, None] * direction
    centroid_rule = np.argmin(((moved[:, None] - model.cluster_centers_[None]) ** 2).sum(-1), 1)
    np.testing.assert_array_equal(model.predict(moved), centroid_rule)
    # A model saved before the tolerance existed looks up exact copies only.
    del model._fit_spacing
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert (model.predict(rounded) != model.labels_).any()


def test_predict_new_samples_nearest_centroid():
    X, _ = _blobs(0)
    model = WardClustering(n_clusters=4).fit(X)
    new = model.cluster_centers_ + 0.01
    np.testing.assert_array_equal(model.predict(new), np.arange(4))
    assert model.cluster_centers_.shape == (4, 6)


@pytest.mark.parametrize("criterion", ["lmethod", "silhouette", "calinski_harabasz", "gap"])
def test_auto_recovers_well_separated_k(criterion):
    X, _ = _blobs(3, spread=0.5)
    model = WardClustering(n_clusters="auto", criterion=criterion, random_state=0).fit(X)
    assert model.n_clusters_ == 4
    assert max(model.n_clusters_scores_, key=model.n_clusters_scores_.get) == 4


def test_auto_finds_one_cluster_in_structureless_or_identical_data():
    identical = np.ones((6, 4))
    model = WardClustering(n_clusters="auto", random_state=0).fit(identical)
    assert model.n_clusters_ == 1 and (model.labels_ == 0).all()
    np.testing.assert_array_equal(model.predict(identical), model.labels_)
    noise = np.random.default_rng(0).normal(0, 1e-3, (30, 4)) + 5.0
    assert WardClustering(n_clusters="auto", random_state=0).fit(noise).n_clusters_ == 1


def test_fixed_k_never_splits_identical_samples():
    X = np.repeat(np.eye(3), [4, 3, 3], axis=0)  # three distinct rows
    with pytest.warns(UserWarning, match="Only 3 of the 10 samples are distinct"):
        model = WardClustering(n_clusters=5).fit(X)
    assert model.n_clusters_ == 3
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WardClustering(n_clusters=3).fit(X)


def test_resampled_consensus_is_seeded_and_recovers_clear_clusters():
    X, y = _blobs(0, spread=1.0)
    a = WardClustering(n_clusters=4, n_resamples=10, random_state=0).fit(X)
    b = WardClustering(n_clusters=4, n_resamples=10, random_state=0).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert adjusted_rand_score(y, a.labels_) == 1.0
    np.testing.assert_array_equal(a.predict(X), a.labels_)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_consensus_keeps_an_elongated_cluster_whole(seed):
    # A thin line and a blob beside its tip: Ward on all samples separates them, and
    # so must the consensus. Assigning the samples left out of a subset to the nearest
    # centroid gave the line's tip to the blob (ARI .89-.91 on these seeds).
    rng = np.random.default_rng(0)
    line = np.c_[np.linspace(0, 5, 200), rng.normal(0, 0.05, 200)]
    blob = rng.normal(0, 0.2, (100, 2)) + [7.0, 1.0]
    X, y = np.r_[line, blob], np.repeat([0, 1], [200, 100])
    assert adjusted_rand_score(y, WardClustering(n_clusters=2).fit(X).labels_) == 1.0
    model = WardClustering(n_clusters=2, n_resamples=20, random_state=seed).fit(X)
    assert adjusted_rand_score(y, model.labels_) == 1.0


def test_estimate_caps_k_by_samples():
    X = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1], [0.0, 5.0], [0.1, 5.0]])
    k, scores = estimate_n_clusters(X, max_clusters=10, criterion="silhouette", random_state=0)
    assert max(scores) == 5 and k == 3


def test_errors():
    X, _ = _blobs(0)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        WardClustering(n_clusters=500).fit(X)
    with pytest.raises(ValueError, match="at least 3 samples"):
        estimate_n_clusters(X[:2])
    model = WardClustering(n_clusters=2).fit(X)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])
