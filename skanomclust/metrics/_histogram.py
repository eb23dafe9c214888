"""The counting engine of the pixel metrics: one histogram of the scores, exact where it matters.

Pixel AUROC and AU-PRO are functions of how many normal and defect pixels (and how
much of each defect region) lie above every threshold. Small inputs are counted
exactly (every distinct score is a threshold); larger ones through a histogram of
the scores whose bins are refined where a bin's contribution could exceed the
tolerance, so that the result stays within 1e-5 of the exact value while memory
and time grow only linearly with the number of pixels.
"""

import numpy as np
from scipy import ndimage

_N_BINS = 2**20
#: Number of sub-bins shared among the bins refined in the second pass.
_N_SUB_BINS = 2**21
#: Inputs with at most this many pixels (hence at most as many distinct scores as bins) are
#: sorted: their metrics are exact.
_EXACT_MAX_PIXELS = 2**20
#: Bound on the absolute error of each metric computed from a histogram.
_TOLERANCE = 1e-5
#: Pixels binned at once: large enough to amortise the cost of a histogram of some million
#: keys, small enough to keep the temporaries at some tens of megabytes.
_CHUNK_PIXELS = 2**22


def _region_weights(masks):
    """PRO weight of each defect pixel and number of defect regions, over all masks.

    Returns a list with, per mask, None when it has no defect pixel, else ``1 / size`` of the
    region of each of its defect pixels (in the row-major order of ``mask``), and the number of
    regions ``R``. A defect pixel's weight divided by ``R`` is what it adds to the PRO.
    """
    weights, n_regions = [], 0
    for mask in masks:
        if not mask.any():
            weights.append(None)
            continue
        # Default structure of scipy.ndimage.label: 4-connectivity, as in MVTec's evaluation.
        labels, n = ndimage.label(mask)
        labels = labels[mask]
        weights.append(1.0 / np.bincount(labels, minlength=n + 1)[labels])
        n_regions += n
    return weights, n_regions


def _chunks(masks, anomaly_maps, weights, dtype, chunk_pixels=None):
    """Yield ``(scores, defect, defect_weights)`` for runs of images of about ``chunk_pixels``.

    ``scores`` (of ``dtype``) and ``defect`` hold the pixels of consecutive images;
    ``defect_weights`` holds the weights of its defect pixels, in the order of
    ``scores[defect]``, or is None when ``weights`` is None. ``chunk_pixels`` defaults to
    _CHUNK_PIXELS; a run holds at least one image.
    """
    if chunk_pixels is None:
        chunk_pixels = _CHUNK_PIXELS
    start = 0
    while start < len(anomaly_maps):
        stop, size = start, 0
        while stop < len(anomaly_maps) and (
            size == 0 or size + anomaly_maps[stop].size <= chunk_pixels
        ):
            size += anomaly_maps[stop].size
            stop += 1
        scores = np.concatenate([a.ravel() for a in anomaly_maps[start:stop]], dtype=dtype)
        defect = np.concatenate([m.ravel() for m in masks[start:stop]])
        defect_weights = None
        if weights is not None:
            defect_weights = np.concatenate(
                [np.empty(0)] + [w for w in weights[start:stop] if w is not None]
            )
        yield scores, defect, defect_weights
        start = stop


def _count_groups(group, defect, defect_weights, n_groups):
    """``(n_normal, n_defect, pro_weight)`` per group from each pixel's group index."""
    n_all = np.bincount(group, minlength=n_groups)
    group = group[defect]
    n_defect = np.bincount(group, minlength=n_groups)
    pro_weight = None
    if defect_weights is not None:
        pro_weight = np.bincount(group, weights=defect_weights, minlength=n_groups)
    return n_all - n_defect, n_defect, pro_weight


def _exact_groups(masks, anomaly_maps, weights, dtype):
    """Groups of equal scores, by sorting all the pixels."""
    ((scores, defect, defect_weights),) = _chunks(
        masks, anomaly_maps, weights, dtype, chunk_pixels=np.inf
    )
    values, inverse = np.unique(scores, return_inverse=True)
    return _count_groups(inverse, defect, defect_weights, values.size)


