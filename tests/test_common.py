"""scikit-learn's estimator checks over every public estimator, in settings that run in seconds."""

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


def _estimators():
    return [
        TextureFeatureExtractor(weights=None, image_size=16, random_state=0),
        BlindAnomalyLocalizer(
            n_steps=5, pixels_per_step=64, hidden_channels=8, latent_channels=4, random_state=0
        ),
        AnomalyWeightedPooling(),
        ContrastiveRefiner(n_epochs=1, hidden_channels=8, out_channels=4, random_state=0),
        WardClustering(),
    ]


# Checks that cannot apply, per estimator class, each with its reason. Empty: every check
# of scikit-learn passes. (xfail_strict = true: a check listed here that passes fails.)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(_estimators(), expected_failed_checks=_expected_failed_checks)
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
