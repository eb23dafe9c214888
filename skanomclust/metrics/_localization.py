"""Localization against ground-truth masks: pixel AUROC and AU-PRO (Bergmann et al., 2021)."""

import numbers

import numpy as np

from ._histogram import (
    _au_pro,
    _auroc,
    _check_au_pro_defined,
    _check_auroc_defined,
    _region_weights,
    _score_groups,
)


def _image_list(images, name):
    """Split an (n, h, w) array or a sequence of 2-D arrays into a list of 2-D arrays."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__"):
        array = np.asarray(images)
        if array.ndim != 3:
            raise ValueError(
                f"{name} must be an array of shape (n_images, height, width) or a list of "
                f"2-D arrays; got an array of shape {array.shape}"
            )
        images = list(array)
    else:
        try:
            images = list(images)
        except TypeError:
            raise ValueError(
                f"{name} must be an array of shape (n_images, height, width) or a list of "
                f"2-D arrays; got {type(images).__name__}"
            ) from None
    if not images:
        raise ValueError(f"{name} is empty: at least one image is needed")
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D, got shape {image.shape}")
        if image.size == 0:
            raise ValueError(f"{name}[{i}] is empty (shape {image.shape})")
        out.append(image)
    return out


def _binarize_mask(mask, i):
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask > 127
    if mask.dtype.kind not in "iuf":
        raise ValueError(f"masks[{i}] must be boolean or numeric, got dtype {mask.dtype}")
    mask = mask.astype(np.float64)
    if np.isnan(mask).any():
        raise ValueError(f"masks[{i}] contains NaN")
    return mask > 0.5


def _check_localization_inputs(masks, anomaly_maps):
    """Validated lists of boolean masks and floating-point maps, pairwise of equal shape.

    float32 and float64 maps are used as they are, without a copy (MTD's maps at full
    resolution hold about 140 million pixels); float16 maps are converted to float32, other
    numeric maps to float64.
    """
    masks = _image_list(masks, "masks")
    anomaly_maps = _image_list(anomaly_maps, "anomaly_maps")
    if len(masks) != len(anomaly_maps):
        raise ValueError(
            f"got {len(masks)} masks but {len(anomaly_maps)} anomaly maps; "
            "there must be one map per mask"
        )
    checked_masks, checked_maps = [], []
    for i, (mask, amap) in enumerate(zip(masks, anomaly_maps, strict=True)):
        if mask.shape != amap.shape:
            raise ValueError(
                f"image {i}: mask shape {mask.shape} differs from anomaly map shape {amap.shape}"
            )
        if amap.dtype.kind not in "biuf":
            raise ValueError(f"anomaly_maps[{i}] must be numeric, got dtype {amap.dtype}")
        if amap.dtype.kind != "f" or amap.dtype.itemsize > 8:
            amap = amap.astype(np.float64)
        elif amap.dtype.itemsize < 4:
            amap = amap.astype(np.float32)
        # The minimum and maximum are NaN as soon as one value is, and infinite as soon as one
        # value is: two reductions instead of a boolean array per map.
        if not (np.isfinite(amap.min()) and np.isfinite(amap.max())):
            raise ValueError(f"anomaly_maps[{i}] contains NaN or infinite values")
        checked_masks.append(_binarize_mask(mask, i))
        checked_maps.append(amap)
    return checked_masks, checked_maps


def _check_fpr_limit(fpr_limit):
    if (
        not isinstance(fpr_limit, numbers.Real)
        or isinstance(fpr_limit, bool)
        or not 0 < fpr_limit <= 1
    ):
        raise ValueError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
    return float(fpr_limit)


# Both pixel metrics are computed from "groups" of pixels: sets of pixels that are adjacent in
# the order of scores and enter the ROC and PRO curves together. Each group is summarised by its
# number of normal pixels, its number of defect pixels and the sum of the PRO weights
# 1 / (size of the pixel's region) of its defect pixels; groups are listed by increasing score.
# Groups are the distinct scores (exact, by a sort) for small inputs, else the bins ("keys") of
# a histogram of the scores: one pass over the pixels instead of a sort of all of them. A key's
# pixels are treated as tied, which bounds the error of each metric by a sum over the keys
# (_auroc_error_terms, _au_pro_error_terms). When that bound exceeds _TOLERANCE, the keys that
# contribute most to it are refined: first into finer equal-width sub-bins in a second pass
# (enough for scores squeezed into a few bins by an outlier), then, if still needed, into their
# distinct scores by sorting their pixels (only those that differ from a score of their key, so
# that a mass of exactly tied scores costs no sort).

#: Number of equal-width bins of the score histogram.


def pixel_auroc(masks, anomaly_maps):
    """Pixel-level ROC AUC over all pixels of all images.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width) or list of 2-D arrays
        Ground-truth defect masks. Boolean masks are used as they are, ``uint8`` masks
        (e.g. 0/255 PNG masks) are read as ``mask > 127``, other numeric masks as
        ``mask > 0.5``. Images may have different shapes when given as a list.
    anomaly_maps : array-like of shape (n_images, height, width) or list of 2-D arrays
        Anomaly scores (higher = more anomalous); each map must have its mask's shape.

    Returns
    -------
    auroc : float
        The ROC AUC of the pooled pixels, as :func:`sklearn.metrics.roc_auc_score` computes
        it (pixels with equal scores count as half a correctly ordered pair): exactly for up
        to ``2**20`` pixels, within ``1e-5`` beyond (see Notes).

    Raises
    ------
    ValueError
        If the inputs are empty, differ in number or shape (the message names the image),
        a map holds NaN or infinite values, or the masks hold no anomalous or no normal pixel.

    Notes
    -----
    Inputs of at most ``2**20`` pixels are sorted, and the result is exact. Larger inputs
    (MTD's 1344 maps at full resolution hold 143 million pixels) are counted in one pass into
    a histogram of ``2**20`` equal-width bins over the range of all scores: O(n_pixels +
    n_bins) time, no sort, no float64 copy of float32 maps. The approximation is to treat the
    pixels of one bin as tied, i.e. to ignore the order of scores closer than about
    ``(max - min) / 2**20``: a normal and a defect pixel of the same bin count as half a
    correctly ordered pair instead of 0, 1/2 or 1. The error is therefore at most
    ``sum(normal_b * defect_b) / (2 * n_normal * n_defect)`` over the bins ``b``, which is
    computed from the histogram. If it exceeds ``1e-5`` (when an outlier squeezes the other
    scores into a few bins, or many pixels share a score), the bins that contribute most to
    it are refined until what is left is at most ``1e-5``: split into finer sub-bins in a
    second pass, then, if needed, into their distinct scores (their pixels are sorted, except
    those that equal one score of their bin). The result is thus always within ``1e-5`` of the
    exact value, and exact when no bin mixes normal and defect pixels of different scores.
    On MTD with the method's anomaly maps the bound was 1.4e-6, nothing was refined, and the
    result differed from the exact one by 2e-10 (about 1 s instead of about 80 s for the
    exact computation, on two CPU cores).

    Examples
    --------
    >>> from skanomclust.metrics import pixel_auroc
    >>> pixel_auroc([[[0, 1], [0, 1]]], [[[0.1, 0.8], [0.4, 0.3]]])
    0.75
    """
    masks, anomaly_maps = _check_localization_inputs(masks, anomaly_maps)
    _check_auroc_defined(masks)
    n_normal, n_defect, _ = _score_groups(masks, anomaly_maps, None, auroc=True, fpr_limit=None)
    return _auroc(n_normal, n_defect)


def au_pro(masks, anomaly_maps, *, fpr_limit=0.3):
    """Normalised area under the per-region-overlap (PRO) curve up to a false-positive rate.

    The AU-PRO of MVTec AD (Bergmann et al., IJCV 2021). Connected components of each
    ground-truth mask (:func:`scipy.ndimage.label` with its default structure, i.e.
    4-connectivity, as in MVTec's evaluation code) are the defect regions. At a threshold
    ``t``, the PRO is the mean over all regions of all images of the fraction of the region's
    pixels scoring ``>= t`` (each region counts equally, whatever its size), and the FPR is the
    fraction of all normal pixels (``mask == 0``, over all images) scoring ``>= t``. The curve
    runs from (0, 0) (threshold above every score) to (1, 1) through the point of every
    distinct score; pixels with equal scores enter together. It is interpolated linearly at
    ``fpr_limit``, integrated with the trapezoid rule and divided by ``fpr_limit``, so a map
    ranking every defect pixel above every normal pixel scores 1.0. A constant map gives the
    straight line from (0, 0) to (1, 1), hence ``fpr_limit / 2`` (0.15 by default).
    Images without any defect contribute only normal pixels.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width) or list of 2-D arrays
        Ground-truth defect masks, read as in :func:`pixel_auroc` (``uint8`` as ``> 127``,
        other numeric types as ``> 0.5``).
    anomaly_maps : array-like of shape (n_images, height, width) or list of 2-D arrays
        Anomaly scores (higher = more anomalous); each map must have its mask's shape.
    fpr_limit : float, default=0.3
        Upper limit of the integration, in (0, 1].

    Returns
    -------
    au_pro : float
        In [0, 1]; exact for up to ``2**20`` pixels, within ``1e-5`` beyond (see Notes).

    Raises
    ------
    ValueError
        If the inputs are invalid (see :func:`pixel_auroc`), or the masks hold no defect
        region or no normal pixel.

    Notes
    -----
    As in :func:`pixel_auroc`, inputs of more than ``2**20`` pixels are counted into a
    histogram of ``2**20`` equal-width bins of the scores (normal pixels, and defect pixels
    weighted by ``1 / (R * size of their region)`` for ``R`` regions), and the curve is taken
    through the ends of the bins only: inside a bin it is the straight segment between the
    bin's end points, as if the bin's pixels were tied. The exact curve runs monotonically
    between the same two points, inside the box they span, so the error is at most half the
    box's area (the part of the box left of ``fpr_limit`` for the bin that crosses it), summed
    over the bins and divided by ``fpr_limit``. If that bound exceeds ``1e-5``, the bins that
    contribute most to it are refined as in :func:`pixel_auroc` until what is left is at most
    ``1e-5``, so the result is always within ``1e-5`` of the exact curve's. On MTD with the
    method's anomaly maps the bound was 1.2e-6 and the result differed from the exact one by
    4e-9.

    Examples
    --------
    One region of two pixels, two normal pixels. The curve runs through (0, 0), (0, 0.5),
    (0.5, 0.5), (0.5, 1) and (1, 1); its area up to FPR 0.3 is 0.3 * 0.5:

    >>> from skanomclust.metrics import au_pro
    >>> au_pro([[[0, 1, 1, 0]]], [[[0.1, 0.8, 0.4, 0.6]]])
    0.5
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    masks, anomaly_maps = _check_localization_inputs(masks, anomaly_maps)
    regions = _region_weights(masks)
    _check_au_pro_defined(masks, regions[1])
    n_normal, _, pro_weight = _score_groups(
        masks, anomaly_maps, regions, auroc=False, fpr_limit=fpr_limit
    )
    return _au_pro(n_normal, pro_weight, regions[1], fpr_limit)


def localization_report(masks, anomaly_maps, *, fpr_limit=0.3):
    """Pixel AUROC and AU-PRO of a set of anomaly maps.

    Both come from the same pass over the pixels (see the Notes of :func:`pixel_auroc` and
    :func:`au_pro`): exact for up to ``2**20`` pixels, each within ``1e-5`` beyond. MTD's 1344
    maps at full resolution take about a second on two CPU cores.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width) or list of 2-D arrays
        Ground-truth defect masks, read as in :func:`pixel_auroc`.
    anomaly_maps : array-like of shape (n_images, height, width) or list of 2-D arrays
        Anomaly scores; each map must have its mask's shape.
    fpr_limit : float, default=0.3
        Integration limit of :func:`au_pro`.

    Returns
    -------
    report : dict
        ``{"pixel_auroc": float, "au_pro": float}``.

    Examples
    --------
    >>> from skanomclust.metrics import localization_report
    >>> localization_report([[[0, 1, 1, 0]]], [[[0.1, 0.8, 0.4, 0.6]]])
    {'pixel_auroc': 0.75, 'au_pro': 0.5}
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    masks, anomaly_maps = _check_localization_inputs(masks, anomaly_maps)
    _check_auroc_defined(masks)
    regions = _region_weights(masks)
    _check_au_pro_defined(masks, regions[1])
    n_normal, n_defect, pro_weight = _score_groups(
        masks, anomaly_maps, regions, auroc=True, fpr_limit=fpr_limit
    )
    return {
        "pixel_auroc": _auroc(n_normal, n_defect),
        "au_pro": _au_pro(n_normal, pro_weight, regions[1], fpr_limit),
    }
