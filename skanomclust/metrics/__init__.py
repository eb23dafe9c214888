"""Evaluation metrics: clustering of anomaly types and pixel-level localization.

Clustering quality is measured against ground-truth classes with NMI, ARI and an F1 score after
Hungarian matching of clusters to classes. Localization quality is measured against ground-truth
pixel masks with the pixel-level ROC AUC and the area under the per-region-overlap curve (AU-PRO)
of MVTec AD (Bergmann et al., IJCV 2021); for large inputs both come from one histogram of the
scores, within 1e-5 of the exact values (see :func:`pixel_auroc`).
"""

from ._clustering import clustering_f1_score, clustering_report, format_clustering_report
from ._localization import au_pro, localization_report, pixel_auroc

__all__ = [
    "au_pro",
    "clustering_f1_score",
    "clustering_report",
    "format_clustering_report",
    "localization_report",
    "pixel_auroc",
]
