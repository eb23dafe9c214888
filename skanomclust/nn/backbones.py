"""Deprecated alias of :mod:`skanomclust.nn.features` (named after the estimator's step)."""

import warnings

from . import features as _features


def __getattr__(name):
    value = getattr(_features, name)  # AttributeError for names that never existed
    warnings.warn(
        "skanomclust.nn.backbones is renamed skanomclust.nn.features; import "
        f"{name} from there. The alias will be removed in 0.4.",
        FutureWarning,
        stacklevel=2,
    )
    return value
