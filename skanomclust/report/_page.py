"""``write_report``: check the inputs, draw the pictures, write the page."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
from joblib import effective_n_jobs

from . import _pictures
from ._payload import build_payload, cluster_ids, payload_json

#: Runs with more images than this get their pictures in a folder beside the page.
EMBED_LIMIT = 300


def _template(name):
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _check(result, images, names, coordinates, target, target_names):
    for key in ("labels", "anomaly_maps", "image_scores", "descriptors", "region_threshold"):
        if key not in result:
            raise ValueError(f"result has no {key!r}: pass what cluster_images returns")
    if isinstance(images, (str, os.PathLike)):
        raise TypeError("images must be a list of paths or an array of images, not one path")
    n = len(images)
    if n == 0:
        raise ValueError("The report needs at least one image")
    lengths = {
        "names": len(names),
        "labels": len(result.labels),
        "anomaly_maps": len(result.anomaly_maps),
        "image_scores": len(result.image_scores),
        "descriptors": len(result.descriptors),
    }
    if coordinates is not None:
        lengths["coordinates"] = len(coordinates)
    if target is not None:
        lengths["target"] = len(target)
        if target_names is None:
            raise ValueError("target_names is required with target")
    for key, length in lengths.items():
        if length != n:
            raise ValueError(f"{key} has {length} entries for {n} images")
    if np.ndim(result.anomaly_maps[0]) != 2:
        raise ValueError(
            f"anomaly_maps must hold 2-D maps, got shape {np.shape(result.anomaly_maps[0])}"
        )


def _draw(result, images, names, store, verbose, n_jobs):
    """Every image's pictures, stored; the lists the payload needs.

    Each image is drawn and stored on one of ``n_jobs`` threads (decoding,
    resizing, JPEG encoding and file writing release the GIL); results come
    back in order, a few images ahead of the one being collected, so memory
    does not grow with the number of images.
    """
    from .._utils import ordered_map, progress_bar

    threshold = float(result.region_threshold)
    vmin, vmax = _pictures.colour_scale(result.anomaly_maps, threshold)

    def draw_and_store(i):
        item = images[i]
        drawn = _pictures.render(item, result.anomaly_maps[i], threshold, vmin, vmax, names[i])
        if drawn["original"] is None:
            original = _pictures.file_url(item)
        else:
            original = store.put(i, "o", drawn["original"])
        return {
            "thumb": store.put(i, "t", drawn["thumb"]),
            "heat": store.put(i, "m", drawn["heat"]),
            "original": original,
            "width": drawn["width"],
            "height": drawn["height"],
        }

    columns = {key: [] for key in ("thumb", "heat", "original", "width", "height")}
    bar = progress_bar(len(images), verbose, "report")
    threads = effective_n_jobs(n_jobs)
    threads = threads if threads > 1 else 0  # one: drawn in this thread
    for urls in ordered_map(draw_and_store, len(images), threads, ahead=2 * threads):
        for key, column in columns.items():
            column.append(urls[key])
        bar.update(1)
    bar.close()
    if not store.embed:  # the page builds these file names from the index
        columns["thumb"] = columns["heat"] = None
    return {
        **columns,
        "folder": None if store.embed else store.folder.name,
        "vmin": vmin,
        "vmax": vmax,
    }


def render_page(payload, title):
    """The HTML text of the page around ``payload`` (a dict, see :mod:`._payload`)."""
    parts = {
        "title": _escape(title),
        "css": _template("report.css"),
        "payload": payload_json(payload),
        "script": _template("report.js") + "\n" + _template("review.js"),
    }
    # One pass over the template only: text inside the parts is never substituted.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _template("report.html"))


def _escape(text):
    return (
        str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace('"', "&quot;")
    )  # fmt: skip


def write_report(
    path,
    result,
    images,
    names,
    *,
    coordinates=None,
    target=None,
    target_names=None,
    metrics=None,
    settings=None,
    title="Anomaly clustering report",
    n_jobs=None,
    verbose=False,
):
    """Write the HTML report of a run: summary, cluster galleries and the review page.

    The report renders what the run computed (no model is run, torch is not
    imported by this module). It is one HTML file that opens offline in any
    browser; for runs of more than ``EMBED_LIMIT`` (300) images the pictures are
    JPEG files in the folder ``<stem>_files`` beside it (``report_files`` for
    ``report.html``), loaded as they scroll into view, so the HTML stays small.

    Parameters
    ----------
    path : path-like
        The HTML file to write (written to a temporary name first, then renamed,
        so an interrupted run leaves no half-written report).
    result : Bunch
        What :func:`skanomclust.run.cluster_images` or
        :func:`~skanomclust.run.assign_images` returns: ``labels``,
        ``anomaly_maps``, ``image_scores``, ``descriptors``, ``region_threshold``,
        and, when present, ``n_clusters``, ``n_clusters_scores``,
        ``normal_cluster``, ``gate``, ``timings`` and ``model``.
    images : list of path-like or ndarray
        The images, in the order of the result: file paths, or arrays.
    names : list of str
        How the images are shown and exported (paths relative to the input folder).
    coordinates : ndarray of shape (n_images, 2), optional
        2-D map of the descriptors (:func:`skanomclust.run.embed_descriptors`);
        rows with NaN are left out of the map.
    target : array-like of shape (n_images,), optional
        Class index of each image into ``target_names`` (used only to colour the map).
    target_names : list of str, optional
    metrics : dict, optional
        :func:`skanomclust.metrics.clustering_report`, optionally with
        ``"localization": {"pixel_auroc": ..., "au_pro": ...}``.
    settings : dict, optional
        Run settings, shown in a table (``input`` also identifies the run in reviews).
    title : str, default="Anomaly clustering report"
    n_jobs : int, default=None
        Threads drawing the pictures, as in joblib: None means 1 (unless in a
        :func:`joblib.parallel_config` context), -1 every CPU. The report is
        the same whatever the number.
    verbose : bool, default=False
        Progress while the pictures are drawn.

    Returns
    -------
    path : pathlib.Path
        The report written.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skanomclust.report import write_report
    >>> rng = np.random.default_rng(0)
    >>> maps = rng.random((4, 8, 8)).astype(np.float32)
    >>> result = Bunch(labels=np.array([0, 0, 1, 1]), anomaly_maps=maps,
    ...                image_scores=maps.max(axis=(1, 2)), descriptors=rng.random((4, 3)),
    ...                region_threshold=0.9, n_clusters=2)
    >>> images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_report(os.path.join(tmp, "report.html"), result, images,
    ...                        ["a.png", "b.png", "c.png", "d.png"])
    ...     text = out.read_text()
    >>> '"format":"skanomclust-report"' in text
    True
    """
    names = [str(name) for name in names]
    _check(result, images, names, coordinates, target, target_names)
    path = Path(path)
    labels, clusters, cluster_names = cluster_ids(result)
    store = _pictures.PictureStore(path, embed=len(images) <= EMBED_LIMIT)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pictures = _draw(result, images, names, store, verbose, n_jobs)
        payload = build_payload(
            result,
            names,
            labels,
            clusters,
            cluster_names,
            pictures,
            coordinates=coordinates,
            target=target,
            target_names=target_names,
            metrics=metrics,
            settings=settings,
            title=title,
        )
        temporary.write_text(render_page(payload, title), encoding="utf-8")
        store.commit()
        temporary.replace(path)
    except BaseException:
        store.discard()
        temporary.unlink(missing_ok=True)
        raise
    return path
