"""Evaluation metrics: clustering of anomaly types and pixel-level localization.

Clustering quality is measured against ground-truth classes with NMI, ARI and an F1 score after
Hungarian matching of clusters to classes. Localization quality is measured against ground-truth
pixel masks with the pixel-level ROC AUC and the area under the per-region-overlap curve (AU-PRO)
of MVTec AD (Bergmann et al., IJCV 2021).
"""

import numbers

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, roc_auc_score

__all__ = [
    "au_pro",
    "clustering_f1_score",
    "clustering_report",
    "format_clustering_report",
    "localization_report",
    "pixel_auroc",
]


# -------------------------------------------------------------------------------------------------
# Clustering
# -------------------------------------------------------------------------------------------------


def _python_scalar(value):
    """Turn numpy scalars into the equivalent plain Python value (json-friendly)."""
    return value.item() if isinstance(value, np.generic) else value


def _encode_labels(labels, name):
    """Return ``(values, codes)``: the distinct labels as plain Python values and integer codes.

    Values are sorted when they are mutually comparable, otherwise kept in order of first
    appearance (e.g. a mix of strings and integers).
    """
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got an array of shape {labels.shape}")
        if labels.dtype.kind in "biufUS":
            values, codes = np.unique(labels, return_inverse=True)
            return [_python_scalar(v) for v in values], codes.ravel()
    items = [_python_scalar(v) for v in labels]
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in items):
        raise ValueError(f"{name} must be a 1-D sequence of hashable labels")
    try:
        values = sorted(set(items))
    except TypeError:
        values = list(dict.fromkeys(items))
    index = {v: i for i, v in enumerate(values)}
    return values, np.fromiter((index[v] for v in items), dtype=np.intp, count=len(items))


def _contingency(labels_true, labels_pred):
    """Encode both labelings and count them: rows are true classes, columns predicted clusters."""
    classes, true_codes = _encode_labels(labels_true, "labels_true")
    clusters, pred_codes = _encode_labels(labels_pred, "labels_pred")
    if true_codes.size != pred_codes.size:
        raise ValueError(
            f"labels_true and labels_pred have different lengths: "
            f"{true_codes.size} and {pred_codes.size}"
        )
    if true_codes.size == 0:
        raise ValueError("labels_true and labels_pred are empty")
    n_classes, n_clusters = len(classes), len(clusters)
    counts = np.bincount(
        true_codes * n_clusters + pred_codes, minlength=n_classes * n_clusters
    ).reshape(n_classes, n_clusters)
    return classes, clusters, true_codes, pred_codes, counts


def _hungarian(counts):
    """Class index -> cluster index of the one-to-one matching with the most matched samples."""
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return dict(zip(rows.tolist(), cols.tolist(), strict=True))


def clustering_f1_score(labels_true, labels_pred):
    """Micro-averaged F1 score of a clustering after Hungarian matching to the true classes.

    Each predicted cluster is matched to at most one true class (and each class to at most one
    cluster) so that the number of samples whose cluster is matched to their own class is maximal
    (:func:`scipy.optimize.linear_sum_assignment` on the contingency table). Samples in unmatched
    clusters, which exist when there are more clusters than classes, count as errors, as do the
    samples of unmatched classes. The micro-averaged F1 score then equals the matched accuracy.

    Parameters
    ----------
    labels_true : array-like of shape (n_samples,)
        Ground-truth classes; any hashable values (integers, strings).
    labels_pred : array-like of shape (n_samples,)
        Predicted cluster labels; any hashable values. Their number may differ from the
        number of classes.

    Returns
    -------
    f1 : float
        Number of matched samples divided by ``n_samples``, in [0, 1].

    Examples
    --------
    >>> from skanomclust.metrics import clustering_f1_score
    >>> clustering_f1_score([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> clustering_f1_score(["a", "a", "b", "b", "b"], [0, 0, 0, 1, 1])
    0.8
    """
    *_, counts = _contingency(labels_true, labels_pred)
    matching = _hungarian(counts)
    matched = sum(int(counts[i, j]) for i, j in matching.items())
    return matched / int(counts.sum())


