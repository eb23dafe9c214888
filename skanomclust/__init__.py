"""skanomclust: blind localization and clustering of anomaly types in textures.

Scikit-learn estimators implementing and extending Ardelean & Weyrich,
"Blind Localization and Clustering of Anomalies in Textures" (CVPRW 2024).
The method's steps, each in its own module:

1. :class:`TextureFeatureExtractor` (``features.py``): pretrained CNN feature maps;
2-3. :class:`BlindAnomalyLocalizer` (``localization.py``): per-pixel VAE + FCA maps;
4. :class:`AnomalyWeightedPooling` (``pooling.py``): image descriptors;
5. :class:`ContrastiveRefiner` (``contrastive.py``): contrastive descriptors;
6. :class:`WardClustering` (``clustering.py``): Ward clustering with ``predict``.

How the steps pass data to each other: :mod:`skanomclust.contract`. The whole
method in one call: :func:`cluster_images` and :func:`assign_images`
(:mod:`skanomclust.run`), on which the command line is built.

The names are imported on first use, so that ``import skanomclust.cli`` (the
command line) starts without loading torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_LAZY = {
    "AnomalyWeightedPooling": "pooling",
    "BlindAnomalyLocalizer": "localization",
    "ContrastiveRefiner": "contrastive",
    "PRESETS": "pipeline",
    "TextureFeatureExtractor": "features",
    "WardClustering": "clustering",
    "assign_images": "run",
    "cluster_images": "run",
    "make_blind_pipeline": "pipeline",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
