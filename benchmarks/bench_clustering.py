"""Why Ward: clustering algorithms compared on the default descriptors, over the quality suite.

The last step of the method (step 5) groups the image descriptors with Ward's
agglomerative clustering, as the paper does. This script checks that choice
against the usual alternatives, on the same descriptors: the default
pipeline's (``AnomalyWeightedPooling`` with its defaults, normality gate
included) built from the features and the default localizer's maps that
``bench_views.py`` caches (``--cache``, computed there once per protocol and
seed), clustered at the protocol's true k by

- ``ward``: :class:`skanomclust.WardClustering`, one Ward clustering (the
  paper's, and this package's default before 0.3);
- ``consensus ward (50)``: ``WardClustering(n_resamples=50)``, the consensus
  of 50 Ward clusterings of random 80% subsets (the default since 0.3);
- ``ward + k-means``: k-means started from Ward's cluster means (one run);
- ``k-means (10 starts)``: k-means++ with ten starts, seeded;
- ``PCA 32 + ward``: Ward on the 32 leading principal components;
- ``spectral (10-NN)``: spectral clustering on the symmetrised 10-nearest-
  neighbour graph, seeded;
- ``average, cosine``: average-linkage agglomeration on cosine distances.

Seeds 0-5 (the localizer's and every seeded algorithm's ``random_state``);
the table shows seeds 0-2 and 3-5 apart, as ``bench_views.py`` does.

Usage::

    python benchmarks/bench_clustering.py [--seeds 0 1 2 3 4 5] [--protocols ...]
        [--cache benchmarks/.views_cache] [--output benchmarks/results/clustering_choice.json]

About four minutes on this 2-core machine once the cache exists (building the
cache is ``bench_views.py``'s job: about 25 minutes per three seeds).
"""

from __future__ import annotations

import numpy as np
from bench_suite import load_protocol, score
from bench_views import cached_maps, cached_maps_parser, run_and_write
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.decomposition import PCA

from skanomclust import AnomalyWeightedPooling, WardClustering


def partitions(descriptors, k, seed):
    """Every algorithm compared: name -> labels."""
    ward = WardClustering(n_clusters=k).fit_predict(descriptors)
    means = np.stack([descriptors[ward == c].mean(0) for c in range(k)])
    return {
        "ward": ward,
        "consensus ward (50)": WardClustering(
            n_clusters=k, n_resamples=50, random_state=seed
        ).fit_predict(descriptors),
        "ward + k-means": KMeans(k, init=means, n_init=1).fit_predict(descriptors),
        "k-means (10 starts)": KMeans(k, n_init=10, random_state=seed).fit_predict(descriptors),
        "PCA 32 + ward": WardClustering(n_clusters=k).fit_predict(
            PCA(min(32, *descriptors.shape), random_state=seed).fit_transform(descriptors)
        ),
        "spectral (10-NN)": SpectralClustering(
            k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed
        ).fit_predict(descriptors),
        "average, cosine": AgglomerativeClustering(
            k, metric="cosine", linkage="average"
        ).fit_predict(descriptors),
    }


def run_protocol(name, seeds, cache):
    _, target, k = load_protocol(name)
    features, maps = cached_maps(name, seeds, cache)
    result = {}
    for seed in seeds:
        localized = np.concatenate([features, maps[seed][:, None].astype(features.dtype)], 1)
        descriptors = AnomalyWeightedPooling(random_state=seed).fit_transform(localized)
        result[seed] = {
            row: score(target, labels) for row, labels in partitions(descriptors, k, seed).items()
        }
        print(
            f"  {name} seed {seed}: "
            + ", ".join(f"{row} {r['nmi']:.3f}" for row, r in result[seed].items()),
            flush=True,
        )
    return result


def main():
    parser = cached_maps_parser(__doc__.split("\n")[0], "clustering_choice.json")
    args = parser.parse_args()
    run_and_write(run_protocol, args)


if __name__ == "__main__":
    main()