def clustering_report(labels_true, labels_pred, *, target_names=None):
    """Clustering scores, contingency table and class-to-cluster matching, as plain Python types.

    Parameters
    ----------
    labels_true : array-like of shape (n_samples,)
        Ground-truth classes; any hashable values.
    labels_pred : array-like of shape (n_samples,)
        Predicted cluster labels; any hashable values.
    target_names : sequence of str, default=None
        Class names. When given, ``labels_true`` must hold integer indices into it and the
        report names classes by ``target_names[label]``.

    Returns
    -------
    report : dict
        Everything in it is a plain Python value, so ``json.dump`` accepts it:

        - ``"nmi"``: :func:`sklearn.metrics.normalized_mutual_info_score`;
        - ``"ari"``: :func:`sklearn.metrics.adjusted_rand_score`;
        - ``"f1"``: :func:`clustering_f1_score`;
        - ``"n_samples"``, ``"n_clusters"``, ``"n_classes"``: counts of samples and of the
          distinct clusters and classes present;
        - ``"contingency"``: ``{"classes": [...], "clusters": [...], "counts": [[...], ...]}``
          with one row of ``counts`` per class and one column per cluster;
        - ``"matching"``: ``{class: matched cluster or None}``.

    Examples
    --------
    >>> from skanomclust.metrics import clustering_report
    >>> report = clustering_report([0, 0, 1, 1, 1], [5, 5, 5, 7, 7], target_names=["good", "cut"])
    >>> report["f1"]
    0.8
    >>> report["contingency"]
    {'classes': ['good', 'cut'], 'clusters': [5, 7], 'counts': [[2, 0], [1, 2]]}
    >>> report["matching"]
    {'good': 5, 'cut': 7}
    """
    classes, clusters, true_codes, pred_codes, counts = _contingency(labels_true, labels_pred)
    if target_names is not None:
        names = list(target_names)
        for label in classes:
            if not (
                isinstance(label, numbers.Integral)
                and not isinstance(label, bool)
                and 0 <= label < len(names)
            ):
                raise ValueError(
                    f"labels_true must hold integer indices into target_names "
                    f"(0 to {len(names) - 1}) when target_names is given; found {label!r}"
                )
        classes = [_python_scalar(names[label]) for label in classes]
    matching = _hungarian(counts)
    n_samples = int(counts.sum())
    matched = sum(int(counts[i, j]) for i, j in matching.items())
    return {
        "nmi": float(normalized_mutual_info_score(true_codes, pred_codes)),
        "ari": float(adjusted_rand_score(true_codes, pred_codes)),
        "f1": matched / n_samples,
        "n_samples": n_samples,
        "n_clusters": len(clusters),
        "n_classes": len(classes),
        "contingency": {
            "classes": list(classes),
            "clusters": list(clusters),
            "counts": counts.tolist(),
        },
        "matching": {
            cls: (clusters[matching[i]] if i in matching else None)
            for i, cls in enumerate(classes)
        },
    }


