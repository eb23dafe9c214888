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
from pathlib import Path

from skanomclust import WardClustering, cluster_images
from skanomclust.datasets import load_texture_folder
from skanomclust.localization import resize_anomaly_maps
from skanomclust.metrics import clustering_report, format_clustering_report, localization_report
from skanomclust.report import write_report
from skanomclust.run import embed_descriptors

root = Path(os.environ.get("SKANOMCLUST_MTD", "../shared/data/mtd/magnetic_tile"))
if not root.is_dir():
    print(f"MTD not found at {root}; set SKANOMCLUST_MTD to its folder. Nothing to do.")
    sys.exit(0)
data = load_texture_folder(root)
print(data.DESCR)

# %%
# Fit
# ---
# :func:`~skanomclust.cluster_images` fits the default pipeline (this
# package's configuration; ``preset="paper"`` for the paper's) and returns the
# labels with the anomaly maps, image scores and descriptors of every image,
# what the method decided on its own, and the seconds per step.
result = cluster_images(data.filenames, n_clusters=6, random_state=0, verbose=True)
print(result.gate)
print({step: round(seconds) for step, seconds in result.timings.items()})

# %%
# Scores
# ------
report = clustering_report(data.target, result.labels, target_names=data.target_names)
print(format_clustering_report(report))
full_size = resize_anomaly_maps(result.anomaly_maps, [mask.shape for mask in data.masks])
print(localization_report(data.masks, full_size))

# %%
# How many clusters would the data suggest?
# -----------------------------------------
# The descriptors do not depend on k: estimating it is a new Ward clustering.
ward = WardClustering(n_clusters="auto", random_state=0).fit(result.descriptors)
print("estimated k:", ward.n_clusters_)
print({k: round(float(score), 3) for k, score in (ward.n_clusters_scores_ or {}).items()})

# %%
# The HTML report
# ---------------
# One gallery per cluster, the defects outlined, a map of the descriptors,
# the scores, and the review page. Open ``mtd_report.html`` in a browser.
write_report(
    "mtd_report.html",
    result,
    data.filenames,
    [str(Path(name).relative_to(root)) for name in data.filenames],
    coordinates=embed_descriptors(result.descriptors, random_state=0),
    target=data.target,
    target_names=data.target_names,
    metrics={**report, "localization": localization_report(data.masks, full_size)},
)

# sphinx_gallery_thumbnail_path = '_static/report_top.jpg'
