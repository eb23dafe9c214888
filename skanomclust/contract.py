"""The data contract between the steps of the method, in one place.

A fitted pipeline passes plain numpy arrays from step to step, so that
scikit-learn's ``Pipeline``, ``clone``, ``GridSearchCV`` and estimator checks
work unchanged:

1. images (see :mod:`skanomclust._image_decoding`) go into
   :class:`~skanomclust.TextureFeatureExtractor`, which returns **feature maps**
   ``(n, C, h, w)`` (float32, or float16 to halve their memory);
2. :class:`~skanomclust.BlindAnomalyLocalizer` returns the **localizer output**
   ``(n, C + 1, h, w)``: the features with each image's **anomaly map** as the
   last channel (higher = more anomalous). Use :func:`split_localizer_output`
   to read it, never ``[:, -1]`` by hand;
3. :class:`~skanomclust.AnomalyWeightedPooling` or
   :class:`~skanomclust.ContrastiveRefiner` turn the localizer output into
   **descriptors** ``(n, d)``;
4. :class:`~skanomclust.WardClustering` turns descriptors into **labels**.

An image's **score** is the maximum of its anomaly map
(:func:`image_scores`), the one image-level anomaly score of the package. Maps
are at feature resolution; :func:`resize_anomaly_maps` brings them to the
images' sizes.

A 2-D input ``(n, C)`` to a map-taking step is read as ``(n, C, 1, 1)`` maps,
and a step that returns maps returns 2-D again for it (so scikit-learn's
estimator checks, which feed 2-D data, exercise the real code path).

Memory: the localizer output repeats the features. The extractor allocates
its features with one spare channel behind them (:func:`empty_feature_maps`);
a localizer with ``copy=False`` writes the maps into that channel and returns
the whole buffer instead of a new array (:func:`append_anomaly_maps`), the way
scikit-learn estimators with ``copy=False`` may reuse their input's memory.
:func:`~skanomclust.make_blind_pipeline` does this: in a ``Pipeline``, which
holds a step's input while the step computes its output, the features then
exist once instead of twice.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn import get_config
from sklearn.utils.validation import validate_data
from torch.nn import functional as F

__all__ = [
    "append_anomaly_maps",
    "empty_feature_maps",
    "image_scores",
    "resize_anomaly_maps",
    "restore_layout",
    "split_localizer_output",
    "validate_feature_maps",
]


def empty_feature_maps(shape, dtype) -> np.ndarray:
    """Uninitialised ``(n, C, h, w)`` feature maps with a spare channel behind them.

    Returns the first ``C`` channels of a ``(n, C + 1, h, w)`` buffer: each
    image is one contiguous block, the whole array is not. The spare channel
    costs ``1 / C`` of the features' memory and lets a localizer with
    ``copy=False`` append the anomaly maps without copying the features.
    """
    n, channels, h, w = shape
    return np.empty((n, channels + 1, h, w), dtype=dtype)[:, :channels]


def _spare_channel_buffer(features: np.ndarray):
    """The ``(n, C + 1, h, w)`` buffer whose first ``C`` channels are ``features``, or None."""
    buffer = features.base
    if (
        isinstance(buffer, np.ndarray)
        and buffer.ndim == 4
        and buffer.dtype == features.dtype
        and buffer.shape == (features.shape[0], features.shape[1] + 1, *features.shape[2:])
        and buffer.strides == features.strides
        and buffer.ctypes.data == features.ctypes.data
        and buffer.flags.writeable
    ):
        return buffer
    return None


def append_anomaly_maps(features: np.ndarray, maps: np.ndarray, *, copy: bool = True):
    """The localizer output: ``features`` with ``maps`` as one more, last channel.

    Parameters
    ----------
    features : ndarray of shape (n, C, h, w)
    maps : ndarray of shape (n, h, w)
        Converted to the dtype of ``features``.
    copy : bool, default=True
        False: when ``features`` are the first channels of a buffer with one
        spare channel (:func:`empty_feature_maps`), write ``maps`` into it and
        return that buffer, which then shares memory with ``features`` (a
        later call on the same features overwrites the channel). Otherwise,
        or with True, a new array.

    Returns
    -------
    output : ndarray of shape (n, C + 1, h, w)

    Raises
    ------
    ValueError
        When a map holds NaN or infinity, or a value beyond the range of the
        features' dtype (float16: 65504), naming the images; nothing is written.
    """
    _check_storable_maps(maps, features.dtype)
    out = None if copy else _spare_channel_buffer(features)
    if out is None:
        out = np.empty(
            (features.shape[0], features.shape[1] + 1, *features.shape[2:]), dtype=features.dtype
        )
        out[:, :-1] = features
    out[:, -1] = maps
    return out


def _check_storable_maps(maps: np.ndarray, dtype) -> None:
    """Raise a ValueError naming the images whose maps ``dtype`` cannot hold.

    A cast would carry NaN along and turn a value beyond float16's range
    (65504) into infinity, and the next step would then blame its input. Maps
    of a working localizer are small (FCA compares values scaled to [0, 1]);
    huge or non-finite ones come from a normality model that diverged.
    """
    flat = maps.reshape(len(maps), int(np.prod(maps.shape[1:])))
    # Per-image extremes (NaN propagates), without an |maps| temporary.
    peaks = np.maximum(flat.max(axis=1, initial=-np.inf), -flat.min(axis=1, initial=np.inf))
    bad = np.flatnonzero(~(peaks <= np.finfo(dtype).max))  # NaN compares False
    if len(bad) == 0:
        return
    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    worst = peaks[bad]
    what = (
        "hold NaN or infinity"
        if not np.isfinite(worst).all()
        else f"exceed the {np.dtype(dtype).name} range of the features (largest |value| "
        f"{worst.max():.3g})"
    )
    raise ValueError(
        f"The anomaly maps of image(s) {shown} ({len(bad)} of {len(maps)}) {what}, so they "
        "cannot be stored with the features. Such maps come from a normality model that "
        "diverged: check the localizer's loss_curve_ (and its learning_rate)."
    )


def split_localizer_output(output):
    """Features and anomaly maps of a localizer output, as views (no copy).

    Parameters
    ----------
    output : ndarray or Tensor of shape (n, C + 1, h, w)
        What :meth:`BlindAnomalyLocalizer.transform` returns.

    Returns
    -------
    features : view of shape (n, C, h, w)
    anomaly_maps : view of shape (n, h, w)
        In the output's dtype; higher = more anomalous.
    """
    if output.ndim != 4 or output.shape[1] < 2:
        raise ValueError(
            "Expected a localizer output of shape (n, C + 1, h, w) with C >= 1, got shape "
            f"{tuple(output.shape)}"
        )
    return output[:, :-1], output[:, -1]


def image_scores(anomaly_maps):
    """Image-level anomaly score: the maximum of each anomaly map.

    Parameters
    ----------
    anomaly_maps : ndarray or Tensor of shape (n, h, w), or list of 2-D arrays

    Returns
    -------
    scores : ndarray of shape (n,), float32 (a Tensor for a Tensor input)

    Examples
    --------
    >>> import numpy as np
    >>> image_scores(np.array([[[0.1, 0.4]], [[0.2, -1.0]]]))
    array([0.4, 0.2], dtype=float32)
    """
    if isinstance(anomaly_maps, torch.Tensor):
        return anomaly_maps.flatten(1).amax(dim=1)
    if isinstance(anomaly_maps, (list, tuple)):
        return np.array([np.max(m) for m in anomaly_maps], dtype=np.float32)
    maps = np.asarray(anomaly_maps)
    return maps.reshape(len(maps), -1).max(axis=1).astype(np.float32)


def validate_feature_maps(estimator, X, *, reset: bool, min_channels: int = 1):
    """Check ``X`` against the data contract and return 4-D float maps.

    float32 and float16 inputs keep their dtype (half precision halves the
    memory of the features travelling between steps; every step computes in
    float32 one batch at a time); anything else is converted to float32.

    Parameters
    ----------
    estimator : BaseEstimator
        The estimator (``n_features_in_`` is set when ``reset`` and checked
        otherwise; it counts channels).
    X : array-like of shape (n, C, h, w) or (n, C)
        Feature maps; a 2-D input may be a DataFrame (its column names are
        recorded in ``feature_names_in_``).
    reset : bool
        True in ``fit``, False in ``transform``/``predict``.
    min_channels : int, default=1
        Smallest acceptable ``C``.

    Returns
    -------
    maps : ndarray of shape (n, C, h, w), float32 or float16
        A view of ``X`` when it already is a writeable float32 or float16 array
        whose images are C-contiguous blocks (a C-contiguous array, or a slice
        of one along the channel axis).
    was_2d : bool
        Whether ``X`` was 2-D (callers then return 2-D output).
    """
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        ndim = np.asarray(X).ndim if not hasattr(X, "iloc") else 2
    if ndim == 3 or ndim > 4:
        raise ValueError(
            f"Expected feature maps as a 4-D array (n_samples, n_channels, height, width) or "
            f"a 2-D array (n_samples, n_channels); got a {ndim}-D input. Images go to "
            "TextureFeatureExtractor first."
        )
    # 0-D and 1-D inputs get scikit-learn's "Reshape your data" error from validate_data.
    # Outside fit, a wrong channel count is reported against n_features_in_ instead.
    X = validate_data(
        estimator,
        X,
        reset=reset,
        allow_nd=True,
        dtype=[np.float32, np.float16],
        ensure_min_features=min_channels if reset else 1,
        ensure_all_finite=False,  # checked below, without a full-size temporary
    )
    per_image_blocks = X.ndim == 4 and X.strides[0] > 0 and X[0].flags.c_contiguous
    if not (X.flags.c_contiguous or per_image_blocks):
        # Each image must be one C-contiguous block; a slice of whole images along
        # the channel axis (e.g. the features of a buffer that also holds the map)
        # already is, and is used without a copy.
        X = np.ascontiguousarray(X)
    if not get_config()["assume_finite"]:
        _check_finite(X, type(estimator).__name__)
    if not X.flags.writeable:
        # torch cannot wrap read-only arrays (read-only memmaps, pandas copy-on-write views)
        # without a warning about writes; nothing here writes to the input, but copy to be safe.
        X = X.copy()
    if reset and X.shape[1] < min_channels:
        raise ValueError(
            f"Found array with {X.shape[1]} channel(s) (shape={X.shape}) while a minimum of "
            f"{min_channels} is required by {type(estimator).__name__}"
            + (" (features plus the anomaly map)." if min_channels == 2 else ".")
        )
    if X.ndim == 2:
        return X[:, :, None, None], True
    return X, False


def _check_finite(X, name):
    """Raise a ValueError naming the images whose maps hold NaN or infinity.

    scikit-learn's own check sums the array in its dtype, which overflows in
    float16 and then falls back to a full-size boolean temporary; a float64
    sum needs no temporary.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(X, dtype=np.float64)):
            return
        bad = [i for i in range(len(X)) if not np.isfinite(np.sum(X[i], dtype=np.float64))]
    kind = "NaN" if any(np.isnan(X[i]).any() for i in bad) else "infinity"
    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    raise ValueError(
        f"Input X contains {kind} in sample(s) {shown} ({len(bad)} of {len(X)}); "
        f"{name} needs finite feature maps."
    )


