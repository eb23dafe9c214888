"""Anomaly-weighted pooling (paper Eq. 2)."""

import numpy as np
import pytest
import torch

from skanomclust import AnomalyWeightedPooling
from skanomclust.nn.fca import gaussian_blur
from skanomclust.nn.pooling import anomaly_weighted_pooling


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


def test_needs_a_map_channel():
    with pytest.raises(ValueError, match="minimum of 2"):
        AnomalyWeightedPooling().fit(np.zeros((3, 1, 4, 4), dtype=np.float32))
