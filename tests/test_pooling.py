"""Step 4: the descriptor views (paper Eq. 2 and the appearance view) and their assembly."""

import numpy as np
import pytest
import torch

from skanomclust import AnomalyWeightedPooling
from skanomclust.nn import gaussian_blur
from skanomclust.nn.pooling import anomaly_weighted_pooling, spread_weighted_pooling


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


def test_spread_weighted_pooling_follows_each_map():
    features = torch.rand(2, 3, 6, 6)
    maps = torch.zeros(2, 6, 6)
    # image 0: a flat map, the whole image is pooled (mean pooling)
    flat = spread_weighted_pooling(features[:1], maps[:1], blur_sigma=0)
    torch.testing.assert_close(flat[0], features[0].mean(dim=(1, 2)))
    # image 1: one pixel far above the rest, its features dominate
    maps[1, 2, 3] = 1.0
    peaked = spread_weighted_pooling(features, maps, spread=0.1, blur_sigma=0)
    torch.testing.assert_close(peaked[1], features[1, :, 2, 3], atol=1e-4, rtol=0)
    # the temperature is in units of each map's spread: scaling a map changes nothing
    torch.testing.assert_close(
        spread_weighted_pooling(features, maps * 7.0, blur_sigma=0),
        spread_weighted_pooling(features, maps, blur_sigma=0),
    )


def _localized(n=6, channels=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, channels + 1, 8, 8), dtype=np.float32)
    X[:, -1] *= 0.1
    return X


def test_estimator_shapes_batches_and_2d():
    X = _localized(5)
    pooling = AnomalyWeightedPooling(batch_size=2).fit(X)
    out = pooling.transform(X)
    assert out.shape == (5, 8) and out.dtype == np.float32  # anomaly + appearance views
    np.testing.assert_allclose(out, AnomalyWeightedPooling(batch_size=64).fit_transform(X))
    np.testing.assert_allclose(out[2:3], pooling.transform(X[2:3]), rtol=1e-5, atol=1e-6)
    assert AnomalyWeightedPooling().fit_transform(X[:, :, 0, 0]).shape == (5, 8)
    assert list(pooling.get_feature_names_out()) == [
        f"anomalyweightedpooling{i}" for i in range(8)
    ]
    half = AnomalyWeightedPooling().fit_transform(X.astype(np.float16))
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, AnomalyWeightedPooling().fit_transform(X), atol=0.05)
    paper = AnomalyWeightedPooling(appearance_weight=0, gate=None).fit_transform(X)
    assert paper.shape == (5, 4)


def test_paper_configuration_is_eq_2():
    X = _localized()
    # the paper blurs the features first (sigma 2, the function's default; not the estimator's)
    paper = AnomalyWeightedPooling(appearance_weight=0, gate=None, blur_sigma=2.0).fit_transform(X)
    expected = anomaly_weighted_pooling(torch.from_numpy(X[:, :-1]), torch.from_numpy(X[:, -1]))
    np.testing.assert_allclose(paper, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_views_are_unit_length_and_the_appearance_view_standardised():
    X = _localized(10)
    pooling = AnomalyWeightedPooling(gate=None, appearance_weight=0.5).fit(X)
    out = pooling.transform(X)
    features, maps = torch.from_numpy(X[:, :-1]), torch.from_numpy(X[:, -1])
    # no blur by default (the views of the nn functions blur unless told not to)
    anomaly = anomaly_weighted_pooling(features, maps, blur_sigma=0).numpy()
    appearance = spread_weighted_pooling(features, maps, blur_sigma=0).numpy()
    np.testing.assert_allclose(pooling.appearance_mean_, appearance.mean(axis=0), rtol=1e-5)
    standard = (appearance - pooling.appearance_mean_) / pooling.appearance_scale_
    expected = np.hstack(
        [
            anomaly / np.linalg.norm(anomaly, axis=1, keepdims=True),
            0.5 * standard / np.linalg.norm(standard, axis=1, keepdims=True),
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    # the statistics are the training images': new images are scaled with them
    np.testing.assert_allclose(pooling.transform(X[:3]), out[:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spreads", [(0.7, 1.5), [0.5, 1.0, 2.0]])
def test_appearance_view_at_several_scales(spreads):
    X = _localized(10)
    pooling = AnomalyWeightedPooling(gate=None, appearance_spread=spreads).fit(X)
    out = pooling.transform(X)
    n_channels = X.shape[1] - 1
    assert out.shape == (10, n_channels * (1 + len(spreads))) == (10, pooling.n_features_out_)
    assert pooling.appearance_mean_.shape == (n_channels * len(spreads),)
    features, maps = torch.from_numpy(X[:, :-1]), torch.from_numpy(X[:, -1])
    blocks = np.split(out, 1 + len(spreads), axis=1)
    single = AnomalyWeightedPooling(gate=None, appearance_weight=0).fit_transform(X)
    np.testing.assert_allclose(blocks[0], single / np.linalg.norm(single, axis=1, keepdims=True))
    for spread, block in zip(spreads, blocks[1:], strict=True):
        # each scale is the one-scale view at that spread, standardised on its own
        view = spread_weighted_pooling(features, maps, spread=spread, blur_sigma=0).numpy()
        standard = (view - view.mean(axis=0)) / view.std(axis=0)
        expected = standard / np.linalg.norm(standard, axis=1, keepdims=True)
        np.testing.assert_allclose(block, expected, rtol=1e-4, atol=1e-5)
    one = AnomalyWeightedPooling(gate=None, appearance_spread=(1.0,)).fit_transform(X)
    np.testing.assert_array_equal(one, AnomalyWeightedPooling(gate=None).fit_transform(X))


@pytest.mark.parametrize("spreads", [(), (0.7, 0.0), (0.7, "wide"), [True]])
def test_bad_appearance_spreads_are_refused_before_any_work(spreads):
    with pytest.raises(ValueError, match="appearance_spread must be a positive number"):
        AnomalyWeightedPooling(appearance_spread=spreads).fit(_localized(4))


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


def test_gate_collapses_normal_images_and_keeps_anomalous_ones():
    X = _planted()
    pooling = AnomalyWeightedPooling().fit(X)
    scores = X[:, -1].reshape(len(X), -1).max(axis=1)
    assert pooling.gate_.active_ and pooling.gate_.kind_ == "gmm"
    assert scores[:8].max() < pooling.gate_threshold_ < scores[8:].min()
    norms = np.linalg.norm(pooling.transform(X), axis=1)
    assert norms[:8].max() < 0.01 and norms[8:].min() > 0.99
    # fitted once: only normal images at transform time stay collapsed
    assert np.linalg.norm(pooling.transform(X[:8]), axis=1).max() < 0.01


def test_auto_gate_is_off_for_unimodal_scores():
    rng = np.random.default_rng(0)
    X = rng.random((40, 4, 8, 8), dtype=np.float32)
    X[:, -1] *= 0.1
    X[:, -1, 4, 4] = rng.normal(1.0, 0.1, 40)
    auto = AnomalyWeightedPooling().fit(X)
    assert not auto.gate_.active_ and auto.gate_threshold_ is None
    plain = AnomalyWeightedPooling(gate=None).fit_transform(X)
    np.testing.assert_array_equal(auto.transform(X), plain)
    forced = AnomalyWeightedPooling(gate="otsu").fit(X)
    assert forced.gate_threshold_ is not None
    assert not np.allclose(forced.transform(X), auto.transform(X))