def format_clustering_report(report):
    """Render a :func:`clustering_report` as a text table.

    Parameters
    ----------
    report : dict
        The output of :func:`clustering_report`.

    Returns
    -------
    text : str
        NMI, ARI and F1, then the contingency table (rows: true classes, columns: predicted
        clusters); the matched cell of each class is marked with ``*``.

    Examples
    --------
    >>> from skanomclust.metrics import clustering_report, format_clustering_report
    >>> print(format_clustering_report(clustering_report(["a", "a", "b"], [0, 0, 1])))
    NMI 1.000   ARI 1.000   F1 1.000
    n_samples 3   n_classes 2   n_clusters 2
    <BLANKLINE>
    class \\ cluster   0   1
    a                2*  0
    b                0   1*
    """
    table = report["contingency"]
    classes = [str(c) for c in table["classes"]]
    clusters = [str(c) for c in table["clusters"]]
    matched = {
        (str(cls), str(cluster))
        for cls, cluster in report["matching"].items()
        if cluster is not None
    }
    corner = "class \\ cluster"
    cells = [
        [
            str(count) + ("*" if (cls, cluster) in matched else "")
            for cluster, count in zip(clusters, row, strict=True)
        ]
        for cls, row in zip(classes, table["counts"], strict=True)
    ]
    first = max([len(corner), *map(len, classes)])
    widths = [
        max([len(cluster), *(len(row[j]) for row in cells)]) + 1
        for j, cluster in enumerate(clusters)
    ]
    lines = [
        f"NMI {report['nmi']:.3f}   ARI {report['ari']:.3f}   F1 {report['f1']:.3f}",
        f"n_samples {report['n_samples']}   n_classes {report['n_classes']}   "
        f"n_clusters {report['n_clusters']}",
        "",
        corner.ljust(first)
        + "".join("  " + c.ljust(w) for c, w in zip(clusters, widths, strict=True)),
    ]
    for cls, row in zip(classes, cells, strict=True):
        lines.append(
            cls.ljust(first) + "".join("  " + c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(line.rstrip() for line in lines)


# -------------------------------------------------------------------------------------------------
# Localization
# -------------------------------------------------------------------------------------------------


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
    """Validated lists of boolean masks and float64 maps, pairwise of equal shape."""
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
        amap = amap.astype(np.float64)
        if not np.isfinite(amap).all():
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


def _pixel_auroc(masks, anomaly_maps):
    y_true = np.concatenate([mask.ravel() for mask in masks])
    scores = np.concatenate([amap.ravel() for amap in anomaly_maps])
    n_positive = int(np.count_nonzero(y_true))
    if n_positive == 0:
        raise ValueError(
            "pixel AUROC is undefined: the masks have no anomalous pixel "
            "(uint8 masks are read as > 127, other numeric masks as > 0.5)"
        )
    if n_positive == y_true.size:
        raise ValueError("pixel AUROC is undefined: the masks have no normal pixel")
    return float(roc_auc_score(y_true, scores))


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
        :func:`sklearn.metrics.roc_auc_score` of the pooled pixels.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in number or shape (the message names the image),
        a map holds NaN or infinite values, or the masks hold no anomalous or no normal pixel.

    Examples
    --------
    >>> from skanomclust.metrics import pixel_auroc
    >>> pixel_auroc([[[0, 1], [0, 1]]], [[[0.1, 0.8], [0.4, 0.3]]])
    0.75
    """
    return _pixel_auroc(*_check_localization_inputs(masks, anomaly_maps))


def _pro_curve(masks, anomaly_maps):
    """Exact PRO curve: ``(fpr, pro)`` at every distinct threshold, from (0, 0) to (1, 1).

    Sorting all pixels by decreasing score, a pixel of region ``k`` (of size ``s_k``, among
    ``R`` regions) raises the PRO by ``1 / (R s_k)`` once the threshold reaches its score, a
    normal pixel raises the FPR by ``1 / n_normal``. Cumulative sums read at the last pixel of
    each group of equal scores give the curve, ties entering at once.
    """
    scores = np.concatenate([amap.ravel() for amap in anomaly_maps])
    regions = np.empty(scores.size, dtype=np.intp)  # 0 = normal, 1..R = defect regions
    start, n_regions = 0, 0
    for mask in masks:
        # Default structure of scipy.ndimage.label: 4-connectivity, as in MVTec's evaluation.
        labels, n = ndimage.label(mask)
        labels = labels.ravel()
        regions[start : start + labels.size] = np.where(labels > 0, labels + n_regions, 0)
        start += labels.size
        n_regions += n
    if n_regions == 0:
        raise ValueError(
            "AU-PRO is undefined: the masks have no defect region "
            "(uint8 masks are read as > 127, other numeric masks as > 0.5)"
        )
    sizes = np.bincount(regions, minlength=n_regions + 1)
    n_normal = int(sizes[0])
    if n_normal == 0:
        raise ValueError("AU-PRO is undefined: the masks have no normal pixel")

    order = np.argsort(scores, kind="stable")[::-1]
    scores, regions = scores[order], regions[order]
    is_normal = regions == 0
    fpr = np.cumsum(is_normal) / n_normal
    pro = np.cumsum(np.where(is_normal, 0.0, 1.0 / sizes[regions])) / n_regions
    group_ends = np.append(np.flatnonzero(np.diff(scores)), scores.size - 1)
    fpr = np.concatenate(([0.0], fpr[group_ends]))
    pro = np.concatenate(([0.0], pro[group_ends]))
    return fpr, pro


def _au_pro(masks, anomaly_maps, fpr_limit):
    fpr, pro = _pro_curve(masks, anomaly_maps)
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


def au_pro(masks, anomaly_maps, *, fpr_limit=0.3):
    """Normalised area under the per-region-overlap (PRO) curve up to a false-positive rate.

    The AU-PRO of MVTec AD (Bergmann et al., IJCV 2021). Connected components of each
    ground-truth mask (:func:`scipy.ndimage.label` with its default structure, i.e.
    4-connectivity, as in MVTec's evaluation code) are the defect regions. At a threshold
    ``t``, the PRO is the mean over all regions of all images of the fraction of the region's
    pixels scoring ``>= t`` (each region counts equally, whatever its size), and the FPR is the
    fraction of all normal pixels (``mask == 0``, over all images) scoring ``>= t``. The curve
    is computed exactly, at every distinct score, from (0, 0) (threshold above every score) to
    (1, 1); pixels with equal scores enter together. It is interpolated linearly at
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
        In [0, 1].

    Raises
    ------
    ValueError
        If the inputs are invalid (see :func:`pixel_auroc`), or the masks hold no defect
        region or no normal pixel.

    Examples
    --------
    One region of two pixels, two normal pixels. The curve runs through (0, 0), (0, 0.5),
    (0.5, 0.5), (0.5, 1) and (1, 1); its area up to FPR 0.3 is 0.3 * 0.5:

    >>> from skanomclust.metrics import au_pro
    >>> au_pro([[[0, 1, 1, 0]]], [[[0.1, 0.8, 0.4, 0.6]]])
    0.5
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    return _au_pro(*_check_localization_inputs(masks, anomaly_maps), fpr_limit)


def localization_report(masks, anomaly_maps, *, fpr_limit=0.3):
    """Pixel AUROC and AU-PRO of a set of anomaly maps.

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
    return {
        "pixel_auroc": _pixel_auroc(masks, anomaly_maps),
        "au_pro": _au_pro(masks, anomaly_maps, fpr_limit),
    }