class _Binning:
    """Monotone map from scores to ``_N_BINS`` equal-width bins over ``[low, high]``.

    The arithmetic is done in ``dtype`` (float32 for float32 maps: no float64 copy of the
    pixels). Floating-point rounding is monotone, so a higher score never lands in a lower bin
    and equal scores always share a bin, whatever chunk they come in; rounding only moves the
    bin edges, by at most about ``2**-23`` of the range in float32 (an eighth of a bin), which
    does not matter: the error bounds are computed from the counts of the actual bins.
    """

    def __init__(self, low, high, dtype):
        self.dtype = np.dtype(dtype)
        self.n_keys = _N_BINS
        with np.errstate(over="ignore", divide="ignore"):
            self.low = float(low)
            self.scale = float(np.float64(_N_BINS) / (np.float64(high) - self.low))
            self._low = self.dtype.type(low)
            self._scale = self.dtype.type(_N_BINS / (self.dtype.type(high) - self._low))

    @property
    def usable(self):
        """Whether ``(score - low) * scale`` is finite for every score of the range."""
        # It is not for a range wider than the largest float, or one of a few subnormal numbers.
        return bool(np.isfinite(self._scale) and 0 < self._scale < np.finfo(self.dtype).max)

    def __call__(self, scores):
        t = scores.astype(self.dtype, copy=False) - self._low
        t *= self._scale
        keys = t.astype(np.intp)
        # The highest scores compute to _N_BINS (or just below, after rounding).
        np.minimum(keys, _N_BINS - 1, out=keys)
        return keys


class _RefinedBinning:
    """:class:`_Binning` with bin ``b`` split into ``n_sub[b]`` equal-width sub-bins.

    The keys are numbered in increasing order of score: bin ``b`` becomes the keys
    ``start[b]`` to ``start[b] + n_sub[b] - 1``. The position inside a bin is computed in
    float64 and clipped to the bin, which keeps the map monotone.
    """

    def __init__(self, binning, n_sub):
        self.binning, self.dtype, self.n_sub = binning, binning.dtype, n_sub
        self.start = np.cumsum(n_sub) - n_sub
        self.n_keys = int(n_sub.sum())

    def __call__(self, scores):
        bins = self.binning(scores)
        keys = self.start[bins]
        refined = np.flatnonzero(self.n_sub[bins] > 1)
        bins = bins[refined]
        n_sub = self.n_sub[bins]
        position = (scores[refined].astype(np.float64) - self.binning.low) * self.binning.scale
        position -= bins
        np.clip(position, 0.0, 1.0, out=position)
        sub = (position * n_sub).astype(np.intp)
        keys[refined] += np.minimum(sub, n_sub - 1)
        return keys


def _histogram(masks, anomaly_maps, weights, dtype, binning, *, representatives=False):
    """Groups ``(n_normal, n_defect, pro_weight)`` per key of ``binning``, in one pass.

    With ``representatives``, also returns the score of one pixel of each non-empty key.
    """
    n_all = np.zeros(binning.n_keys, dtype=np.int64)
    n_defect = np.zeros(binning.n_keys, dtype=np.int64)
    pro_weight = None if weights is None else np.zeros(binning.n_keys)
    representative = np.zeros(binning.n_keys, dtype=dtype) if representatives else None
    for scores, defect, defect_weights in _chunks(masks, anomaly_maps, weights, dtype):
        keys = binning(scores)
        n_all += np.bincount(keys, minlength=binning.n_keys)
        if representatives:
            representative[keys] = scores
        keys = keys[defect]
        n_defect += np.bincount(keys, minlength=binning.n_keys)
        if pro_weight is not None:
            pro_weight += np.bincount(keys, weights=defect_weights, minlength=binning.n_keys)
    groups = (n_all - n_defect, n_defect, pro_weight)
    return (groups, representative) if representatives else groups


def _auroc_error_terms(n_normal, n_defect):
    """Bound, per group, on the error of treating the group's pixels as tied in the AUROC.

    A normal and a defect pixel of the same group count as half a correctly ordered pair;
    the exact count of the pair is 0, 1/2 or 1.
    """
    return n_normal * n_defect.astype(np.float64) / (2.0 * n_normal.sum() * n_defect.sum())


def _pro_curve(n_normal, pro_weight, n_regions):
    """``(fpr, pro)`` from (0, 0) through the end of every group, by decreasing score."""
    fpr = np.concatenate(([0.0], np.cumsum(n_normal[::-1]) / n_normal.sum()))
    pro = np.concatenate(([0.0], np.cumsum(pro_weight[::-1]) / n_regions))
    return fpr, pro


