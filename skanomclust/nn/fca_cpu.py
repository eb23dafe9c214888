"""FCA's rank differences on the CPU, compiled with numba (step 3, CPU kernel).

:func:`skanomclust.nn.fca.feature_correspondence_analysis` ranks every value
of every neighbourhood by counting, for each pixel offset, which of the two
pixels precedes the other, and summing these indicators over boxes of offsets
(see :func:`skanomclust.nn.fca._rank_differences`). In torch each of those
several hundred elementwise steps is one pass over a chunk of 64 MB, so the
CPU spends its time streaming memory. Here the same steps run one channel at
a time: a channel's indicators and counts (about 300 kB for a 32 x 32 map)
stay in the core's cache, and each step is a short loop that the compiler
vectorises. This module computes exactly what ``_rank_differences`` does (the
same ranks, ties broken by row-major position; channel sums in another
order, so the differences agree to float rounding), several times faster.

Threads: the kernels release the GIL and the work is split into fixed tasks
(an image's channels in two halves), run on ``torch.get_num_threads()``
Python threads. A task's result does not depend on the thread that runs it or
on the other images of the call, so the maps are the same for any number of
threads and any batch composition. numba's own parallel layer is not used:
its default layer cannot be entered from two Python threads at once (Dask
workers, user code), and its threads would compete with torch's.

Compiled code is cached on disk (``cache=True``): the first use on a machine
compiles for about 10 s, later processes load it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["rank_differences"]

# An image's channels are split into this many tasks, so that even one image
# keeps two cores busy; fixed (not derived from the thread count) so that the
# order of the channel sums, hence the result, never changes.
_CHANNEL_BLOCKS = 2

_JIT = {"cache": True, "nogil": True, "boundscheck": False}

# Each elementwise step is its own small function: numba compiles it
# separately, and LLVM vectorises these plain loops over 1-d arrays (written
# inline in one large function, the same loops ran 5-7x slower, unvectorised).


@njit(**_JIT)
def _copy(out, a):
    for i in range(out.size):
        out[i] = a[i]


@njit(**_JIT)
def _less(out, a, b):
    for i in range(out.size):
        out[i] = a[i] < b[i]


@njit(**_JIT)
def _complement(out, a):
    for i in range(out.size):
        out[i] = 1 - a[i]


@njit(**_JIT)
def _accumulate(out, a):
    for i in range(out.size):
        out[i] += a[i]


@njit(**_JIT)
def _slide(out, previous, entering, leaving):
    # Counts are unsigned: the difference wraps around, the finished sum does not.
    for i in range(out.size):
        out[i] = previous[i] + entering[i] - leaving[i]


@njit(**_JIT)
def _slide_in_place(out, entering, leaving):
    for i in range(out.size):
        out[i] += entering[i] - leaving[i]


@njit(**_JIT)
def _add_rank_gaps(out, values, ranks, reference):
    for i in range(out.size):
        out[i] += abs(values[i] - reference[ranks[i]])


@njit(**_JIT)
def _later_offset_index(dy, dx, span):
    """Row of offset (dy, dx) among the offsets that point to a later pixel."""
    if dy == 0:
        return dx - 1
    return span + (dy - 1) * (2 * span + 1) + (dx + span)


@njit(**_JIT)
def _channel_gaps(values, reference, size, wp, h, w, extended, later, terms, row_sums, ranks, out):
    """Add one channel's ``|value - reference[rank]|`` to ``out`` (area, h * w).

    ``values`` is the padded channel, flat (hp * wp); pixel ``q`` and offset
    ``(dy, dx)`` meet pixel ``q + dy * wp + dx`` (offsets that leave the map or
    wrap onto another row give indicators that no neighbourhood reads).
    """
    span = size - 1
    size_flat = values.size
    margin = (extended.size - size_flat) // 2  # zeros on both sides
    extended[:] = 0
    _copy(extended[margin : margin + size_flat], values)
    # later[j][r]: does pixel r precede pixel r - shift_j (it comes later, so
    # only if strictly smaller)? One compare per pair of pixels.
    length = later.shape[1]
    j = 0
    for dy in range(span + 1):
        for dx in range(-span, span + 1):
            shift = dy * wp + dx
            if shift > 0:
                _less(
                    later[j],
                    extended[margin : margin + length],
                    extended[margin - shift : margin - shift + length],
                )
                j += 1
    # row_sums[y, s][q]: how many pixels q + (y - span, x - span), s <= x < s + size,
    # precede pixel q.
    for y in range(2 * span + 1):
        dy = y - span
        for x in range(2 * span + 1):
            dx = x - span
            shift = dy * wp + dx
            if shift == 0:
                terms[x, :] = 0
            elif shift > 0:  # the later pixel precedes q: read at its place
                indicators = later[_later_offset_index(dy, dx, span)]
                _copy(terms[x], indicators[shift : shift + size_flat])
            else:  # the earlier pixel precedes q unless q precedes it
                mirror = later[_later_offset_index(-dy, -dx, span)]
                _complement(terms[x], mirror[:size_flat])
        _copy(row_sums[y, 0], terms[0])
        for x in range(1, size):
            _accumulate(row_sums[y, 0], terms[x])
        for s in range(1, size):
            _slide(row_sums[y, s], row_sums[y, s - 1], terms[s + span], terms[s - 1])
    # The rank of the value at position (ky, kx) of the neighbourhood of pixel
    # p is the number of its neighbours that precede it: a box of offsets
    # starting at (-ky, -kx), read at pixel q = p + (ky, kx).
    for kx in range(size):
        s = span - kx
        for ky in range(size):
            top = span - ky
            if ky == 0:
                _copy(ranks, row_sums[top, s])
                for y in range(top + 1, top + size):
                    _accumulate(ranks, row_sums[y, s])
            else:
                _slide_in_place(ranks, row_sums[top, s], row_sums[top + size, s])
            k = ky * size + kx
            for py in range(h):
                q = (py + ky) * wp + kx
                _add_rank_gaps(
                    out[k, py * w : (py + 1) * w], values[q : q + w], ranks[q : q + w], reference
                )


@njit(**_JIT)
def _block_gaps(padded, reference, size, extended, later, terms, row_sums, ranks, out):
    """Sum of :func:`_channel_gaps` over the channels of ``padded`` (c, hp, wp)."""
    hp, wp = padded.shape[1], padded.shape[2]
    h, w = hp - size + 1, wp - size + 1
    for c in range(padded.shape[0]):
        _channel_gaps(
            padded[c].ravel(),
            reference[c],
            size,
            wp,
            h,
            w,
            extended,
            later,
            terms,
            row_sums,
            ranks,
            out,
        )


def _scratch(size, hp, wp, dtype):
    """Per-thread work arrays of :func:`_channel_gaps` (a few hundred kB)."""
    span = size - 1
    flat = hp * wp
    margin = span * wp + span  # the largest shift
    count = np.uint8 if size * size <= 255 else np.uint16  # ranks reach size**2 - 1
    n_later = span + span * (2 * span + 1)
    return (
        np.empty(flat + 2 * margin, dtype),
        np.empty((n_later, flat + margin), count),
        np.empty((2 * span + 1, flat), count),
        np.empty((2 * span + 1, size, flat), count),
        np.empty(flat, count),
    )


def rank_differences(
    padded: np.ndarray, reference: np.ndarray, patch_size: int, threads: int = 1
) -> np.ndarray:
    """Channel sums of ``|value - reference[rank]|`` at every neighbourhood position.

    The same quantity as :func:`skanomclust.nn.fca._rank_differences`, one
    image at a time.

    Parameters
    ----------
    padded : ndarray of shape (n, C, h + patch_size - 1, w + patch_size - 1)
        C-contiguous float32 or float64 padded feature maps.
    reference : ndarray of shape (n, C, patch_size**2)
        Sorted reference values, same dtype.
    patch_size : int
        Odd neighbourhood side, at most 255.
    threads : int, default=1
        Python threads running the compiled kernels (they release the GIL).

    Returns
    -------
    differences : ndarray of shape (n, patch_size**2, h * w)
        Row ``k`` (row-major position in the neighbourhood) holds, for every
        pixel's neighbourhood, the sum over channels of the absolute
        difference between the value at position ``k`` and the reference
        value of its rank.
    """
    n, channels, hp, wp = padded.shape
    size = int(patch_size)
    h, w = hp - size + 1, wp - size + 1
    blocks = min(_CHANNEL_BLOCKS, channels)
    partial = np.zeros((n, blocks, size * size, h * w), padded.dtype)
    tasks = [(i, b) for i in range(n) for b in range(blocks)]

    def run(assigned):
        scratch = _scratch(size, hp, wp, padded.dtype)
        for i, b in assigned:
            lo, hi = channels * b // blocks, channels * (b + 1) // blocks
            _block_gaps(padded[i, lo:hi], reference[i, lo:hi], size, *scratch, partial[i, b])

    workers = max(1, min(int(threads), len(tasks)))
    if workers == 1:
        run(tasks)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="skanomclust-fca") as pool:
            # list() re-raises a worker's exception here.
            list(pool.map(run, [tasks[k::workers] for k in range(workers)]))
    total = partial[:, 0]
    for b in range(1, blocks):
        total += partial[:, b]
    return total
