"""Clustering of anomaly types against ground-truth classes: NMI, ARI and a matched F1."""

import numbers

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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
