"""The one public run API: cluster a set of images, or assign images to a fitted model's clusters.

:func:`cluster_images` fits the blind pipeline (:func:`make_blind_pipeline`) on
the images, or on a random sample of them, then streams every image through
the fitted model in chunks; :func:`assign_images` does the second part for a
saved model. Both return a :class:`~sklearn.utils.Bunch` of everything a
person or a report needs: labels, anomaly maps, image scores, descriptors, the
number of clusters and how it was chosen, the gate's decision and the seconds
spent per step. The command line (:mod:`skanomclust.cli`) is a thin layer over
these two functions, and the HTML report renders what they return.

Memory stays bounded whatever the number of images: features (the largest
arrays) exist only for the fitted sample and for one chunk at a time of the
streaming pass (:mod:`skanomclust._streaming`); the per-image results (a small
anomaly map, a descriptor, a label) go to files in ``work_dir`` when one is
given, which also lets an interrupted run resume without redoing finished
chunks (:mod:`skanomclust._work`). With a
``dask.distributed`` client the chunks run on the cluster's workers, the
fitted model shipped to each worker once (:mod:`skanomclust._distributed`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._random import Seeds
from ._streaming import _run_steps, _stream, _take, assign_chunk
from ._torch import keep_freed_blocks_for_reuse
from ._work import WorkFolder
from .pipeline import make_blind_pipeline

__all__ = ["assign_chunk", "assign_images", "cluster_images", "embed_descriptors"]

#: Images fitted on when ``sample_size="auto"``: every image of a set up to this
#: size, a random sample of this many beyond (see the user guide, "Large sets").
AUTO_SAMPLE_SIZE = 2000
_STEPS = ("features", "localizer", "descriptors", "clustering")


def _sample_indices(n, sample_size, seeds):
    if sample_size == "auto":
        sample_size = AUTO_SAMPLE_SIZE
    if isinstance(sample_size, float):
        if not 0 < sample_size <= 1:
            raise ValueError(f"A fractional sample_size must be in (0, 1], got {sample_size}")
        sample_size = int(round(sample_size * n))
    sample_size = int(sample_size)
    if sample_size < 2:
        raise ValueError(f"sample_size must leave at least 2 images to fit on, got {sample_size}")
    if sample_size >= n:
        return np.arange(n)
    return np.sort(seeds.numpy("sample").choice(n, sample_size, replace=False))


def _fit(model, images, timings):
    """Fit the pipeline step by step (exactly as ``Pipeline.fit``), timing each step."""
    return _run_steps(model, images, timings, fit=True)


def cluster_images(
    images,
    n_clusters="auto",
    *,
    preset="default",
    backbone="mobilenet_v2",
    weights="offline",
    image_size=256,
    dtype="float16",
    device="cpu",
    contrastive=None,
    params=None,
    sample_size="auto",
    chunk_size=256,
    client=None,
    work_dir=None,
    random_state=0,
    on_chunk=None,
    verbose=False,
):
    """Localize anomalies in a set of images and cluster the images by anomaly type.

    Parameters
    ----------
    images : list or ndarray
        File paths, PIL images or arrays (see :class:`TextureFeatureExtractor`).
    n_clusters : int or "auto", default="auto"
        Number of anomaly types (including "no anomaly"), or "auto".
    preset, backbone, weights, image_size, dtype, device, contrastive :
        Passed to :func:`make_blind_pipeline`.
    params : dict, optional
        More pipeline parameters, ``{"step__parameter": value}``.
    sample_size : int, float or "auto", default="auto"
        Images the method is fitted on: a number, a share of the images, or
        ``"auto"``: all of them up to :data:`AUTO_SAMPLE_SIZE`, a random sample
        of that many beyond. The others are assigned by the fitted model.
    chunk_size : int, default=256
        Images per chunk of the streaming pass.
    client : dask.distributed.Client, optional
        Run the streaming pass on this cluster's workers (the model is sent to
        each once); the workers must read the same image paths.
    work_dir : path-like, optional
        Folder for the per-image results and the fitted model as they are
        computed. An interrupted run called again with the same folder (and the
        same images and settings) resumes without redoing finished chunks.
        Without it, results are kept in memory.
    random_state : int, RandomState instance or None, default=0
        Seeds every random step, the sample included.
    on_chunk : callable, optional
        Called as ``on_chunk(indices, result)`` for every chunk in input order
        once its images are assigned (to write results as they come).
    verbose : bool, default=False
        Progress bars.

    Returns
    -------
    result : Bunch
        ``labels`` (n,), ``anomaly_maps`` (n, h, w) float32 at feature
        resolution (a read-only memory map with ``work_dir``),
        ``image_scores`` (n,), ``descriptors`` (n, d), ``n_clusters``,
        ``n_clusters_scores`` (dict of the automatic choice, or None),
        ``normal_cluster`` (the cluster of lowest mean score when the gate
        found a group of normal images, else None), ``gate`` (one line),
        ``region_threshold`` (map level above which pixels are outlined as
        anomalous in reports),
        ``sample_indices``, ``timings`` (seconds per step: fit and streaming
        pass) and ``model`` (the fitted pipeline).

    Notes
    -----
    A whole job runs many batches of the same sizes, so on glibc (Linux) the
    first call of this function or :func:`assign_images` lets ``malloc`` keep
    freed blocks of up to 48 MiB for the next batch instead of mapping fresh
    pages each time, for the rest of the process ("Speed and memory" in the
    user guide has the measured gain). The estimators alone leave the
    process's allocator as it is.
    """
    keep_freed_blocks_for_reuse()
    seeds = Seeds(random_state)
    n = len(images)
    if n < 2:
        raise ValueError(f"Found {n} image; clustering needs at least 2.")
    if n_clusters != "auto" and n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of images ({n}).")
    work = WorkFolder.open(
        work_dir,
        images,
        {
            "n_clusters": n_clusters,
            "preset": preset,
            "backbone": backbone,
            "weights": str(weights),
            "image_size": image_size,
            "dtype": dtype,
            "contrastive": contrastive,
            "params": params,
            "sample_size": sample_size,
            "chunk_size": chunk_size,
            "random_state": random_state,
        },
    )
    timings = {}
    fitted = work.load_fit()
    if fitted is None:
        model = make_blind_pipeline(
            n_clusters,
            preset=preset,
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            dtype=dtype,
            device=device,
            contrastive=contrastive,
            random_state=random_state,
            verbose=verbose,
        )
        if params:
            model.set_params(**params)
        sample = _sample_indices(n, sample_size, seeds)
        fit = _fit(model, _take(images, sample), timings)
        work.save_fit(model, sample, fit, timings)
    else:
        model, sample, fit, saved = fitted
        timings.update(saved)
    result = _stream(
        model, images, sample, fit, chunk_size, client, work, on_chunk, verbose, timings
    )
    result.sample_indices = sample
    return result


def assign_images(
    model, images, *, chunk_size=256, client=None, work_dir=None, on_chunk=None, verbose=False
):
    """Assign images to the clusters of a fitted model, in chunks.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        A fitted blind pipeline (e.g. ``result.model``, or a saved ``model.joblib``).
    images : list or ndarray
    chunk_size, client, work_dir, on_chunk, verbose :
        As in :func:`cluster_images`.

    Returns
    -------
    result : Bunch
        As :func:`cluster_images` returns (``sample_indices`` empty).

    Notes
    -----
    Tunes glibc's ``malloc`` for batch loops, as :func:`cluster_images` does.
    """
    keep_freed_blocks_for_reuse()
    if len(images) < 1:
        raise ValueError("Found no image to assign.")
    work = WorkFolder.open(
        work_dir,
        images,
        {"assign": True, "chunk_size": chunk_size, "model": _model_digest(model)},
    )
    timings = {}
    result = _stream(
        model, images, np.arange(0), None, chunk_size, client, work, on_chunk, verbose, timings
    )
    result.sample_indices = np.arange(0)
    return result


def _model_digest(model):
    """A fitted model's identity, the same after saving and loading (``joblib.hash`` is not).

    A digest of the arrays fitted by its last step (the clustering's centres and
    training descriptors), so that a work folder is never resumed with another model.
    """
    digest = hashlib.sha256()
    for name, value in sorted(vars(model.steps[-1][1]).items()):
        if isinstance(value, np.ndarray):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def embed_descriptors(descriptors, *, random_state=0, max_points=3000):
    """2-D coordinates of descriptors for a map of the clusters (t-SNE, PCA for few points).

    t-SNE (:class:`sklearn.manifold.TSNE`, PCA initialisation) from 5 images on,
    PCA below (t-SNE needs more points than its perplexity). Beyond
    ``max_points`` descriptors, a random subset of that many is embedded (the
    others get NaN), which bounds the time.

    Parameters
    ----------
    descriptors : array-like of shape (n_images, n_features)
    random_state : int, default=0
        Seeds t-SNE and the subset.
    max_points : int, default=3000

    Returns
    -------
    coordinates : ndarray of shape (n_images, 2)
    """
    X = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1)
    n = len(X)
    coordinates = np.full((n, 2), np.nan)
    chosen = np.arange(n)
    if n > max_points:
        chosen = np.sort(Seeds(random_state).numpy("embedding").choice(n, max_points, False))
    X = X[chosen]
    if len(X) >= 5 and np.ptp(X, axis=0).max(initial=0.0) > 0:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3.0)))
        coordinates[chosen] = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            random_state=Seeds(random_state).legacy("embedding"),
        ).fit_transform(X)
        return coordinates
    coordinates[chosen] = 0.0
    if len(X) >= 2 and np.ptp(X, axis=0).max(initial=0.0) > 0:
        from sklearn.decomposition import PCA

        k = min(2, len(X) - 1, X.shape[1])
        coordinates[chosen, :k] = PCA(n_components=k).fit_transform(X)
    return coordinates
