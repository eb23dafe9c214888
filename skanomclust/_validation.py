"""The data contract between pipeline steps.

Every step after the feature extractor exchanges plain numpy arrays:

- 4-D float arrays ``(n, C, h, w)``: ``n`` feature maps of ``C`` channels;
- 2-D arrays ``(n, C)`` are read as ``(n, C, 1, 1)`` maps, and a step that
  returns maps returns 2-D again for them (so scikit-learn's estimator checks,
  which feed 2-D data, exercise the real code path).

:class:`~skanomclust.BlindAnomalyLocalizer` appends its anomaly map as the last
channel; steps after it read features from the first ``C`` channels and the
map from the last one.

The map's channel is reserved in advance: :class:`~skanomclust.TextureFeatureExtractor`
returns its features as the first ``C`` channels of a ``(n, C + 1, h, w)``
buffer (:func:`features_with_spare_channel`), and the localizer writes its
map into the last one and returns the whole buffer
(:func:`claim_spare_channel`) instead of copying the features into a new
array. In a scikit-learn ``Pipeline``, which holds a step's input while the
step computes its output, the features then exist once instead of twice
(half a gigabyte on MTD at 256 pixels). Each buffer is handed out once: a
second localizer, or a second call, on the same features allocates a new
output, so an output never changes after it was returned.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from sklearn import get_config
from sklearn.utils.validation import validate_data

__all__ = [
    "claim_spare_channel",
    "features_with_spare_channel",
    "restore_layout",
    "validate_feature_maps",
]

# Buffers whose last channel nobody has filled yet, by id (ndarrays are not hashable;
# a weak reference drops the entry when the buffer is freed).
_unclaimed = weakref.WeakValueDictionary()
_unclaimed_lock = threading.Lock()


def features_with_spare_channel(shape, dtype) -> np.ndarray:
    """Uninitialised ``(n, C, h, w)`` features: a view of a ``(n, C + 1, h, w)`` buffer.

    The buffer's last channel is left for :func:`claim_spare_channel`.
    """
    n, channels, h, w = shape
    buffer = np.empty((n, channels + 1, h, w), dtype=dtype)
    with _unclaimed_lock:
        _unclaimed[id(buffer)] = buffer
    return buffer[:, :channels]


def claim_spare_channel(maps: np.ndarray):
    """The buffer of :func:`features_with_spare_channel` behind ``maps``, or None.

    Returns the whole ``(n, C + 1, h, w)`` buffer, once, when ``maps`` is
    exactly its first ``C`` channels (same memory, shape and dtype) and its
    last channel has not been claimed before; None otherwise (the caller then
    allocates a new output).
    """
    buffer = maps.base
    if (
        not isinstance(buffer, np.ndarray)
        or buffer.ndim != 4
        or buffer.dtype != maps.dtype
        or buffer.shape != (maps.shape[0], maps.shape[1] + 1, *maps.shape[2:])
        or buffer.strides != maps.strides
        or buffer.ctypes.data != maps.ctypes.data
    ):
        return None
    with _unclaimed_lock:
        if _unclaimed.get(id(buffer)) is not buffer:
            return None
        del _unclaimed[id(buffer)]
    return buffer


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
