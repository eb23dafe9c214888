"""The whole method as one scikit-learn Pipeline, in this package's or the paper's setup."""

from __future__ import annotations

from sklearn.pipeline import Pipeline

from .clustering import WardClustering
from .contrastive import ContrastiveRefiner
from .features import TextureFeatureExtractor
from .localization import BlindAnomalyLocalizer
from .pooling import AnomalyWeightedPooling

__all__ = ["PRESETS", "make_blind_pipeline"]

#: The configurations :func:`make_blind_pipeline` builds. ``"default"`` is this
#: package's, chosen on the benchmark suite (``benchmarks/bench_suite.py``);
#: ``"paper"`` reproduces Ardelean & Weyrich (CVPRW 2024) on the same backbone:
#: FCA on every channel, no position baseline but the paper's border frame, no
#: appearance view, no normality gate, features blurred before pooling (sigma 2),
#: the k-means pixel threshold, the contrastive step and one Ward clustering
#: (the default takes the consensus of 50 Ward clusterings of random subsets,
#: steadier across seeds). The VAE keeps this package's sampled-pixel schedule
#: in both.
PRESETS = {
    "default": {
        "contrastive": False,
        "localizer": {},
        "descriptor": {},
        "clustering": {"n_resamples": 50},
    },
    "paper": {
        "contrastive": True,
        "localizer": {"fca_components": None, "baseline": None, "border": "auto"},
        "descriptor": {"appearance_weight": 0.0, "gate": None, "blur_sigma": 2.0},
        "clustering": {"n_resamples": 0},
    },
}


def make_blind_pipeline(
    n_clusters="auto",
    *,
    preset="default",
    backbone="mobilenet_v2",
    weights="offline",
    image_size=256,
    dtype="float16",
    device="cpu",
    contrastive=None,
    random_state=None,
    memory=None,
    verbose=False,
):
    """The blind localization + clustering pipeline.

    Steps (names in brackets; every parameter of every step is reachable as
    ``<name>__<parameter>``, e.g. for ``GridSearchCV`` or ``set_params``):
    :class:`TextureFeatureExtractor` [features] -> :class:`BlindAnomalyLocalizer`
    [localizer] -> :class:`AnomalyWeightedPooling` [pooling] or, with the
    contrastive step, :class:`ContrastiveRefiner` [refiner] ->
    :class:`WardClustering` [clustering].

    Parameters
    ----------
    n_clusters : int or "auto", default="auto"
        Number of anomaly types (including "no anomaly"), or "auto".
    preset : {"default", "paper"}, default="default"
        ``"default"``: this package's configuration (:data:`PRESETS`).
        ``"paper"``: the paper's (needs an int ``n_clusters``: its pixel
        threshold uses k).
    backbone, weights, image_size :
        Passed to :class:`TextureFeatureExtractor`.
    dtype : {"float16", "float32"}, default="float16"
        Storage type of the feature maps between steps (every step computes in
        float32): half precision halves the memory of the largest arrays.
    device : str, default="cpu"
        Torch device of every step.
    contrastive : bool or None, default=None
        Whether to train the contrastive head (paper step 5); None follows the
        preset (off in ``"default"``, where it did not improve the clustering
        on the benchmark suite, on in ``"paper"``).
    random_state : int, RandomState instance or None, default=None
        Seeds every random step (each derives its own sub-seeds from it).
    memory : str, joblib.Memory or None, default=None
        Cache of fitted transformers (see :class:`sklearn.pipeline.Pipeline`):
        changing a later step's parameter then reuses the features.
    verbose : bool, default=False
        Progress bars.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        ``fit_predict(images)`` gives cluster labels; ``predict(new_images)``
        assigns new images.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    config = PRESETS[preset]
    if contrastive is None:
        contrastive = config["contrastive"]
    common = {"device": device, "random_state": random_state}
    descriptor = dict(config["descriptor"])
    if contrastive:
        if preset == "paper":
            if n_clusters == "auto":
                raise ValueError(
                    "preset='paper' needs an int n_clusters: the paper's pixel threshold uses k"
                )
            descriptor.update(threshold="kmeans", threshold_clusters=n_clusters)
        step = ("refiner", ContrastiveRefiner(**descriptor, verbose=verbose, **common))
    else:
        step = ("pooling", AnomalyWeightedPooling(**descriptor, **common))
    return Pipeline(
        [
            (
                "features",
                TextureFeatureExtractor(
                    backbone,
                    weights=weights,
                    image_size=image_size,
                    dtype=dtype,
                    verbose=verbose,
                    **common,
                ),
            ),
            (
                "localizer",
                BlindAnomalyLocalizer(
                    **config["localizer"], copy=False, verbose=verbose, **common
                ),
            ),
            step,
            (
                "clustering",
                WardClustering(
                    n_clusters=n_clusters, **config["clustering"], random_state=random_state
                ),
            ),
        ],
        memory=memory,
    )
