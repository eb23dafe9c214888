"""ContrastiveRefiner (step 5): training, the pixel threshold rules, the descriptor views."""

import numpy as np
import pytest
import torch

from skanomclust import ContrastiveRefiner
from skanomclust.contrastive import anomaly_threshold
from skanomclust.nn.contrastive import (
    ContrastiveHead,
    contrastive_margin_loss,
    image_neighbors,
    train_contrastive_head,
)
from skanomclust.nn.gate import otsu_threshold

PAPER = {"appearance_weight": 0.0, "gate": None}


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
    assert a.shape == (12, 32 + 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    c = ContrastiveRefiner(n_epochs=2, random_state=1).fit_transform(localized)
    assert not np.array_equal(a, c)
    assert ContrastiveRefiner(n_epochs=1, **PAPER).fit_transform(localized).shape == (12, 32)


def test_half_precision_input(localized):
    full = ContrastiveRefiner(n_epochs=2, random_state=0, **PAPER).fit(localized)
    half = ContrastiveRefiner(n_epochs=2, random_state=0, **PAPER).fit(
        localized.astype(np.float16)
    )
    assert half.threshold_ == pytest.approx(full.threshold_, rel=1e-2)
    out = half.transform(localized.astype(np.float16))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, full.transform(localized), atol=0.05)


def test_transform_is_per_sample(localized):
    refiner = ContrastiveRefiner(n_epochs=1, random_state=0, batch_size=5).fit(localized)
    whole = refiner.transform(localized)
    np.testing.assert_allclose(refiner.transform(localized[4:5]), whole[4:5], atol=1e-6)


@pytest.mark.parametrize("images_per_step", [1, 4])
def test_training_reduces_the_loss(localized, images_per_step):
    refiner = ContrastiveRefiner(n_epochs=15, images_per_step=images_per_step, random_state=0).fit(
        localized
    )
    assert refiner.loss_curve_[-1] < refiner.loss_curve_[0]
    assert refiner.threshold_ > 0.01 and refiner.anomalous_share_ == pytest.approx(0.75)


@pytest.mark.parametrize("threshold", ["otsu", "kmeans", 0.5])
def test_threshold_rules_separate_the_planted_anomalies(threshold, localized):
    refiner = ContrastiveRefiner(
        threshold=threshold, threshold_clusters=4, n_epochs=1, random_state=0
    ).fit(localized)
    assert 0.01 < refiner.threshold_ < 1.0
    assert refiner.threshold_rule_ == (threshold if isinstance(threshold, str) else "given")


def test_the_threshold_has_its_own_parameters(localized):
    otsu = ContrastiveRefiner(n_epochs=1, random_state=0).fit(localized)
    assert otsu.threshold_rule_ == "otsu"
    with pytest.raises(ValueError, match="needs threshold_clusters"):
        ContrastiveRefiner(threshold="kmeans", n_epochs=1).fit(localized)
    # the deprecated n_clusters still sets the k-means rule's k, with a warning
    with pytest.warns(FutureWarning, match="threshold_clusters"):
        old = ContrastiveRefiner(threshold="kmeans", n_clusters=4, n_epochs=1, random_state=0)
        old.fit(localized)
    new = ContrastiveRefiner(threshold="kmeans", threshold_clusters=4, n_epochs=1, random_state=0)
    assert old.threshold_ == new.fit(localized).threshold_


def test_kmeans_rule_matches_the_paper_heuristic():
    # two obvious groups: 6 normal images (max 0.1), 2 anomalous (max 1.0)
    max_scores = np.array([0.1] * 6 + [1.0] * 2)
    descriptors = np.array([[0.0]] * 6 + [[5.0]] * 2)
    threshold = anomaly_threshold(max_scores, descriptors, rule="kmeans", n_clusters=2)
    assert threshold == pytest.approx(np.quantile(max_scores, 6 / 8))


def test_kmeans_rule_on_identical_descriptors_has_no_empty_cluster():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        threshold = anomaly_threshold(np.ones(6), np.ones((6, 3)), rule="kmeans", n_clusters=3)
    assert threshold == 1.0


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


def test_head_initialisation_does_not_touch_the_global_generator():
    state = torch.random.get_rng_state()
    a = ContrastiveHead(5, 8, 3, generator=torch.Generator().manual_seed(0))
    b = ContrastiveHead(5, 8, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_one_anchor_per_step_is_the_paper_schedule(localized):
    features = torch.from_numpy(localized[:, :-1])
    anomalous = torch.from_numpy(localized[:, -1] > 0.5)
    close, counter = image_neighbors(features.mean(dim=(2, 3)), 2)
    kwargs = dict(hidden_channels=8, out_channels=4, n_epochs=2)
    single = train_contrastive_head(
        features,
        anomalous,
        close,
        counter,
        lambda v, i: v,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    batched = train_contrastive_head(
        features,
        anomalous,
        close,
        counter,
        lambda v, i: v,
        images_per_step=6,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    assert len(single[1]) == len(batched[1]) == 2
    assert not torch.equal(single[0].net[0].weight, batched[0].net[0].weight)


def test_needs_two_images(localized):
    with pytest.raises(ValueError, match="at least 2 images"):
        ContrastiveRefiner(n_epochs=1).fit(localized[:1])


def test_gate_collapses_normal_images(localized):
    refiner = ContrastiveRefiner(n_epochs=2, random_state=0).fit(localized)
    assert refiner.gate_.active_
    norms = np.linalg.norm(refiner.transform(localized), axis=1)
    # images 9-11 have no anomaly: their maps stay far below the threshold
    assert norms[9:].max() < 0.01 and norms[:9].min() > 0.99


def test_without_gate_and_appearance_descriptors_are_the_pooled_embeddings(localized):
    gated = ContrastiveRefiner(n_epochs=2, appearance_weight=0, random_state=0).fit(localized)
    plain = ContrastiveRefiner(n_epochs=2, random_state=0, **PAPER).fit(localized)
    assert plain.gate_threshold_ is None and not plain.gate_.active_
    a, b = gated.transform(localized), plain.transform(localized)
    # Same seed, and the gate does not change training: the gated output is the
    # plain one at unit length times the gate's weight.
    scores = localized[:, -1].reshape(12, -1).max(axis=1)
    weights = gated.gate_.weights(scores)
    expected = b / np.linalg.norm(b, axis=1, keepdims=True) * weights[:, None]
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-6)


def test_old_module_names_still_work_with_a_warning():
    from skanomclust import ContrastiveRefiner, refinement
    from skanomclust.nn import backbones, features

    with pytest.warns(FutureWarning, match="renamed skanomclust.contrastive"):
        assert refinement.ContrastiveRefiner is ContrastiveRefiner
    with pytest.warns(FutureWarning, match="renamed skanomclust.nn.features"):
        assert backbones.load_backbone is features.load_backbone
    with pytest.raises(AttributeError):
        refinement.NoSuchName  # noqa: B018
