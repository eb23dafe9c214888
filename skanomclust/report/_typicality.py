"""How typical each image is of its cluster, and which clusters to merge or split.

The review page needs these figures but not the descriptors themselves (a page
with 5000 descriptors of 192 numbers would weigh tens of megabytes and give
nothing a person reads). They are computed here from the descriptors:

- the distance of each image's descriptor to its cluster's centre (the mean
  descriptor of its images): the smallest are the cluster's most typical images,
  the largest its least typical ones;
- a confidence per image, ``1 - d_own / d_other``, from the distance to its own
  centre and to the nearest other centre: 1 at its own centre, 0 half-way between
  two centres (or nearer another centre than its own: then the clustering put it
  where the centres alone would not);
- merge suggestions: pairs of clusters whose centres lie closer than the two
  clusters' spreads (root mean square distance to the centre) added up, so their
  images overlap;
- split suggestions: clusters much more spread out than the typical cluster that
  two-means cuts into two well-separated groups (mean silhouette of the cut above
  :data:`SPLIT_SILHOUETTE`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

#: A pair of clusters is suggested for a merge below this ratio of centre distance
#: to the sum of their spreads.
MERGE_RATIO = 1.0
#: A cluster is suggested for a split when at least this much more spread out than
#: the median cluster ...
SPLIT_SPREAD = 1.25
#: ... and its two-means cut has at least this mean silhouette.
SPLIT_SILHOUETTE = 0.2
MAX_SUGGESTIONS = 3


def cluster_statistics(descriptors, labels, clusters):
    """Centres, spreads, each image's distance to its centre, nearest other cluster, confidence.

    Parameters
    ----------
    descriptors : ndarray of shape (n_images, n_features)
    labels : ndarray of shape (n_images,), int
    clusters : list of int
        The cluster ids, in the order of the returned centres.

    Returns
    -------
    stats : dict
        ``centres`` (k, d), ``spread`` (k,), ``distance`` (n,), ``nearest`` (n,:
        id of the nearest other cluster, or -1 with one cluster) and
        ``confidence`` (n,) in [0, 1].
    """
    X = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1)
    index = {c: j for j, c in enumerate(clusters)}
    position = np.array([index[c] for c in labels.tolist()], dtype=np.intp)
    centres = np.stack([X[position == j].mean(axis=0) for j in range(len(clusters))])
    distance = np.empty(len(X))
    nearest = np.full(len(X), -1)
    confidence = np.ones(len(X))
    for start in range(0, len(X), 2048):  # never an n x k matrix of a huge run at once
        rows = slice(start, start + 2048)
        block = cdist(X[rows], centres)
        own = block[np.arange(len(block)), position[rows]]
        distance[rows] = own
        if len(clusters) > 1:
            block[np.arange(len(block)), position[rows]] = np.inf
            other = block.argmin(axis=1)
            nearest[rows] = np.asarray(clusters)[other]
            d_other = block[np.arange(len(block)), other]
            confidence[rows] = np.clip(1.0 - own / np.maximum(d_other, 1e-12), 0.0, 1.0)
    spread = np.array(
        [np.sqrt(np.mean(distance[position == j] ** 2)) for j in range(len(clusters))]
    )
    return {
        "centres": centres,
        "spread": spread,
        "distance": distance,
        "nearest": nearest,
        "confidence": confidence,
    }


def merge_suggestions(clusters, centres, spread):
    """Pairs of clusters whose centres are closer than their spreads added up, closest first.

    Returns
    -------
    suggestions : list of dict
        ``{"kind": "merge", "clusters": [a, b], "ratio": r}``, at most
        :data:`MAX_SUGGESTIONS`.
    """
    if len(clusters) < 2:
        return []
    gaps = cdist(centres, centres)
    pairs = []
    for a in range(len(clusters)):
        for b in range(a + 1, len(clusters)):
            ratio = gaps[a, b] / max(spread[a] + spread[b], 1e-12)
            if ratio < MERGE_RATIO:
                pairs.append((ratio, clusters[a], clusters[b]))
    pairs.sort()
    return [
        {"kind": "merge", "clusters": [int(a), int(b)], "ratio": round(float(r), 3)}
        for r, a, b in pairs[:MAX_SUGGESTIONS]
    ]


def split_suggestions(descriptors, labels, clusters, spread, random_state=0):
    """Spread-out clusters that two-means cuts cleanly, most spread out first.

    Returns
    -------
    suggestions : list of dict
        ``{"kind": "split", "cluster": c, "images": [...], "silhouette": s,
        "spread_ratio": r}``: ``images`` are the indices of the smaller group,
        which would become a new cluster. At most :data:`MAX_SUGGESTIONS`.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    if len(clusters) == 0:
        return []
    X = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1)
    typical = float(np.median(spread)) if len(clusters) > 1 else 0.0
    found = []
    for j in np.argsort(-spread, kind="stable"):
        members = np.flatnonzero(labels == clusters[j])
        ratio = spread[j] / typical if typical > 0 else np.inf
        if len(members) < 6 or ratio < SPLIT_SPREAD or not spread[j] > 0:
            continue  # (equal descriptors: nothing to split)
        part = KMeans(2, n_init=3, random_state=random_state).fit_predict(X[members])
        smaller = int(np.argmin(np.bincount(part, minlength=2)))
        if np.sum(part == smaller) < max(2, 0.05 * len(members)):
            continue  # a few outliers are no second type
        sample = min(len(members), 1000)
        silhouette = float(
            silhouette_score(X[members], part, sample_size=sample, random_state=random_state)
        )
        if silhouette >= SPLIT_SILHOUETTE:
            found.append(
                {
                    "kind": "split",
                    "cluster": int(clusters[j]),
                    "images": members[part == smaller].tolist(),
                    "silhouette": round(silhouette, 3),
                    "spread_ratio": round(float(min(ratio, 1e6)), 3),
                }
            )
        if len(found) == MAX_SUGGESTIONS:
            break
    return found
