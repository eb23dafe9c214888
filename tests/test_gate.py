"""The normality gate: when it applies and how its weights follow the scores."""

import numpy as np
import pytest
import torch
from scipy import stats

from skanomclust.gate import NormalityGate
from skanomclust.nn.gate import BIMODALITY_THRESHOLD, apply_gate, otsu_threshold, score_bimodality

BIMODAL = np.concatenate([np.linspace(0.0, 0.1, 30), np.linspace(0.9, 1.0, 10)])
UNIMODAL = np.random.default_rng(0).normal(1.0, 0.1, 40)


def test_apply_gate_by_hand():
    descriptors = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    got = apply_gate(descriptors, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(got, torch.tensor([[0.3, 0.4], [0.0, 1.0]]))


def test_auto_gates_bimodal_scores_with_the_mixture_posterior():
    gate = NormalityGate("auto", random_state=0).fit(BIMODAL)
    assert gate.bimodality_ > BIMODALITY_THRESHOLD
    assert gate.active_ and gate.kind_ == "gmm"
    weights = gate.weights(BIMODAL)
    assert weights[:30].max() < 0.01 and weights[30:].min() > 0.99
    assert 0.1 < gate.threshold_ < 0.9
    expected = gate.mixture_.predict_proba(BIMODAL[:, None])[:, gate._high_component()]
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-30)
    # between the groups the weight is partial: those images keep part of their descriptor
    assert 0.01 < gate.weights([gate.threshold_])[0] < 0.99
    assert "images scoring below about" in gate.summary()


def test_auto_leaves_unimodal_scores_ungated():
    gate = NormalityGate("auto").fit(UNIMODAL)
    assert gate.bimodality_ < BIMODALITY_THRESHOLD and not gate.active_
    np.testing.assert_array_equal(gate.weights(UNIMODAL), 1.0)
    assert "not needed" in gate.summary()


def test_otsu_given_and_none_rules():
    otsu = NormalityGate("otsu", width=0.1).fit(BIMODAL)
    assert otsu.kind_ == "logistic" and otsu.threshold_ == otsu_threshold(
        torch.from_numpy(BIMODAL)
    )
    assert otsu.scale_ == pytest.approx(0.1 * BIMODAL.std(ddof=1))
    expected = 1 / (1 + np.exp(-(BIMODAL - otsu.threshold_) / otsu.scale_))
    np.testing.assert_allclose(otsu.weights(BIMODAL), expected, rtol=1e-5)
    hard = NormalityGate(0.5, width=0).fit(UNIMODAL)
    np.testing.assert_array_equal(hard.weights([0.4, 0.6]), [0.0, 1.0])
    off = NormalityGate(None).fit(BIMODAL)
    assert not off.active_ and "turned off" in off.summary()


def test_equal_scores_are_not_gated():
    gate = NormalityGate("gmm").fit(np.ones(10))
    assert not gate.active_


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
