"""scikit-learn's estimator checks over every public estimator, in settings that run in seconds."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_get_feature_names_out_error,
    check_global_output_transform_pandas,
    check_param_validation,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# Settings are fixed at collection time (parametrize_with_checks needs instances), so they
# do not come from the fixtures of conftest.py; they are smaller still: 16-pixel input, and
# scikit-learn's checks feed tables, which the first step reads as one-row images.
def _estimators():
    return [
        # batch_size=1: see test_feature_extractor_is_per_image_up_to_float_rounding
        TextureFeatureExtractor(weights=None, image_size=16, batch_size=1, random_state=0),
        BlindAnomalyLocalizer(
            n_steps=5, pixels_per_step=64, hidden_channels=8, latent_channels=4, random_state=0
        ),
        AnomalyWeightedPooling(),
        ContrastiveRefiner(n_epochs=1, hidden_channels=8, out_channels=4, random_state=0),
        WardClustering(),
    ]


def _variants():
    """Other configurations of the same classes: the paper's steps, automatic and resampled k."""
    return [
        AnomalyWeightedPooling(appearance_weight=0.0, gate=None),
        ContrastiveRefiner(
            threshold="kmeans",
            threshold_clusters=2,
            appearance_weight=0.0,
            gate=None,
            n_epochs=1,
            hidden_channels=8,
            out_channels=4,
            random_state=0,
        ),
        WardClustering(n_clusters="auto", random_state=0),
        WardClustering(n_resamples=3, random_state=0),
    ]


# Checks that cannot apply, per estimator class, each with its reason. Empty: every check
# of scikit-learn passes. (xfail_strict = true: a check listed here that passes fails.)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(
    [*_estimators(), *_variants()], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _ids(estimators):
    return [type(estimator).__name__ for estimator in estimators]


# Checks that scikit-learn runs on its own estimators but parametrize_with_checks does not yield.
@pytest.mark.parametrize("estimator", _estimators(), ids=_ids(_estimators()))
@pytest.mark.parametrize(
    "check", [check_param_validation, check_dataframe_column_names_consistency]
)
def test_validation_and_feature_names_in(estimator, check):
    check(type(estimator).__name__, estimator)


# Estimators whose output is 2-D for 2-D input (the localizer: (n, C + 1) for (n, C)).
_TWO_D_OUTPUT = [
    estimator for estimator in _estimators() if hasattr(estimator, "get_feature_names_out")
]


def test_which_estimators_name_their_output():
    assert _ids(_TWO_D_OUTPUT) == [
        "BlindAnomalyLocalizer",
        "AnomalyWeightedPooling",
        "ContrastiveRefiner",
    ]


@pytest.mark.parametrize("estimator", _TWO_D_OUTPUT, ids=_ids(_TWO_D_OUTPUT))
@pytest.mark.parametrize(
    "check",
    [
        check_get_feature_names_out_error,
        check_transformer_get_feature_names_out,
        check_transformer_get_feature_names_out_pandas,
        check_set_output_transform,
        check_set_output_transform_pandas,
        check_global_output_transform_pandas,
    ],
)
def test_feature_names_out_and_set_output(estimator, check):
    check(type(estimator).__name__, estimator)


def test_feature_extractor_is_per_image_up_to_float_rounding(tiny_textures, tiny_backbone):
    """What scikit-learn's subset and sample-order checks ask, at the default batch size.

    Those checks compare the transform of whole sets with that of single samples or of a
    permutation to within 1e-7 (1e-9 for the order). The backbone's convolutions (oneDNN)
    round differently for another batch size, so an image's features move by ~1e-6 of
    their scale with the batch it is in: exact with one image per batch (the setting the
    checks above run with), equal up to that rounding otherwise, checked here.
    """
    X = tiny_textures.images
    extractor = TextureFeatureExtractor(**tiny_backbone).fit(X)
    assert extractor.batch_size > 1
    whole = extractor.transform(X).astype(np.float32)
    tolerance = 1e-5 * np.abs(whole).max()
    alone = np.concatenate([extractor.transform(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(alone, whole, rtol=0, atol=tolerance)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(extractor.transform(X[order]), whole[order], rtol=0, atol=tolerance)
    single = TextureFeatureExtractor(**tiny_backbone, batch_size=1).fit(X)
    one_by_one = single.transform(X)
    np.testing.assert_array_equal(single.transform(X[order]), one_by_one[order])
    np.testing.assert_array_equal(single.transform(X[3:4]), one_by_one[3:4])
