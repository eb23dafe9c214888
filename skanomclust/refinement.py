"""Deprecated alias of :mod:`skanomclust.contrastive` (renamed after the paper's step)."""

import warnings

from . import contrastive as _contrastive


def __getattr__(name):
    value = getattr(_contrastive, name)  # AttributeError for names that never existed
    warnings.warn(
        "skanomclust.refinement is renamed skanomclust.contrastive; import "
        f"{name} from there (or from skanomclust). The alias will be removed in 0.4.",
        FutureWarning,
        stacklevel=2,
    )
    return value
