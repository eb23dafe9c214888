"""The whole method as one scikit-learn Pipeline."""

from __future__ import annotations

from sklearn.pipeline import Pipeline

from .clustering import WardClustering
from .features import TextureFeatureExtractor
from .localization import BlindAnomalyLocalizer
from .refinement import ContrastiveRefiner

__all__ = ["make_blind_pipeline"]


def make_blind_pipeline(
    n_clusters="auto",
    *,
    backbone="mobilenet_v2",
    weights="offline",
    image_size=256,
    device="cpu",
    random_state=None,
    memory=None,
    verbose=False,
):
    """The default blind localization + clustering pipeline.

    Steps (names in brackets; every parameter of every step is reachable as
    ``<name>__<parameter>``, e.g. for ``GridSearchCV`` or ``set_params``):
    ``TextureFeatureExtractor`` [features] -> ``BlindAnomalyLocalizer``
    [localizer] -> ``ContrastiveRefiner`` [refiner] -> ``WardClustering``
    [clustering].

    Parameters
    ----------
    n_clusters : int or "auto", default="auto"
        Number of anomaly types (including "no anomaly"), or "auto".
    backbone, weights, image_size :
        Passed to :class:`TextureFeatureExtractor`.
    device : str, default="cpu"
        Torch device of every step.
    random_state : int, RandomState instance or None, default=None
        Seeds every random step (the same value for each).
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
    return Pipeline(
        [
            (
                "features",
                TextureFeatureExtractor(
                    backbone,
                    weights=weights,
                    image_size=image_size,
                    device=device,
                    random_state=random_state,
                    verbose=verbose,
                ),
            ),
            (
                "localizer",
                BlindAnomalyLocalizer(device=device, random_state=random_state, verbose=verbose),
            ),
            (
                "refiner",
                ContrastiveRefiner(device=device, random_state=random_state, verbose=verbose),
            ),
            ("clustering", WardClustering(n_clusters=n_clusters)),
        ],
        memory=memory,
    )
