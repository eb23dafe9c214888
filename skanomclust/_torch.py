"""Torch glue shared by the estimators: the device policy, pickling, memory.

Device policy
-------------
Every estimator that computes with torch has a ``device`` parameter. ``fit``
resolves it once (:func:`resolve_device`: an unknown or unavailable device is
an error there, not later) into the fitted attribute ``device_``, and every
torch computation of the estimator, in ``fit`` and afterwards, runs there:
batches are moved to ``device_`` once and stay on it between the operations
of a step; only the step's output comes back to the CPU (as numpy arrays, the
data contract between steps).

Pickling
--------
:class:`TorchModulesMixin` stores fitted torch modules on the CPU, so a model
fitted on a GPU loads on a machine without one. After loading, the modules go
to ``device_`` when that device exists; otherwise ``device_`` becomes the CPU
and one warning says so (the same message for every step of a pipeline, so
Python's default warning filter shows it once).

Memory
------
glibc's ``malloc`` keeps blocks freed by a batch loop (tensors of up to 32 MiB)
in its heap instead of returning them to the operating system, so after one
step the process may hold a few hundred MiB it no longer uses, and the next
large allocation comes on top of them. The heavy loops call
:func:`release_freed_memory` when they end, which asks glibc to hand those pages
back (``malloc_trim``, the remedy Dask's documentation gives for the same
"unmanaged memory"); elsewhere it does nothing.

The opposite happens inside a loop: glibc serves blocks from its mmap
threshold up (at most 32 MiB as it adapts; a batch of 16 images at 256 px
holds 32 MiB activations in the backbone) with fresh pages from the kernel
and unmaps them when freed, so every batch pays page faults for the same
sizes again. The whole-job entry points (the command line,
:func:`~skanomclust.run.cluster_images`) call
:func:`keep_freed_blocks_for_reuse` once, which raises the mmap and trim
thresholds for the process (to 48 and 256 MiB): the blocks stay in the heap
for the next batch, and :func:`release_freed_memory` still hands them back
when a loop ends.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import itertools
import warnings

import torch

__all__ = [
    "TorchModulesMixin",
    "keep_freed_blocks_for_reuse",
    "module_device",
    "release_freed_memory",
    "resolve_device",
]


def resolve_device(device) -> torch.device:
    """Turn a ``device`` parameter into a :class:`torch.device`, checking that it exists."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(resolved.type, True)
    if not available:
        raise ValueError(
            f"device={device!r} was requested but {resolved.type.upper()} is not available on "
            "this machine; use device='cpu'."
        )
    if (
        resolved.type == "cuda"
        and resolved.index is not None
        and resolved.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device={device!r} was requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    return resolved


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _c_function(name: str):
    """A function of the process's C library, or None (not there, or no C library found)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError, TypeError):
        return None


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or no C library found)."""
    return _c_function("malloc_trim")


def release_freed_memory() -> None:
    """Return the heap's free pages to the operating system (glibc only; else a no-op).

    Frees nothing that is still referenced: it only lowers the resident memory
    that already-freed blocks still count for (see "Memory" above).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# glibc's mallopt parameters (malloc.h) and the values set by keep_freed_blocks_for_reuse.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks up to 48 MiB (a batch's first backbone activations at 256 px) come
# from the heap. Larger thresholds, which also took the 100 MiB expanded
# activations into the heap, were a little faster but let the peak memory of
# a streaming run creep up with the number of images (1385 -> 1601 MB over
# 3000 images with 256 MiB; 1393 -> 1564 MB with 128 MiB: presumably heap
# fragmentation); with 48 MiB it stayed flat. Up to 256 MiB of free heap top
# is kept between batches.
_MMAP_THRESHOLD_BYTES = 48 * 2**20
_TRIM_THRESHOLD_BYTES = 256 * 2**20
_OLD_GLIBC_MMAP_LIMIT = 32 * 2**20  # mallopt(3)'s limit on 64-bit, kept by older glibc releases


@functools.cache
def keep_freed_blocks_for_reuse() -> bool:
    """Let glibc keep freed blocks of up to 48 MiB for reuse; True if it was set.

    Process-wide and done once (later calls return the first answer): blocks
    of up to 48 MiB come from the heap instead of fresh mappings, and up to
    256 MiB of free heap top stay mapped until :func:`release_freed_memory`
    (see "Memory" above). The page faults this saves made up most of the
    feature pass's system time; the user guide ("Speed and memory") gives the
    measured gain and the peak memory. Not glibc (or no C library found):
    nothing is changed and False is returned.
    """
    mallopt = _c_function("mallopt")
    if mallopt is None:
        return False
    # The trim threshold alone would also switch off glibc's adaptive mmap
    # threshold (every block above 128 kB mapped afresh): set it only after
    # the mmap threshold was accepted.
    if not (
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        or mallopt(_M_MMAP_THRESHOLD, _OLD_GLIBC_MMAP_LIMIT)
    ):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


class TorchModulesMixin:
    """Fitted ``device_``; torch modules pickled on the CPU and restored to ``device_``.

    Subclasses have a ``device`` parameter, call :meth:`_resolve_device` at the
    start of ``fit`` and list the fitted attributes holding torch modules in
    ``_torch_modules``.
    """

    _torch_modules: tuple[str, ...] = ()

    def _resolve_device(self) -> torch.device:
        self.device_ = resolve_device(self.device)
        return self.device_

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never move the live modules
        for name in self._torch_modules:
            module = state.get(name)
            if isinstance(module, torch.nn.Module) and module_device(module).type != "cpu":
                state[name] = copy.deepcopy(module).cpu()
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "device_" not in state:
            return
        device = torch.device(state["device_"])
        try:
            device = resolve_device(device)
        except ValueError:
            warnings.warn(
                f"This model was fitted with device={str(device)!r}, which is not available "
                "here; it computes on the CPU. Pass device='cpu' (set_params) before refitting "
                "on this machine.",
                UserWarning,
                stacklevel=2,
            )
            device = torch.device("cpu")
        self.device_ = device
        for name in self._torch_modules:
            module = getattr(self, name, None)
            if isinstance(module, torch.nn.Module):
                module.to(device)