def _au_pro_error_terms(n_normal, pro_weight, n_regions, fpr_limit):
    """Bound, per group, on the error of the AU-PRO from joining the group's ends by a line.

    Whatever the order of the pixels inside a group, the exact curve runs monotonically
    between the group's end points, inside the box they span: its area differs from the
    segment's by at most half the box, or by the box's part left of ``fpr_limit`` for the
    group that crosses it.
    """
    fpr, pro = _pro_curve(n_normal, pro_weight, n_regions)
    x0, x1, dy = fpr[:-1], fpr[1:], np.diff(pro)
    terms = np.where(x1 <= fpr_limit, (x1 - x0) * dy / 2, np.maximum(fpr_limit - x0, 0.0) * dy)
    return terms[::-1] / fpr_limit


def _keys_to_refine(groups, n_regions, *, auroc, fpr_limit):
    """Keys to refine so that the error bound of each metric asked for drops to _TOLERANCE.

    Returns a boolean array over the keys (or None when no key needs refining) and, per key,
    its share of the bounds to reduce (used to share out the sub-bins).
    """
    n_normal, n_defect, pro_weight = groups
    terms = []
    if auroc:
        terms.append(_auroc_error_terms(n_normal, n_defect))
    if fpr_limit is not None:
        terms.append(_au_pro_error_terms(n_normal, pro_weight, n_regions, fpr_limit))
    refine, share = np.zeros(n_normal.size, dtype=bool), np.zeros(n_normal.size)
    for t in terms:
        total = t.sum()
        if total > _TOLERANCE:
            # The fewest largest terms that leave at most _TOLERANCE over (most terms are
            # zero: only bins holding both normal and defect pixels have one).
            positive = np.flatnonzero(t > 0)
            order = positive[np.argsort(t[positive])[::-1]]
            left_over = total - np.cumsum(t[order])
            n = int(np.searchsorted(-left_over, -_TOLERANCE, side="left")) + 1
            refine[order[:n]] = True
            share += t / total
    return (refine if refine.any() else None), share


def _sort_keys(masks, anomaly_maps, weights, dtype, binning, groups, representative, refine):
    """Replace the groups of the keys flagged in ``refine`` by the groups of their scores.

    Only the pixels of those keys whose score differs from the key's representative score are
    gathered (one more pass) and sorted; the others all have the representative score and
    form one group, counted by difference.
    """
    parts = []
    for scores, defect, defect_weights in _chunks(masks, anomaly_maps, weights, dtype):
        keys = binning(scores)
        gather = refine[keys]
        gather[gather] = scores[gather] != representative[keys[gather]]
        if gather.any():
            parts.append(
                (
                    scores[gather],
                    keys[gather],
                    defect[gather],
                    None if defect_weights is None else defect_weights[gather[defect]],
                )
            )
    if parts:
        scores, keys, defect = (np.concatenate([p[k] for p in parts]) for k in range(3))
        defect_weights = None if weights is None else np.concatenate([p[3] for p in parts])
    else:
        scores, keys, defect = np.empty(0, dtype), np.empty(0, np.intp), np.empty(0, bool)
        defect_weights = None if weights is None else np.empty(0)

    values, inverse = np.unique(scores, return_inverse=True)
    value_groups = _count_groups(inverse, defect, defect_weights, values.size)
    gathered = _count_groups(keys, defect, defect_weights, binning.n_keys)
    refined = np.flatnonzero(refine)
    kept = np.flatnonzero(~refine)
    # New groups: the kept keys, the representative score of each refined key (what was not
    # gathered) and the gathered scores, ordered by key and, inside a key, by score (a score's
    # key is that of its pixels, the binning being a function of the score).
    order = np.lexsort(
        (
            np.concatenate(
                (np.zeros(kept.size), representative[refined], values), dtype=np.float64
            ),
            np.concatenate((kept, refined, binning(values))),
        )
    )
    return tuple(
        None
        if g is None
        else np.concatenate((g[kept], g[refined] - gone[refined], by_value))[order]
        for g, gone, by_value in zip(groups, gathered, value_groups, strict=True)
    )


