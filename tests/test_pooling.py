"""Anomaly-weighted pooling (paper Eq. 2)."""

import numpy as np
import pytest
import torch
from scipy import stats

from skanomclust import AnomalyWeightedPooling
from skanomclust.nn.fca import gaussian_blur
from skanomclust.nn.pooling import (
    BIMODALITY_THRESHOLD,
    anomaly_weighted_pooling,
    fit_normality_gate,
    normality_gate,
    score_bimodality,
)


def test_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.random((2, 3, 9, 11), dtype=np.float32))
    maps = torch.from_numpy(rng.random((2, 9, 11), dtype=np.float32)) * 0.01
    got = anomaly_weighted_pooling(features, maps, tau=0.002)
    blurred = gaussian_blur(features, 7, 2.0)
    for i in range(2):
        centred = blurred[i] - blurred[i].mean(dim=(1, 2), keepdim=True)
        weights = torch.exp(maps[i] / 0.002)
        weights = weights / weights.sum()
        expected = (centred * weights).sum(dim=(1, 2))
        torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6)


def test_small_tau_picks_the_most_anomalous_pixel():
    features = torch.zeros(1, 2, 5, 5)
    features[0, :, 3, 1] = torch.tensor([10.0, -4.0])
    maps = torch.zeros(1, 5, 5)
    maps[0, 3, 1] = 1.0
    out = anomaly_weighted_pooling(features, maps, tau=1e-4, blur_sigma=0, subtract_mean=False)
    torch.testing.assert_close(out[0], torch.tensor([10.0, -4.0]))


def test_large_tau_is_mean_pooling_of_centred_features():
    features = torch.rand(2, 4, 6, 6)
    maps = torch.rand(2, 6, 6)
    out = anomaly_weighted_pooling(features, maps, tau=1e9, blur_sigma=0)
    torch.testing.assert_close(out, torch.zeros(2, 4), atol=1e-6, rtol=0)


def test_estimator_shapes_batches_and_2d():
    rng = np.random.default_rng(0)
    X = rng.random((5, 4, 8, 8), dtype=np.float32)
    pooling = AnomalyWeightedPooling(batch_size=2).fit(X)
    out = pooling.transform(X)
    assert out.shape == (5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, AnomalyWeightedPooling(batch_size=64).fit_transform(X))
    np.testing.assert_allclose(out[2:3], pooling.transform(X[2:3]), rtol=1e-6)
    assert AnomalyWeightedPooling().fit_transform(X[:, :, 0, 0]).shape == (5, 3)
    assert list(pooling.get_feature_names_out()) == [
        f"anomalyweightedpooling{i}" for i in range(3)
    ]
    half = AnomalyWeightedPooling().fit_transform(X.astype(np.float16))
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, AnomalyWeightedPooling().fit_transform(X), atol=1e-2)


def test_needs_a_map_channel():
    with pytest.raises(ValueError, match="minimum of 2"):
        AnomalyWeightedPooling().fit(np.zeros((3, 1, 4, 4), dtype=np.float32))


