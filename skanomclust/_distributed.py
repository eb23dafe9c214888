"""The streaming pass on a ``dask.distributed`` cluster (``skanomclust[distributed]``).

Dask does all the scheduling: the fitted model is scattered to every worker
once (``broadcast=True``), each chunk of images becomes one task
(:func:`skanomclust.run.assign_chunk`), and results come back as tasks finish.
How the cluster is started (a ``LocalCluster``, SSH, Kubernetes, an HPC job
queue) is Dask's business; see the user guide, "Beyond one machine".
"""

from __future__ import annotations

import uuid

__all__ = ["map_chunks"]


def map_chunks(client, model, chunks):
    """Assign every chunk on the cluster's workers; yield ``(index, result)`` as they finish.

    Parameters
    ----------
    client : dask.distributed.Client
    model : sklearn.pipeline.Pipeline
        The fitted pipeline (sent to each worker once).
    chunks : dict
        ``{index: images}``; the images (paths, or arrays) travel with the task,
        so paths must be readable on every worker.
    """
    try:
        from dask.distributed import as_completed
    except ImportError as exc:  # pragma: no cover - the client implies dask is installed
        raise ImportError(
            "Running on a Dask cluster needs dask.distributed: "
            "pip install 'skanomclust[distributed]'"
        ) from exc
    from ._streaming import assign_chunk

    run = uuid.uuid4().hex[:8]
    shipped = client.scatter(model, broadcast=True)
    futures = {
        client.submit(assign_chunk, shipped, images, key=f"skanomclust-{run}-{index}"): index
        for index, images in chunks.items()
    }
    try:
        for future, result in as_completed(futures, with_results=True):
            yield futures[future], result
            future.release()
    finally:
        client.cancel(list(futures))
