"""ContrastiveRefiner and the threshold rules."""

import numpy as np
import pytest
import torch

from skanomclust import ContrastiveRefiner
from skanomclust.nn.contrastive import (
    contrastive_margin_loss,
    image_neighbors,
    otsu_threshold,
)
from skanomclust.nn.pooling import BIMODALITY_THRESHOLD, score_bimodality
from skanomclust.refinement import anomaly_threshold


@pytest.fixture
def localized():
    """Features + map for 12 images: 3 kinds of anomalies, 3 normal images."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.1, (12, 7, 16, 16)).astype(np.float32)
    X[:, -1] = rng.random((12, 16, 16)) * 0.01
    for i in range(9):
        kind = i % 3
        X[i, kind * 2 : kind * 2 + 2, 6:10, 6:10] += 2.0
        X[i, -1, 6:10, 6:10] = 1.0
    return X


def test_shapes_and_determinism(localized):
    a = ContrastiveRefiner(n_epochs=2, random_state=0).fit_transform(localized)
    b = ContrastiveRefiner(n_epochs=2, random_state=0).fit_transform(localized)
    assert a.shape == (12, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    c = ContrastiveRefiner(n_epochs=2, random_state=1).fit_transform(localized)
    assert not np.array_equal(a, c)


def test_half_precision_input(localized):
    full = ContrastiveRefiner(n_epochs=2, random_state=0).fit(localized)
    half = ContrastiveRefiner(n_epochs=2, random_state=0).fit(localized.astype(np.float16))
    assert half.threshold_ == pytest.approx(full.threshold_, rel=1e-2)
    out = half.transform(localized.astype(np.float16))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, full.transform(localized), atol=0.05)


def test_transform_is_per_sample(localized):
    refiner = ContrastiveRefiner(n_epochs=1, random_state=0, batch_size=5).fit(localized)
    whole = refiner.transform(localized)
    np.testing.assert_allclose(refiner.transform(localized[4:5]), whole[4:5], atol=1e-6)


def test_training_reduces_the_loss(localized):
    refiner = ContrastiveRefiner(n_epochs=15, random_state=0).fit(localized)
    assert refiner.loss_curve_[-1] < refiner.loss_curve_[0]
    assert refiner.threshold_ > 0.01 and refiner.anomalous_share_ == pytest.approx(0.75)


@pytest.mark.parametrize("threshold", ["otsu", "kmeans", 0.5])
def test_threshold_rules_separate_the_planted_anomalies(threshold, localized):
    refiner = ContrastiveRefiner(threshold=threshold, n_clusters=4, n_epochs=1, random_state=0)
    refiner.fit(localized)
    assert 0.01 < refiner.threshold_ < 1.0


def test_auto_rule_uses_kmeans_only_when_k_is_given(localized):
    auto = ContrastiveRefiner(n_epochs=1, random_state=0).fit(localized)
    otsu = ContrastiveRefiner(threshold="otsu", n_epochs=1, random_state=0).fit(localized)
    assert auto.threshold_rule_ == "otsu" and auto.threshold_ == otsu.threshold_
    with_k = ContrastiveRefiner(n_clusters=4, n_epochs=1, random_state=0).fit(localized)
    kmeans = ContrastiveRefiner(threshold="kmeans", n_clusters=4, n_epochs=1, random_state=0)
    assert with_k.threshold_rule_ == "kmeans"
    assert with_k.threshold_ == kmeans.fit(localized).threshold_
    given = ContrastiveRefiner(threshold=0.5, n_clusters=4, n_epochs=1).fit(localized)
    assert given.threshold_rule_ == "given" and given.threshold_ == 0.5


def test_kmeans_rule_needs_k(localized):
    with pytest.raises(ValueError, match="needs n_clusters"):
        ContrastiveRefiner(threshold="kmeans", n_epochs=1).fit(localized)


def test_kmeans_rule_matches_the_paper_heuristic():
    # two obvious groups: 6 normal images (max 0.1), 2 anomalous (max 1.0)
    max_scores = np.array([0.1] * 6 + [1.0] * 2)
    descriptors = np.array([[0.0]] * 6 + [[5.0]] * 2)
    threshold = anomaly_threshold(max_scores, descriptors, rule="kmeans", n_clusters=2)
    assert threshold == pytest.approx(np.quantile(max_scores, 6 / 8))


def test_otsu_threshold_splits_two_modes():
    values = torch.cat([torch.full((50,), 0.2), torch.full((10,), 0.9)])
    assert 0.2 < otsu_threshold(values) <= 0.9


def test_margin_loss_by_hand():
    e = torch.eye(2)
    same_pos, same_neg = e[:1], e[1:]
    close_pos, close_neg, counter_pos = e[:1], e[1:], e[1:]
    # attraction: d(pos, pos) = 0, d(neg, neg) = 0; repulsion: d(pos, neg) = 2 > margin
    assert (
        float(contrastive_margin_loss(same_pos, same_neg, close_pos, close_neg, counter_pos)) == 0
    )
    loss = contrastive_margin_loss(same_pos, same_neg, close_pos, close_neg, close_pos, margin=1)
    assert float(loss) == pytest.approx(0.5)  # repulsion terms: relu(1-2)=0 and relu(1-0)=1
    empty = torch.zeros(0, 2)
    assert contrastive_margin_loss(empty, empty, empty, empty, empty) is None


def test_neighbors_exclude_self_and_rank_by_distance():
    points = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    close, counter = image_neighbors(points, n_neighbors=2, chunk=3)
    assert close.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert counter.shape == (4, 2)
    assert counter[0].tolist() == [2, 3]


def test_needs_two_images(localized):
    with pytest.raises(ValueError, match="at least 2 images"):
        ContrastiveRefiner(n_epochs=1).fit(localized[:1])


def test_gate_collapses_normal_images(localized):
    refiner = ContrastiveRefiner(n_epochs=2, random_state=0).fit(localized)
    norms = np.linalg.norm(refiner.transform(localized), axis=1)
    # images 9-11 have no anomaly: their maps stay far below the threshold
    assert norms[9:].max() < 0.01 and norms[:9].min() > 0.99
    scores = localized[:, -1].reshape(12, -1).max(axis=1)
    assert refiner.gate_scale_ == pytest.approx(0.1 * np.std(scores, ddof=1), rel=1e-5)
    assert refiner.gate_threshold_ == pytest.approx(otsu_threshold(torch.from_numpy(scores)))
    kmeans = ContrastiveRefiner(threshold="kmeans", n_clusters=4, n_epochs=1, random_state=0)
    # the gate is Otsu's whatever rule labels the pixels
    assert kmeans.fit(localized).gate_threshold_ == refiner.gate_threshold_


def test_auto_gate_follows_the_score_bimodality(localized):
    # 9 anomalous and 3 normal images: two groups of scores, the gate is on
    auto = ContrastiveRefiner(n_epochs=1, random_state=0).fit(localized)
    scores = localized[:, -1].reshape(12, -1).max(axis=1)
    assert auto.gate_bimodality_ == pytest.approx(score_bimodality(scores))
    assert auto.gate_bimodality_ > BIMODALITY_THRESHOLD
    otsu = ContrastiveRefiner(n_epochs=1, gate="otsu", random_state=0).fit(localized)
    np.testing.assert_array_equal(auto.transform(localized), otsu.transform(localized))
    # the anomalous images only (equal peak scores): nothing to gate
    defective = ContrastiveRefiner(n_epochs=1, random_state=0).fit(localized[:9])
    assert np.isnan(defective.gate_bimodality_) and defective.gate_threshold_ is None
    plain = ContrastiveRefiner(n_epochs=1, gate=None, random_state=0).fit(localized[:9])
    np.testing.assert_array_equal(defective.transform(localized), plain.transform(localized))


def test_without_gate_descriptors_are_the_pooled_embeddings(localized):
    gated = ContrastiveRefiner(n_epochs=2, random_state=0).fit(localized)
    plain = ContrastiveRefiner(n_epochs=2, gate=None, random_state=0).fit(localized)
    assert plain.gate_threshold_ is None and plain.gate_scale_ is None
    a, b = gated.transform(localized), plain.transform(localized)
    # Same seed, and the gate does not change training: the gated output is the
    # plain one at unit length times sigmoid((score - threshold) / scale).
    scores = localized[:, -1].reshape(12, -1).max(axis=1)
    gate = 1 / (1 + np.exp(-(scores - gated.gate_threshold_) / gated.gate_scale_))
    expected = b / np.linalg.norm(b, axis=1, keepdims=True) * gate[:, None]
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-6)