def _score_groups(masks, anomaly_maps, regions, *, auroc, fpr_limit):
    """``(n_normal, n_defect, pro_weight)`` per group of pixels, by increasing score.

    ``regions`` is the output of :func:`_region_weights`, or None when only the AUROC is
    needed (``pro_weight`` is then None). The groups are the distinct scores for inputs of at
    most _EXACT_MAX_PIXELS pixels; otherwise they are keys of a histogram, refined until the
    error bound of each metric asked for (``auroc``; the AU-PRO when ``fpr_limit`` is not
    None) is at most _TOLERANCE. Empty groups are dropped.
    """
    weights, n_regions = (None, 0) if regions is None else regions
    dtype = np.result_type(*{a.dtype for a in anomaly_maps})  # float32 or float64
    low = min(float(a.min()) for a in anomaly_maps)
    high = max(float(a.max()) for a in anomaly_maps)
    if low == high:
        # One group: every pixel enters at the only threshold.
        n_defect = sum(int(np.count_nonzero(mask)) for mask in masks)
        return (
            np.array([sum(mask.size for mask in masks) - n_defect]),
            np.array([n_defect]),
            None if weights is None else np.array([float(n_regions)]),
        )
    binning = _Binning(low, high, dtype)
    if not binning.usable:
        binning = _Binning(low, high, np.float64)
    if sum(a.size for a in anomaly_maps) <= _EXACT_MAX_PIXELS or not binning.usable:
        return _exact_groups(masks, anomaly_maps, weights, dtype)

    groups = _histogram(masks, anomaly_maps, weights, dtype, binning)
    refine, share = _keys_to_refine(groups, n_regions, auroc=auroc, fpr_limit=fpr_limit)
    if refine is not None:
        # Sub-bins in proportion to each refined bin's share of the bounds (at least 2).
        n_sub = np.ones(_N_BINS, dtype=np.intp)
        share = np.where(refine, share, 0.0)
        n_sub[refine] = np.maximum(2, (_N_SUB_BINS * share[refine] / share.sum()).astype(np.intp))
        binning = _RefinedBinning(binning, n_sub)
        groups, representative = _histogram(
            masks, anomaly_maps, weights, dtype, binning, representatives=True
        )
        refine, _ = _keys_to_refine(groups, n_regions, auroc=auroc, fpr_limit=fpr_limit)
        if refine is not None:
            groups = _sort_keys(
                masks, anomaly_maps, weights, dtype, binning, groups, representative, refine
            )
    nonempty = (groups[0] + groups[1]) > 0
    return tuple(None if g is None else g[nonempty] for g in groups)


def _check_auroc_defined(masks):
    n_positive = sum(int(np.count_nonzero(mask)) for mask in masks)
    if n_positive == 0:
        raise ValueError(
            "pixel AUROC is undefined: the masks have no anomalous pixel "
            "(uint8 masks are read as > 127, other numeric masks as > 0.5)"
        )
    if n_positive == sum(mask.size for mask in masks):
        raise ValueError("pixel AUROC is undefined: the masks have no normal pixel")


def _check_au_pro_defined(masks, n_regions):
    if n_regions == 0:
        raise ValueError(
            "AU-PRO is undefined: the masks have no defect region "
            "(uint8 masks are read as > 127, other numeric masks as > 0.5)"
        )
    if all(mask.all() for mask in masks):
        raise ValueError("AU-PRO is undefined: the masks have no normal pixel")


def _auroc(n_normal, n_defect):
    # Correctly ordered (defect, normal) pairs: the normal pixels of lower groups, plus half
    # of those of the defect pixel's own group (ties), as in sklearn.metrics.roc_auc_score.
    below = np.cumsum(n_normal) - n_normal
    pairs = np.dot(n_defect.astype(np.float64), 2.0 * below + n_normal)
    return float(pairs / (2.0 * n_normal.sum() * n_defect.sum()))


def _au_pro(n_normal, pro_weight, n_regions, fpr_limit):
    fpr, pro = _pro_curve(n_normal, pro_weight, n_regions)
    # Points with fpr <= fpr_limit, then the curve interpolated at fpr_limit. fpr[0] == 0 and
    # fpr[-1] == 1, so the segment crossing fpr_limit (if any) has fpr[end - 1] < fpr[end].
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:end], pro[:end]
    if end < fpr.size:
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2)
    return area / fpr_limit