def restore_layout(maps: np.ndarray, was_2d: bool) -> np.ndarray:
    """Return ``maps`` as 2-D ``(n, C)`` when the input was 2-D."""
    if was_2d:
        return maps.reshape(maps.shape[0], -1)
    return maps


def resize_anomaly_maps(maps, sizes):
    """Upsample anomaly maps to image sizes (bilinear).

    Parameters
    ----------
    maps : ndarray of shape (n, h, w)
        Anomaly maps at feature resolution.
    sizes : tuple of int or list of tuple of int
        One (height, width) for all maps, or one per map (e.g. from
        :meth:`TextureFeatureExtractor.image_sizes`).

    Returns
    -------
    resized : ndarray of shape (n, H, W) or list of ndarray
        An array when all sizes are equal, else a list of (H_i, W_i) arrays.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"Expected maps of shape (n, h, w), got {maps.shape}")
    if len(sizes) == 2 and all(isinstance(s, Integral) for s in sizes):
        sizes = [tuple(sizes)] * len(maps)
    if len(sizes) != len(maps):
        raise ValueError(f"Got {len(sizes)} sizes for {len(maps)} maps")
    out = []
    for single, size in zip(maps, sizes, strict=True):
        tensor = torch.tensor(single)[None, None]  # a copy: maps may be read-only
        resized = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(resized[0, 0].numpy())
    if len({o.shape for o in out}) == 1:
        return np.stack(out)
    return out
