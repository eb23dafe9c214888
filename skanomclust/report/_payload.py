"""The data the report page renders: one JSON object, written into the page.

Python computes every figure; the page's scripts only lay them out and keep the
reviewer's decisions. Image columns are stored as parallel lists (``images.path[i]``,
``images.cluster[i]``, ...) rather than one object per image, which keeps the JSON of a
5000-image run well under a megabyte. The descriptors are not in it, only what is
derived from them (:mod:`._typicality`) and the 2-D coordinates.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime

import numpy as np

from ._typicality import cluster_statistics, merge_suggestions, split_suggestions

# Clusters: matplotlib's "tab10", then "tab20"'s light tones. Cluster c always gets
# colour c (modulo the length), so the reports of 'cluster' and 'predict' on the same
# model colour a cluster alike.
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]
# Classes (kept apart from the cluster colours): "good" grey, defects Okabe-Ito.
_NORMAL_CLASS = "#b8bec6"
_CLASS_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442"]


def class_colours(names):
    """One colour per class name: grey for the normal class, Okabe-Ito for the others."""
    colours, defect = [], 0
    for name in names:
        if str(name).lower() in ("good", "normal", "ok", "no_defect", "no defect"):
            colours.append(_NORMAL_CLASS)
        else:
            colours.append(_CLASS_COLOURS[defect % len(_CLASS_COLOURS)])
            defect += 1
    return colours


def cluster_ids(result):
    """Integer cluster ids of the images, the ids shown, and their names.

    Labels of a clustering are ids already; every id below ``n_clusters`` is shown,
    even an empty one (a 'predict' run may leave a cluster empty), so ids and
    colours match the fitted model. Labels that are names (a model refitted on a
    review predicts the reviewed names) are numbered in the order of the
    classifier's ``classes_``.
    """
    labels = np.asarray(result.labels)
    if labels.dtype.kind in "iub":
        labels = labels.astype(np.int64)
        found = {int(c) for c in np.unique(labels)}
        clusters = sorted(found | set(range(int(result.get("n_clusters") or 0))))
        named = result.get("cluster_names") or []
        return (
            labels,
            clusters,
            {c: named[c] if c < len(named) else f"cluster {c}" for c in clusters},
        )
    model = result.get("model")
    last = model.steps[-1][1] if hasattr(model, "steps") else None
    names = [str(c) for c in getattr(last, "classes_", np.unique(labels.astype(str)))]
    for name in np.unique(labels.astype(str)):
        if name not in names:
            names.append(str(name))
    position = {name: j for j, name in enumerate(names)}
    ids = np.array([position[str(v)] for v in labels.tolist()], dtype=np.int64)
    return ids, list(range(len(names))), dict(enumerate(names))


def _number(value, digits=4):
    """A float rounded to ``digits`` significant digits; None for NaN and infinities."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _plain(value):
    """``value`` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return _number(value, 6)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _coordinates(coordinates, n):
    """Coordinates scaled to [0, 1] (y up), rounded; None for rows left out (NaN)."""
    if coordinates is None:
        return None, None
    xy = np.asarray(coordinates, dtype=np.float64).reshape(n, 2)
    shown = np.isfinite(xy).all(axis=1)
    if not shown.any():
        return None, None
    low, high = xy[shown].min(axis=0), xy[shown].max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, (xy - low) / span, 0.5)
    x = [round(float(v), 4) if ok else None for v, ok in zip(scaled[:, 0], shown, strict=True)]
    y = [round(float(v), 4) if ok else None for v, ok in zip(scaled[:, 1], shown, strict=True)]
    return x, y


def run_identity(names, labels, settings):
    """What identifies the run: its input, its images (a digest of their paths) and a key.

    The key (paths, labels and title digested) names the page's saved review in the
    browser, so that two reports of the same images keep their reviews apart.
    """
    paths_sha1 = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()
    key = hashlib.sha1(paths_sha1.encode("ascii") + np.asarray(labels).tobytes()).hexdigest()
    return {
        "input": (settings or {}).get("input"),
        "n_images": len(names),
        "paths_sha1": paths_sha1,
        "key": key[:16],
    }


def build_payload(result, names, labels, clusters, cluster_names, pictures, **extra):
    """The page's JSON object (see the module docstring of :mod:`skanomclust.report`).

    Parameters
    ----------
    result : Bunch
        The run (see :func:`skanomclust.run.cluster_images`).
    names : list of str
        Display names (paths) of the images.
    labels : ndarray of int
        Cluster id of each image (:func:`cluster_ids`).
    clusters : list of int
        The cluster ids shown.
    cluster_names : dict
        Initial name of each cluster.
    pictures : dict
        ``folder`` (or None), ``thumb``/``heat`` (data URIs or None), ``original``,
        ``width``, ``height`` lists, ``vmin``, ``vmax``.
    **extra
        ``coordinates``, ``target``, ``target_names``, ``metrics``, ``settings``,
        ``title``.
    """
    n = len(names)
    scores = np.asarray(result.image_scores, dtype=np.float64)
    present = [c for c in clusters if np.any(labels == c)]
    stats = cluster_statistics(result.descriptors, labels, present)
    spread = dict(zip(present, stats["spread"], strict=True))
    normal = result.get("normal_cluster")
    cluster_rows = []
    for c in clusters:
        members = labels == c
        cluster_rows.append(
            {
                "id": int(c),
                "name": cluster_names[c],
                "colour": PALETTE[c % len(PALETTE)],
                "size": int(members.sum()),
                "spread": _number(spread.get(c, 0.0)),
                "normal": normal is not None and int(normal) == c,
                "median_score": _number(np.median(scores[members])) if members.any() else None,
                "max_score": _number(np.max(scores[members])) if members.any() else None,
            }
        )
    target, target_names = extra.get("target"), extra.get("target_names")
    classes = None
    if target is not None:
        target = np.asarray(target).astype(np.int64)
        classes = {"names": [str(t) for t in target_names], "colours": class_colours(target_names)}
    x, y = _coordinates(extra.get("coordinates"), n)
    threshold = float(result.region_threshold)
    auto = result.get("n_clusters_scores")
    metrics = dict(extra.get("metrics") or {})
    localization = metrics.pop("localization", None)
    settings = extra.get("settings") or {}
    return _plain(
        {
            "format": "skanomclust-report",
            "version": 1,
            "title": extra.get("title"),
            "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "run": run_identity(names, labels, settings),
            "summary": {
                "n_images": n,
                "n_clusters": len(present),
                "gate": result.get("gate"),
                "normal_cluster": None if normal is None else int(normal),
                "region_threshold": _number(threshold),
                "share_outlined": _number(np.mean(scores > threshold), 3),
            },
            "auto_k": (
                None
                if not auto
                else {
                    "scores": [[int(k), _number(s)] for k, s in sorted(auto.items())],
                    "chosen": int(result.n_clusters),
                }
            ),
            "metrics": metrics or None,
            "localization": localization,
            "palette": PALETTE,
            "clusters": cluster_rows,
            "classes": classes,
            "images": {
                "path": list(names),
                "cluster": labels,
                "score": [_number(s) for s in scores],
                "distance": [_number(d, 3) for d in stats["distance"]],
                "confidence": [round(float(c), 3) for c in stats["confidence"]],
                "nearest": stats["nearest"],
                "class": None if target is None else target,
                "x": x,
                "y": y,
                **{key: pictures[key] for key in ("width", "height", "thumb", "heat", "original")},
            },
            "pictures": {
                "folder": pictures["folder"],
                "vmin": _number(pictures["vmin"]),
                "vmax": _number(pictures["vmax"]),
            },
            "suggestions": merge_suggestions(present, stats["centres"], stats["spread"])
            + split_suggestions(result.descriptors, labels, present, stats["spread"]),
            "settings": settings,
            "timings": {k: round(float(v), 3) for k, v in (result.get("timings") or {}).items()},
        }
    )


def payload_json(payload):
    """The payload as JSON that is safe inside ``<script type="application/json">``.

    ``<`` is written as ``\\u003c``, so no text in it (a path, a title) can end
    the script element or open a comment.
    """
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")
