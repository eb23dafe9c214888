"""skanomclust: blind localization and clustering of anomaly types in textures.

Scikit-learn estimators implementing and extending Ardelean & Weyrich,
"Blind Localization and Clustering of Anomalies in Textures" (CVPRW 2024).
"""

from ._version import __version__
from .features import TextureFeatureExtractor

__all__ = ["TextureFeatureExtractor", "__version__"]