def _planted(n_normal=8, n_anomalous=4, seed=0):
    """Feature maps whose anomaly map peaks high on the last images only."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_normal + n_anomalous, 4, 8, 8), dtype=np.float32)
    X[:, -1] *= 0.1
    X[n_normal:, -1, 4, 4] = 1.0
    return X


def test_normality_gate_by_hand():
    descriptors = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    scores = torch.tensor([0.2, 0.5, 0.8])
    got = normality_gate(descriptors, scores, threshold=0.5, width=0.1)
    gate = torch.sigmoid((scores - 0.5) / 0.1)
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]) * gate[:, None]
    torch.testing.assert_close(got, expected)
    hard = normality_gate(descriptors, scores, threshold=0.5, width=0)
    torch.testing.assert_close(hard, torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))


def test_gate_collapses_normal_images_and_keeps_anomalous_ones():
    X = _planted()
    pooling = AnomalyWeightedPooling().fit(X)
    scores = X[:, -1].reshape(len(X), -1).max(axis=1)
    # two groups of scores: the default gate="auto" gates, at Otsu's threshold
    assert pooling.gate_bimodality_ > BIMODALITY_THRESHOLD
    assert pooling.gate_threshold_ == AnomalyWeightedPooling(gate="otsu").fit(X).gate_threshold_
    assert scores[:8].max() < pooling.gate_threshold_ < scores[8:].min()
    assert pooling.gate_scale_ == pytest.approx(0.1 * np.std(scores, ddof=1), rel=1e-5)
    norms = np.linalg.norm(pooling.transform(X), axis=1)
    assert norms[:8].max() < 0.01 and norms[8:].min() > 0.99


def test_gate_none_is_the_paper_descriptor_and_float_gate_is_used_as_given():
    X = _planted()
    plain = AnomalyWeightedPooling(gate=None).fit(X)
    assert plain.gate_threshold_ is None and plain.gate_scale_ is None
    expected = anomaly_weighted_pooling(torch.from_numpy(X[:, :-1]), torch.from_numpy(X[:, -1]))
    np.testing.assert_allclose(plain.transform(X), expected.numpy(), rtol=1e-5, atol=1e-7)
    fixed = AnomalyWeightedPooling(gate=2.0, gate_width=0).fit(X)
    assert fixed.gate_threshold_ == 2.0
    np.testing.assert_array_equal(fixed.transform(X), 0.0)  # no image scores above 2


def test_gate_threshold_is_fitted_not_recomputed_on_new_images():
    X = _planted()
    pooling = AnomalyWeightedPooling().fit(X)
    # Only normal images at transform time: they must stay collapsed.
    norms = np.linalg.norm(pooling.transform(X[:8]), axis=1)
    assert norms.max() < 0.01


def test_bimodality_coefficient_matches_its_definition():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, size=50)
    n = len(values)
    g1, g2 = stats.skew(values, bias=False), stats.kurtosis(values, bias=False)
    expected = (g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert score_bimodality(torch.from_numpy(values)) == pytest.approx(expected, rel=1e-12)
    # reference values: 5/9 uniform, 1/3 normal, 1 for two equal point masses
    assert score_bimodality(rng.uniform(size=200_000)) == pytest.approx(5 / 9, abs=0.01)
    assert score_bimodality(rng.normal(size=200_000)) == pytest.approx(1 / 3, abs=0.01)
    assert score_bimodality(np.repeat([0.0, 1.0], 5000)) == pytest.approx(1.0, abs=0.01)
    assert np.isnan(score_bimodality([1.0, 2.0, 3.0]))  # fewer than 4 scores
    assert np.isnan(score_bimodality(np.ones(10)))  # constant scores


def test_auto_gate_is_off_for_unimodal_scores():
    # Every image anomalous, to different degrees: one mode of scores, no
    # group of normal images for the gate to set apart.
    rng = np.random.default_rng(0)
    X = rng.random((40, 4, 8, 8), dtype=np.float32)
    X[:, -1] *= 0.1
    X[:, -1, 4, 4] = rng.normal(1.0, 0.1, 40)
    auto = AnomalyWeightedPooling().fit(X)
    assert auto.gate_bimodality_ < BIMODALITY_THRESHOLD
    assert auto.gate_threshold_ is None and auto.gate_scale_ is None
    plain = AnomalyWeightedPooling(gate=None).fit_transform(X)
    np.testing.assert_array_equal(auto.transform(X), plain)
    forced = AnomalyWeightedPooling(gate="otsu").fit(X)
    assert forced.gate_threshold_ is not None
    assert not np.allclose(forced.transform(X), auto.transform(X))
    threshold, scale = fit_normality_gate(torch.from_numpy(X[:, -1].max(axis=(1, 2))), "auto", 0.1)
    assert threshold is None and scale is None
