"""The streaming pass of a run: every image through a fitted pipeline, chunk by chunk.

Split from :mod:`skanomclust.run`, which fits the model and hands the images to
:func:`_stream`; here each chunk is assigned (in this process or as a Dask task),
stored as it finishes and passed on to ``on_chunk`` in input order. Its unit of
work, :func:`assign_chunk`, is public as :func:`skanomclust.run.assign_chunk`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.utils import Bunch

from .contract import image_scores, split_localizer_output
from .nn.gate import otsu_threshold

__all__ = ["assign_chunk"]


def _take(images, indices):
    """The images at ``indices`` (a list, or an array's rows)."""
    if isinstance(images, np.ndarray):
        return images[indices]
    return [images[i] for i in indices]


def assign_chunk(model, images):
    """Labels, anomaly maps, scores and descriptors of a few images under a fitted model.

    The unit of work of the streaming pass (and of a Dask task): one chunk of
    images through every step, features freed when it returns.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        A fitted blind pipeline.
    images : list or ndarray
        The chunk's images.

    Returns
    -------
    result : Bunch
        ``labels``, ``anomaly_maps`` (float32, feature resolution),
        ``image_scores``, ``descriptors`` and ``seconds`` per step.
    """
    seconds = {}
    result = _run_steps(model, images, seconds, fit=False)
    result.seconds = seconds
    return result


def _run_steps(model, images, seconds, *, fit):
    """Every step of the pipeline on ``images`` (``fit_transform`` when fitting, else
    ``transform``; exactly as ``Pipeline.fit`` / ``predict``), timing each step into
    ``seconds``; the maps are read from the localizer's output on the way."""

    def timed(key, call, data):
        start = time.perf_counter()
        out = call(data)
        seconds[key] = time.perf_counter() - start
        return out

    data = images
    for name, step in model.steps[:-1]:
        key = {"features": "features", "localizer": "localizer"}.get(name, "descriptors")
        data = timed(key, step.fit_transform if fit else step.transform, data)
        if name == "localizer":
            maps = np.asarray(split_localizer_output(data)[1], dtype=np.float32)
    final = model.steps[-1][1]
    labels = timed("clustering", final.fit_predict if fit else final.predict, data)
    if not fit and getattr(final, "classes_", None) is not None:
        labels = np.searchsorted(final.classes_, labels)  # a classifier of reviewed names
    return Bunch(
        labels=labels,
        anomaly_maps=maps,
        image_scores=image_scores(maps),
        descriptors=np.asarray(data, dtype=np.float32),
    )


def _stream(model, images, sample, fit, chunk_size, client, work, on_chunk, verbose, timings):
    """Every image's results, in input order: the fitted sample's, the others assigned.

    Chunks are assigned in any order (a cluster returns them as they finish);
    each is written into the outputs as it comes, and ``on_chunk`` sees the
    chunks in input order, as soon as all before them are done.
    """
    from ._utils import progress_bar

    n = len(images)
    in_sample = np.full(n, -1)
    in_sample[sample] = np.arange(len(sample))
    chunks = [np.arange(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    outputs = None if fit is None else work.outputs(n, fit)
    ready, pending = set(), {}
    for i, chunk in enumerate(chunks):
        new = chunk[in_sample[chunk] < 0]
        if new.size and not work.has_chunk(i):
            pending[i] = new
            continue
        stored = work.load_chunk(i) if new.size else None
        if outputs is None:
            outputs = work.outputs(n, stored)
        _store(outputs, chunk, _chunk_result(chunk, in_sample, fit, stored))
        ready.add(i)

    emitted = 0

    def emit():
        nonlocal emitted
        while emitted < len(chunks) and emitted in ready:
            if on_chunk is not None:
                chunk = chunks[emitted]
                on_chunk(chunk, Bunch(**{k: outputs[k][chunk] for k in _RESULT_KEYS}))
            emitted += 1

    if outputs is not None:
        emit()
    bar = progress_bar(len(pending), verbose and bool(pending), "assigning", unit="chunk")
    if client is not None and pending:
        from ._distributed import map_chunks

        done = map_chunks(client, model, {i: _take(images, idx) for i, idx in pending.items()})
    else:
        done = ((i, assign_chunk(model, _take(images, idx))) for i, idx in pending.items())
    try:
        for i, result in done:
            work.save_chunk(i, result)
            for step, seconds in result.seconds.items():
                timings[f"assign: {step}"] = timings.get(f"assign: {step}", 0.0) + seconds
            if outputs is None:
                outputs = work.outputs(n, result)
            _store(outputs, chunks[i], _chunk_result(chunks[i], in_sample, fit, result))
            ready.add(i)
            emit()
            bar.update(1)
    finally:
        bar.close()
        done.close()  # on an error or interrupt: cancels the cluster's remaining tasks now
    work.finish(outputs)
    clustering = model.steps[-1][1]
    labels = outputs["labels"]
    gate = model.steps[-2][1].gate_
    normal = None
    if gate.active_:
        means = [
            outputs["image_scores"][labels == c].mean() if (labels == c).any() else np.inf
            for c in range(clustering.n_clusters_)
        ]
        normal = int(np.argmin(means))
    # Pixels above this level are outlined as anomalous in reports: the score at which
    # the gate deems an image anomalous, or Otsu's split of the scores without a gate.
    region = (
        gate.threshold_
        if gate.active_
        else otsu_threshold(
            torch.from_numpy(np.asarray(outputs["image_scores"], dtype=np.float64))
        )
    )
    return Bunch(
        **outputs,
        region_threshold=float(region),
        n_clusters=int(clustering.n_clusters_),
        n_clusters_scores=clustering.n_clusters_scores_,
        # A model refitted on a review assigns reviewed names: label i is cluster_names[i].
        cluster_names=(
            None
            if getattr(clustering, "classes_", None) is None
            else [str(c) for c in clustering.classes_]
        ),
        normal_cluster=normal,
        gate=gate.summary(),
        timings=timings,
        model=model,
    )


_RESULT_KEYS = ("labels", "anomaly_maps", "image_scores", "descriptors")


def _store(outputs, chunk, result):
    for key in _RESULT_KEYS:
        outputs[key][chunk] = result[key]


def _chunk_result(chunk, in_sample, fit, assigned):
    """One chunk's results, in input order, from the fitted sample's and the assigned ones."""
    from_fit = in_sample[chunk] >= 0
    if not from_fit.any():
        return assigned
    parts = {}
    for key in _RESULT_KEYS:
        reference = np.asarray(fit[key])
        values = np.empty((len(chunk), *reference.shape[1:]), dtype=reference.dtype)
        values[from_fit] = reference[in_sample[chunk][from_fit]]
        if not from_fit.all():
            values[~from_fit] = assigned[key]
        parts[key] = values
    return Bunch(**parts)
