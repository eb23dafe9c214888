"""Small helpers shared by the estimators: progress reporting and 4-D transform outputs.

Threads and parallelism
-----------------------
The estimators never change torch's thread settings: ``fit`` and ``transform``
do not call :func:`torch.set_num_threads`, so torch uses what the process was
started with (by default one intra-op thread per core). Choose it yourself:

- for a whole process, set ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) before
  Python starts, or call ``torch.set_num_threads(t)`` once at the top of the
  script;
- ``GridSearchCV(n_jobs=k)`` (and any joblib parallelism) with the default
  *loky* backend starts worker processes; joblib sets ``OMP_NUM_THREADS`` in
  each worker to ``n_cpus // k`` unless the variable is already set in the
  parent (``joblib.parallel_config(inner_max_num_threads=t)`` sets it
  explicitly), and torch reads it when a worker imports it. With ``k`` workers
  each worker should use ``n_cpus // k`` torch threads or fewer: more only
  oversubscribes the cores and is slower;
- with the *threading* backend all workers share one process and one torch
  thread pool: call ``torch.set_num_threads(max(1, n_cpus // k))`` before the
  search. Fitted estimators are not modified by ``transform``/``predict``, and
  no estimator touches a global random generator, so one fitted pipeline may
  serve several threads and several fits may run at once;
- on a GPU (``device="cuda"``) prefer ``n_jobs=1``: the workers would share
  one device and its memory.

The results do not depend on the number of threads beyond float rounding
(see the user guide, "Reproducibility").
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_container_adapter

__all__ = ["MapsOutputMixin", "ordered_map", "progress_bar"]


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


class _CompactProgress:
    """Progress as a few plain lines, for a log file (no carriage-return updates).

    Prints when a tenth of the work more is done, at most every ``interval``
    seconds, and once at the end.
    """

    def __init__(self, total, desc, unit, stream, interval=10.0):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.done, self.interval = 0, interval
        self.start = self.last = time.monotonic()
        self.next_share = 0.1

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        share = self.done / max(self.total, 1)
        if share >= self.next_share and now - self.last >= self.interval and share < 1:
            self._print(now)
            self.next_share = share + 0.1

    def _print(self, now):
        self.last = now
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit} ({now - self.start:.0f} s)",
            file=self.stream,
            flush=True,
        )

    def close(self):
        self._print(time.monotonic())


def progress_bar(total: int, verbose, desc: str, unit: str = "img"):
    """A progress reporter: a tqdm bar on a terminal, a few log lines otherwise.

    Nothing at all unless ``verbose`` is truthy (the library is quiet by
    default). When standard error is not a terminal (output redirected to a
    file), a bar's carriage-return updates would fill the file; a few complete
    lines are written instead.
    """
    if not verbose:
        return _NoBar()
    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return _CompactProgress(total, desc, unit, stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream)


class MapsOutputMixin:
    """``set_output`` for transformers whose output is 4-D maps (2-D for 2-D input).

    scikit-learn's automatic wrapping turns every ``transform`` output into a
    DataFrame, which cannot hold ``(n, C, h, w)`` maps. Classes using this
    mixin (listed first among the bases) return ``self._wrap_output(out, X)``
    from ``transform``: a 2-D output follows
    ``set_output`` (or ``sklearn.set_config(transform_output=...)``) and is
    named by ``get_feature_names_out``; a 4-D output always stays a numpy
    array. ``set_output`` is accepted either way, so ``Pipeline.set_output``
    works on a pipeline that starts with map-producing steps.
    """

    def __init_subclass__(cls, **kwargs):
        # Turn scikit-learn's automatic wrapping off, for subclasses of subclasses too.
        kwargs["auto_wrap_output_keys"] = None
        super().__init_subclass__(**kwargs)

    def set_output(self, *, transform=None):
        """Set the output container of ``transform`` and ``fit_transform``.

        Only 2-D outputs are wrapped; 4-D feature maps are always numpy arrays.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None, default=None
            ``None`` leaves the configuration unchanged.

        Returns
        -------
        self : estimator instance
        """
        if transform is None:
            return self
        if transform not in ADAPTERS_MANAGER.supported_outputs:
            raise ValueError(
                f"output config must be in {sorted(ADAPTERS_MANAGER.supported_outputs)}, "
                f"got {transform}"
            )
        if not hasattr(self, "_sklearn_output_config"):
            self._sklearn_output_config = {}
        self._sklearn_output_config["transform"] = transform
        return self

    def _wrap_output(self, out, X):
        if out.ndim != 2 or not hasattr(self, "get_feature_names_out"):
            return out
        adapter = _get_container_adapter("transform", self)
        if adapter is None:  # "default"
            return out
        return adapter.create_container(out, X, columns=self.get_feature_names_out)


def ordered_map(function, n, threads, ahead):
    """``function(i)`` for ``i`` in ``range(n)``, yielded in order, computed ahead on threads.

    With ``threads`` 0 the calls run one by one when their result is asked
    for. Otherwise up to ``ahead`` calls run or wait on a pool of ``threads``
    threads ahead of the result being consumed, which overlaps work that
    releases the GIL (decoding, resizing and encoding images, writing files)
    with the consumer's, in bounded memory. After an error, or when the
    consumer stops early, the waiting calls are cancelled and the running ones
    finish before the generator returns, so none is left writing behind it.
    """
    if threads <= 0:
        yield from map(function, range(n))
        return
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        queued = deque()
        for i in range(n):
            queued.append(pool.submit(function, i))
            if len(queued) > max(ahead, 1):
                yield queued.popleft().result()
        while queued:
            yield queued.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
