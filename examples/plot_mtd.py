"""
Magnetic tile defects (MTD): the method on real data
====================================================

The Magnetic Tile Defect data set (Huang et al., The Visual Computer 2020)
in the MVTec AD layout: 1344 grayscale photographs of magnetic tiles, 952
without defect and 392 with one of five defect types (blowhole, break, crack,
fray, uneven). All images are clustered blindly into six groups, as in the
paper, and scored against the class folders.

This example needs the data at ``../shared/data/mtd/magnetic_tile`` (or set
``SKANOMCLUST_MTD``) and takes a few minutes on a CPU, so the documentation
shows it without running it. It does what the command line does::

    skanomclust cluster ../shared/data/mtd/magnetic_tile -k 6 --output mtd_output
"""

# %%
# Load the folder
# ---------------
# :func:`~skanomclust.datasets.load_texture_folder` reads the MVTec layout:
# file names, class labels and defect masks. The labels are never shown to
# the method.
import os
import sys
import time
from pathlib import Path

from skanomclust import make_blind_pipeline
from skanomclust.clustering import estimate_n_clusters
from skanomclust.datasets import load_texture_folder
from skanomclust.localization import resize_anomaly_maps
from skanomclust.metrics import clustering_report, format_clustering_report, localization_report
from skanomclust.report import write_report

root = Path(os.environ.get("SKANOMCLUST_MTD", "../shared/data/mtd/magnetic_tile"))
if not root.is_dir():
    print(f"MTD not found at {root}; set SKANOMCLUST_MTD to its folder. Nothing to do.")
    sys.exit(0)
data = load_texture_folder(root)
print(data.DESCR)

# %%
# Fit, one step at a time
# -----------------------
# Running the steps one by one fits exactly what ``pipeline.fit`` fits, and
# keeps the anomaly maps and descriptors for the report.
pipeline = make_blind_pipeline(n_clusters=6, image_size=256, random_state=0, verbose=True)
start = time.perf_counter()
features = pipeline["features"].fit_transform(data.filenames)
with_maps = pipeline["localizer"].fit_transform(features)
descriptors = pipeline["refiner"].fit_transform(with_maps)
labels = pipeline["clustering"].fit_predict(descriptors)
print(f"fitted in {time.perf_counter() - start:.0f} s")

# %%
# Scores
# ------
report = clustering_report(data.target, labels, target_names=data.target_names)
print(format_clustering_report(report))
maps = with_maps[:, -1]
full_size = resize_anomaly_maps(maps, [mask.shape for mask in data.masks])
print(localization_report(data.masks, full_size))

# %%
# How many clusters would the data suggest?
# -----------------------------------------
k, scores = estimate_n_clusters(descriptors)
print("estimated k:", k, {c: round(s, 3) for c, s in scores.items()})

# %%
# The HTML report
# ---------------
# One gallery per cluster, the defects outlined, a t-SNE map of the
# descriptors and the scores. Open ``mtd_report.html`` in a browser.
write_report(
    "mtd_report.html",
    data.filenames,
    labels,
    maps,
    maps.reshape(len(maps), -1).max(axis=1),
    descriptors,
    target=data.target,
    target_names=data.target_names,
    metrics=report,
    threshold=pipeline["refiner"].threshold_,
)

# sphinx_gallery_thumbnail_path = '_static/report_top.jpg'
