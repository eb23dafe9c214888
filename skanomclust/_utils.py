"""Small helpers shared by the estimators (devices, seeds, progress bars, pickling, output).

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
  oversubscribes the cores and is slower. ``torch.set_num_threads`` in the
  parent does not reach the workers;
- with the *threading* backend (``joblib.parallel_backend("threading")``) all
  workers share one process and one torch thread pool: call
  ``torch.set_num_threads(max(1, n_cpus // k))`` before the search. Fitted
  estimators are not modified by ``transform``/``predict``, so one fitted
  pipeline may serve several threads;
- on a GPU (``device="cuda"``) prefer ``n_jobs=1``: the workers would share
  one device and its memory.

Randomness comes only from ``random_state`` through local
:class:`torch.Generator` objects, except where ``skanomclust.nn`` seeds
torch's global generator inside ``torch.random.fork_rng`` to initialise a
module (the random backbone of ``weights=None`` and the contrastive head).
Those calls (for the refiner, its whole training) run under
:data:`global_rng_lock`, so threads fitting at the same time do not draw from
each other's seeds; they run one thread at a time.

Memory
------
glibc's ``malloc`` keeps blocks freed by a batch loop (tensors of up to 32 MiB)
in its heap instead of returning them to the operating system, so after one
step the process may hold a few hundred MiB it no longer uses, and the next
large allocation (a step's output) comes on top of them. The heavy loops call
:func:`release_freed_memory` when they end, which asks glibc to hand those pages
back (``malloc_trim``, the remedy Dask's documentation gives for the same
"unmanaged memory"); elsewhere it does nothing.

Pickling
--------
:class:`TorchModulesMixin` stores fitted torch modules on the CPU, so a model
fitted on a GPU loads on a machine without one; after loading, the modules go
back to the estimator's ``device`` when it exists there and stay on the CPU
(with a warning) when it does not.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import itertools
import threading
import warnings

import torch
from sklearn.utils import check_random_state
from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_container_adapter

__all__ = [
    "MapsOutputMixin",
    "TorchModulesMixin",
    "global_rng_lock",
    "module_device",
    "progress_bar",
    "release_freed_memory",
    "resolve_device",
    "seed_from_random_state",
    "torch_generator",
]

#: Held while code seeds and draws from torch's *global* generator (inside
#: ``torch.random.fork_rng``), which threads of one process share.
global_rng_lock = threading.RLock()


def resolve_device(device) -> torch.device:
    """Turn a ``device`` parameter into a :class:`torch.device`, checking it exists."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='cpu'."
        )
    return resolved


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def seed_from_random_state(random_state) -> int:
    """Draw one 63-bit seed from a scikit-learn ``random_state``."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def torch_generator(random_state, device="cpu") -> torch.Generator:
    """A local :class:`torch.Generator` seeded from ``random_state`` (no global seeding)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed_from_random_state(random_state))
    return generator


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or no C library found)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the operating system (glibc only; else a no-op).

    Frees nothing that is still referenced: it only lowers the resident memory
    that already-freed blocks still count for (see "Memory" above).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total: int, verbose, desc: str, unit: str = "img"):
    """A tqdm bar when ``verbose`` is truthy, else an object that does nothing."""
    if not verbose:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


class TorchModulesMixin:
    """Pickle fitted torch modules on the CPU; restore them to ``device`` when it exists.

    Subclasses list the fitted attributes holding torch modules in
    ``_torch_modules`` and have a ``device`` parameter.
    """

    _torch_modules: tuple[str, ...] = ()

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never move the live modules
        for name in self._torch_modules:
            module = state.get(name)
            if isinstance(module, torch.nn.Module) and module_device(module).type != "cpu":
                state[name] = copy.deepcopy(module).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        modules = [
            getattr(self, name)
            for name in self._torch_modules
            if isinstance(getattr(self, name, None), torch.nn.Module)
        ]
        if not modules or torch.device(self.device).type == "cpu":
            return
        try:
            device = resolve_device(self.device)
        except ValueError as exc:
            warnings.warn(
                f"{type(self).__name__} was fitted with device={self.device!r}, which is not "
                f"available here ({exc}); its torch modules stay on the CPU. Call "
                "set_params(device='cpu') before refitting on this machine.",
                UserWarning,
                stacklevel=2,
            )
            return
        for module in modules:
            module.to(device)


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
