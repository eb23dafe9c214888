"""skanomclust: blind localization and clustering of anomaly types in textures.

Scikit-learn estimators implementing and extending Ardelean & Weyrich,
"Blind Localization and Clustering of Anomalies in Textures" (CVPRW 2024).
The method's steps, each in its own module:

1. :class:`TextureFeatureExtractor` (``features.py``): pretrained CNN feature maps;
2-3. :class:`BlindAnomalyLocalizer` (``localization.py``): per-pixel VAE + FCA maps;
4. :class:`AnomalyWeightedPooling` (``pooling.py``): anomaly-weighted descriptors;
5. :class:`ContrastiveRefiner` (``refinement.py``): contrastive descriptors;
6. :class:`WardClustering` (``clustering.py``): Ward clustering with ``predict``.
"""

from ._version import __version__
from .clustering import WardClustering
from .features import TextureFeatureExtractor
from .localization import BlindAnomalyLocalizer
from .pipeline import make_blind_pipeline
from .pooling import AnomalyWeightedPooling
from .refinement import ContrastiveRefiner

__all__ = [
    "AnomalyWeightedPooling",
    "BlindAnomalyLocalizer",
    "ContrastiveRefiner",
    "TextureFeatureExtractor",
    "WardClustering",
    "__version__",
    "make_blind_pipeline",
]
