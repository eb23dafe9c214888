"""FCA's rank differences and reference on the CPU, compiled with numba (step 3, CPU kernels).

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

The lookup of each value's reference, over half of the kernel's time as a
scalar loop, runs sixteen pixels at a time through
:func:`skanomclust.nn.fca_lookup.add_rank_gaps16` (vector permutes on
processors with AVX-512), with the same result.

The reference (:func:`tile_references`, the per-rank median of sorted tiles)
sorts short columns of values; a sorting network does it for all channels at
once, with the same result as torch's sorts.

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

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .fca_lookup import LANES, TABLE_SIZE, add_rank_gaps16

__all__ = ["rank_differences", "sorting_network", "tile_references"]

# An image's channels are split into this many tasks, so that even one image
# keeps two cores busy; fixed (not derived from the thread count) so that the
# order of the channel sums, hence the result, never changes.
_CHANNEL_BLOCKS = 2

_JIT = {"cache": True, "nogil": True, "boundscheck": False}

# XOR masks of 0/1 indicators: as they are, complemented.
_KEEP, _FLIP = np.uint8(0), np.uint8(1)

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
def _copy_flipped(out, a, flip):
    # ``flip`` (0 or 1) turns 0/1 indicators into their complements.
    for i in range(out.size):
        out[i] = a[i] ^ flip


@njit(**_JIT)
def _accumulate_flipped(out, a, flip):
    for i in range(out.size):
        out[i] += a[i] ^ flip


@njit(**_JIT)
def _accumulate(out, a):
    for i in range(out.size):
        out[i] += a[i]


@njit(**_JIT)
def _slide_flipped(out, previous, entering, flip_in, leaving, flip_out):
    # Counts are unsigned: the difference wraps around, the finished sum does not.
    for i in range(out.size):
        out[i] = previous[i] + (entering[i] ^ flip_in) - (leaving[i] ^ flip_out)


@njit(**_JIT)
def _slide_in_place(out, entering, leaving):
    for i in range(out.size):
        out[i] += entering[i] - leaving[i]


@njit(**_JIT)
def _add_rank_gaps(out, values, ranks, reference, table, start, stride, h, w):
    # The h x w window of the padded rows from ``start`` (a loop over rows
    # inside one call: 15-20% faster than one call per row of 32 pixels).
    # Sixteen pixels at a time through the table lookup of fca_lookup when
    # the reference fits its table (``table``: the reference, padded), the
    # rest of a row one by one; the same operations either way.
    vector_width = w - w % LANES if reference.size <= TABLE_SIZE else 0
    for py in range(h):
        q = start + py * stride
        o = py * w
        for x in range(0, vector_width, LANES):
            add_rank_gaps16(out, o + x, values, q + x, ranks, table)
        for x in range(vector_width, w):
            out[o + x] += abs(values[q + x] - reference[ranks[q + x]])


@njit(**_JIT)
def _later_offset_index(dy, dx, span):
    """Row of offset (dy, dx) among the offsets that point to a later pixel."""
    if dy == 0:
        return dx - 1
    return span + (dy - 1) * (2 * span + 1) + (dx + span)


@njit(**_JIT)
def _offset_term(later, zeros, dy, dx, span, wp, size_flat):
    """Does pixel q + (dy, dx) precede pixel q, for every q: indicators and a flip.

    A view, no copy: the indicator row of the offset read at the later
    pixel's place, or (for an offset to an earlier pixel) the mirrored row to
    be flipped (``1 - indicator``: the earlier pixel precedes q unless q
    precedes it); ``zeros`` for the pixel itself.
    """
    shift = dy * wp + dx
    if shift > 0:
        return later[_later_offset_index(dy, dx, span)][shift : shift + size_flat], _KEEP
    if shift < 0:
        return later[_later_offset_index(-dy, -dx, span)][:size_flat], _FLIP
    return zeros, _KEEP


@njit(**_JIT)
def _channel_gaps(
    values, reference, size, wp, h, w, extended, later, zeros, row_sums, ranks, table, out
):
    """Add one channel's ``|value - reference[rank]|`` to ``out`` (area, h * w).

    ``values`` is the padded channel, flat (hp * wp); pixel ``q`` and offset
    ``(dy, dx)`` meet pixel ``q + dy * wp + dx`` (offsets that leave the map or
    wrap onto another row give indicators that no neighbourhood reads).
    """
    span = size - 1
    size_flat = values.size
    if reference.size <= table.size:
        table[: reference.size] = reference
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
        first, flip = _offset_term(later, zeros, dy, -span, span, wp, size_flat)
        _copy_flipped(row_sums[y, 0], first, flip)
        for x in range(1, size):
            term, flip = _offset_term(later, zeros, dy, x - span, span, wp, size_flat)
            _accumulate_flipped(row_sums[y, 0], term, flip)
        for s in range(1, size):
            entering, flip_in = _offset_term(later, zeros, dy, s, span, wp, size_flat)
            leaving, flip_out = _offset_term(later, zeros, dy, s - 1 - span, span, wp, size_flat)
            _slide_flipped(
                row_sums[y, s], row_sums[y, s - 1], entering, flip_in, leaving, flip_out
            )
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
            _add_rank_gaps(
                out[ky * size + kx], values, ranks, reference, table, ky * wp + kx, wp, h, w
            )


@njit(**_JIT)
def _block_gaps(padded, reference, size, extended, later, zeros, row_sums, ranks, table, out):
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
            zeros,
            row_sums,
            ranks,
            table,
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
        np.zeros(flat, count),  # the indicators of a pixel against itself
        np.empty((2 * span + 1, size, flat), count),
        np.empty(flat, count),
        np.zeros(TABLE_SIZE, dtype),
    )


def _run_tasks(run, tasks, threads):
    """Call ``run`` on ``threads`` interleaved shares of ``tasks`` (one share each)."""
    workers = max(1, min(int(threads), len(tasks)))
    if workers == 1:
        run(tasks)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="skanomclust-fca") as pool:
            # list() re-raises a worker's exception here.
            list(pool.map(run, [tasks[k::workers] for k in range(workers)]))


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

    _run_tasks(run, tasks, threads)
    total = partial[:, 0]
    for b in range(1, blocks):
        total += partial[:, b]
    return total


# The reference (fca_reference): per channel, the values of every tile sorted,
# then at every rank the lower median over the tiles. Both are sorts of short
# columns, done for all channels at once by a sorting network: a fixed list of
# compare-exchanges, each a min and a max over a row of channels, which the
# compiler vectorises (torch sorts each short column on its own).


@functools.cache
def sorting_network(length: int) -> np.ndarray:
    """Compare-exchange pairs ``(i, j)``, ``i < j``, that sort any ``length`` values.

    Batcher's odd-even merge sort on the next power of two, keeping only the
    pairs within ``length``: the pairs left out would compare a real value
    with one of the (largest, infinite) padding values placed after them,
    which never moves. Applying the pairs in order (smaller value to ``i``)
    sorts ascending.
    """
    size = 1
    while size < length:
        size *= 2
    pairs = []
    merged = 1  # sorted runs of this length are merged into runs twice as long
    while merged < size:
        step = merged
        while step >= 1:
            for first in range(step % merged, size - step, 2 * step):
                for i in range(min(step, size - first - step)):
                    low, high = first + i, first + i + step
                    if low // (2 * merged) == high // (2 * merged) and high < length:
                        pairs.append((low, high))
            step //= 2
        merged *= 2
    network = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    network.setflags(write=False)  # cached: shared by every caller
    return network


@njit(**_JIT)
def _compare_exchange(low, high):
    for i in range(low.size):
        a, b = low[i], high[i]
        low[i] = min(a, b)
        high[i] = max(a, b)


@njit(**_JIT)
def _sort_rows(rows, pairs):
    """Sort every column of ``rows`` (m, C) in place with the network ``pairs``."""
    for p in range(pairs.shape[0]):
        _compare_exchange(rows[pairs[p, 0]], rows[pairs[p, 1]])


@njit(**_JIT)
def _image_reference(image, size, tile_pairs, median_pairs, tiles, out):
    """The reference of one image (C, h, w) into ``out`` (C, size**2).

    ``tiles`` (n_tiles, size**2, C) holds every tile with its values as rows
    of channels; sorted along the rows, then every rank's column of tiles
    sorted to read its lower median.
    """
    channels = image.shape[0]
    columns = image.shape[2] // size
    for t in range(tiles.shape[0]):
        top, left = (t // columns) * size, (t % columns) * size
        for c in range(channels):
            for y in range(size):
                for x in range(size):
                    tiles[t, y * size + x, c] = image[c, top + y, left + x]
        _sort_rows(tiles[t], tile_pairs)
    middle = (tiles.shape[0] - 1) // 2  # torch.median's lower median
    ranks = np.empty((tiles.shape[0], channels), image.dtype)
    for k in range(size * size):
        for t in range(tiles.shape[0]):
            ranks[t] = tiles[t, k]
        _sort_rows(ranks, median_pairs)
        out[:, k] = ranks[middle]


def tile_references(images: np.ndarray, patch_size: int, threads: int = 1) -> np.ndarray:
    """Per image and channel, the per-rank lower median of the sorted tiles.

    The same values as :func:`skanomclust.nn.fca.fca_reference` (which pads
    maps smaller than a tile before calling this).

    Parameters
    ----------
    images : ndarray of shape (n, C, h, w)
        C-contiguous, finite float32 or float64 maps (a sorting network
        has no place for NaN), ``h`` and ``w`` at least ``patch_size``; the
        tiles start at the top-left corner and the bottom and right
        remainders are left out.
    patch_size : int
        Tile side.
    threads : int, default=1
        Python threads running the compiled code (one image per task).

    Returns
    -------
    reference : ndarray of shape (n, C, patch_size**2)
        Sorted along the last dimension.
    """
    n, channels, h, w = images.shape
    size = int(patch_size)
    if min(h, w) < size:
        raise ValueError(f"maps of {h} x {w} hold no {size} x {size} tile; pad them first")
    n_tiles = (h // size) * (w // size)
    tile_pairs, median_pairs = sorting_network(size * size), sorting_network(n_tiles)
    reference = np.empty((n, channels, size * size), images.dtype)

    def run(assigned):
        tiles = np.empty((n_tiles, size * size, channels), images.dtype)
        for i in assigned:
            _image_reference(images[i], size, tile_pairs, median_pairs, tiles, reference[i])

    _run_tasks(run, list(range(n)), threads)
    return reference
