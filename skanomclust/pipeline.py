"""The whole method as one scikit-learn Pipeline."""

from __future__ import annotations

from sklearn.pipeline import Pipeline

from .clustering import WardClustering
from .features import TextureFeatureExtractor
from .localization import BlindAnomalyLocalizer
from .pooling import AnomalyWeightedPooling
from .refinement import ContrastiveRefiner

__all__ = ["make_blind_pipeline"]


def make_blind_pipeline(
    n_clusters="auto",
    *,
    backbone="mobilenet_v2",
    weights="offline",
    image_size=256,
    dtype="float16",
    device="cpu",
    contrastive=True,
    random_state=None,
    memory=None,
    verbose=False,
):
    """The default blind localization + clustering pipeline.

    Steps (names in brackets; every parameter of every step is reachable as
    ``<name>__<parameter>``, e.g. for ``GridSearchCV`` or ``set_params``):
    ``TextureFeatureExtractor`` [features] -> ``BlindAnomalyLocalizer``
    [localizer] -> ``ContrastiveRefiner`` [refiner] -> ``WardClustering``
    [clustering]; with ``contrastive=False`` the refiner is replaced by
    ``AnomalyWeightedPooling`` [pooling] (the paper's "w/o CL" variant).

    Parameters
    ----------
    n_clusters : int or "auto", default="auto"
        Number of anomaly types (including "no anomaly"), or "auto". An int
        goes to the clustering step and to the refiner, whose pixel threshold
        then follows the paper's k-means rule (Otsu's with "auto"). To try
        another k on a built pipeline, set both ``clustering__n_clusters`` and
        ``refiner__n_clusters``.
    backbone, weights, image_size :
        Passed to :class:`TextureFeatureExtractor`.
    dtype : {"float16", "float32"}, default="float16"
        Storage type of the feature maps between steps (passed to
        :class:`TextureFeatureExtractor`; every step computes in float32).
        Half precision halves the memory of the two largest arrays; on MTD
        its anomaly maps correlate with the float32 ones at 0.9999 (user
        guide, "Speed, memory and threads").
    device : str, default="cpu"
        Torch device of every step.
    contrastive : bool, default=True
        Train the contrastive head (paper step 5). False pools the backbone
        features directly: about 35 s less on MTD's 1344 images at 256 px, and
        on MTD as good within noise (user guide, "Results on MTD"), because the
        contrastive step learns from pixel labels as noisy as the maps.
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
                    dtype=dtype,
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
                (
                    "refiner",
                    ContrastiveRefiner(
                        n_clusters=None if n_clusters == "auto" else n_clusters,
                        device=device,
                        random_state=random_state,
                        verbose=verbose,
                    ),
                )
                if contrastive
                else ("pooling", AnomalyWeightedPooling())
            ),
            ("clustering", WardClustering(n_clusters=n_clusters)),
        ],
        memory=memory,
    )
