"""The HTML report of a run: what was found, and a page to review it.

:func:`write_report` turns the result of :func:`skanomclust.run.cluster_images` (or
:func:`~skanomclust.run.assign_images`) into one HTML page that opens offline in any
browser:

- a summary: numbers of images and clusters, the scores against the class folders
  when there are any, the normality gate's decision, the score of each k when the
  number of clusters was chosen automatically, the cluster of normal-looking images;
- a 2-D map of the image descriptors, coloured by cluster (and by class);
- one gallery per cluster, the anomalous region of each image outlined and its
  anomaly map on hover, each image enlarged on a click;
- the review: rename, merge and split clusters, move images, mark them as "no
  defect", undo and redo, with each cluster's most and least typical images, a
  confidence per image and suggested merges and splits. The decisions are kept in
  the browser and downloaded as ``review.json`` and ``labels.csv`` for
  :func:`skanomclust.review.apply_review`.

How it is built: Python computes every figure and writes it into the page as one
JSON object (``<script type="application/json" id="report-data">``, see
:mod:`._payload`); the page's scripts (``templates/report.js``, ``review.js``) lay it
out. Pictures are drawn by :mod:`._pictures`. Nothing here imports torch.
"""

from ._page import EMBED_LIMIT, write_report

__all__ = ["EMBED_LIMIT", "write_report"]
