"""Feature Correspondence Analysis (FCA): anomaly maps from feature maps (step 3).

FCA (Ardelean & Weyrich, WACV 2024) scores every pixel by how far the local
distribution of each feature channel, in the ``patch_size`` x ``patch_size``
neighbourhood around it, is from a "normal" reference distribution of the same
channel. Distributions are compared as sorted samples (the 1-D Wasserstein
correspondence): the k-th smallest neighbourhood value is matched with the k-th
reference value, and the absolute difference is sent back to the pixel the
value came from. The per-pixel differences are averaged over channels, blurred
within the patch, weighted by a Gaussian window and accumulated over all the
patches that cover each pixel.

The reference of an image is the per-channel, per-rank (lower) median of the
sorted values of its non-overlapping tiles (:func:`fca_reference`).

Pure torch: every function works on the device and (floating) dtype of its
input (a GPU computes the maps of a whole batch of images at once). On the
CPU, the reference and the rank differences run by default in compiled
kernels (:mod:`skanomclust.nn.fca_cpu`, numba) that compute the same
quantities several times faster; ``implementation="torch"`` keeps them in
torch. Nothing here learns anything; the post-processing of the maps, the
position baseline and the channel projection before FCA live in
:mod:`skanomclust.nn.localization`.
"""

from __future__ import annotations

import functools
import warnings
from numbers import Integral

import torch
from torch.nn import functional as F

from .ops import gaussian_blur, gaussian_kernel1d, reflect_pad

__all__ = ["fca_reference", "feature_correspondence_analysis"]

# Working-set target of one chunk in feature_correspondence_analysis. On a
# 2-core CPU, 64-128 MB ran faster than 16 MB (more Python overhead per
# channel) and 256 MB (worse cache use); on a GPU the number of kernel
# launches dominates, so chunks are larger there (on an H200, MTD-sized maps
# ran 2-3x faster with 1 GB than with 256 MB, and no faster with 4 GB).
_CHUNK_BYTES = {"cpu": 64 * 2**20}
_CHUNK_BYTES_ACCELERATOR = 2**30
# Images handed to the compiled CPU kernel at once (bounds its padded copy and
# partial sums; it needs no channel chunks).
_KERNEL_IMAGES = 16
_IMPLEMENTATIONS = ("auto", "torch", "numba")


@functools.cache
def _cpu_kernel():
    """The compiled CPU kernel module, or None (with one warning) where it cannot load.

    Besides a missing numba, numba refuses ``cache=True`` functions when it
    finds no writable cache folder (neither beside the package nor in the
    user's cache, ``NUMBA_CACHE_DIR``): FCA then runs in torch, slower. With
    numba's compilation switched off (``NUMBA_DISABLE_JIT``) the kernels
    would run as Python loops, for hours, and their lookup intrinsic cannot
    run at all: torch is used then too.
    """
    try:
        from numba.core import config as numba_config

        if numba_config.DISABLE_JIT:
            raise RuntimeError("numba's compilation is disabled (NUMBA_DISABLE_JIT)")
        from . import fca_cpu
    except (ImportError, RuntimeError, OSError) as error:
        warnings.warn(
            f"FCA's compiled CPU kernel is unavailable ({type(error).__name__}: {error}); "
            "FCA runs in torch, several times slower on the CPU. Install numba, set "
            "NUMBA_CACHE_DIR to a writable folder, or unset NUMBA_DISABLE_JIT.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return fca_cpu


def _use_cpu_kernel(implementation: str, features: torch.Tensor, dtypes=None) -> bool:
    """Whether the compiled kernel computes on ``features`` (ValueError if it must but cannot).

    ``dtypes``: the feature dtypes the kernel takes as they are (None: any,
    the caller converts).
    """
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}"
        )
    if implementation == "torch":
        return False
    if features.device.type != "cpu":
        reason = f"the features are on {features.device}"
    elif features.requires_grad and torch.is_grad_enabled():
        reason = "the kernel does not propagate gradients"
    elif dtypes is not None and features.dtype not in dtypes:
        taken = " or ".join(str(dtype).removeprefix("torch.") for dtype in dtypes)
        reason = f"the kernel takes {taken}, not {features.dtype}"
    elif _cpu_kernel() is None:
        reason = "the compiled kernel cannot be loaded (numba missing or disabled)"
    else:
        return True
    if implementation == "numba":
        raise ValueError(f'implementation="numba" cannot be used: {reason}')
    return False


def _check_maps(features: torch.Tensor, name: str = "features") -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 4:
        raise ValueError(f"{name} must have shape (n, C, h, w), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {features.dtype}")
    if features.shape[1] == 0 or features.shape[2] == 0 or features.shape[3] == 0:
        raise ValueError(
            f"{name} needs at least one channel and pixel, got {tuple(features.shape)}"
        )


def _check_patch_size(patch_size) -> int:
    if not isinstance(patch_size, Integral) or patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be an odd positive integer, got {patch_size!r}")
    return int(patch_size)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    # Channel sums of half-precision differences lose too much; compute in float32 at least.
    return torch.promote_types(dtype, torch.float32)


def fca_reference(
    features: torch.Tensor, patch_size: int = 7, *, implementation: str = "auto"
) -> torch.Tensor:
    """Per-image "normal" reference: the per-rank median of sorted tiles.

    Each image is cut into non-overlapping ``patch_size`` x ``patch_size``
    tiles starting at its top-left corner; rows and columns that do not fill a
    whole tile (the bottom and right remainders) are left out, as in the
    authors' code (``F.unfold`` with ``stride=patch_size``). The values of each
    tile are sorted per channel and, for every channel and rank, the median
    over the tiles is taken; with an even number of tiles it is the lower of
    the two middle values (:func:`torch.median`).

    A map side shorter than ``patch_size`` cannot hold a tile: it is first
    reflect-padded to exactly ``patch_size`` (about equally on both sides,
    reflections repeated as in :func:`gaussian_blur`), which makes the single
    tile along that side the same neighbourhood that
    :func:`feature_correspondence_analysis` uses for the central pixel. A
    1 x 1 map thus gives its value at every rank.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, h, w)
        Floating-point feature maps.
    patch_size : int, default=7
        Odd tile side.
    implementation : {"auto", "torch", "numba"}, default="auto"
        Where the sorts run: ``"numba"`` is the compiled CPU kernel
        (:func:`skanomclust.nn.fca_cpu.tile_references`: float32 or float64
        CPU tensors, needs numba), ``"torch"`` torch's sort and median, and
        ``"auto"`` the kernel where it applies, else torch. Both give the same
        values.

    Returns
    -------
    reference : torch.Tensor of shape (n, C, patch_size**2)
        Sorted along the last dimension; same dtype and device as ``features``.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import fca_reference
    >>> x = torch.arange(8.0).reshape(1, 1, 2, 4)  # eight 1x1 tiles: lower median
    >>> fca_reference(x, patch_size=1)
    tensor([[[3.]]])
    >>> fca_reference(torch.arange(16.0).reshape(1, 1, 4, 4) % 3, patch_size=3)
    tensor([[[0., 0., 0., 1., 1., 1., 2., 2., 2.]]])
    """
    _check_maps(features)
    size = _check_patch_size(patch_size)
    n, channels, h, w = features.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:  # a side shorter than a tile (no copy otherwise)
        features = reflect_pad(
            features, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2
        )
    if _use_cpu_kernel(implementation, features, dtypes=(torch.float32, torch.float64)):
        return torch.from_numpy(
            _cpu_kernel().tile_references(
                features.contiguous().numpy(), size, threads=torch.get_num_threads()
            )
        )
    reference = features.new_empty((n, channels, size * size))
    for i in range(n):
        image = features[i]
        rows, cols = image.shape[-2] // size, image.shape[-1] // size
        tiles = image[:, : rows * size, : cols * size].reshape(channels, rows, size, cols, size)
        tiles = tiles.permute(0, 1, 3, 2, 4).reshape(channels, rows * cols, size * size)
        reference[i] = tiles.sort(dim=-1).values.median(dim=1).values
    return reference


def _patch_operator(patch_size, sigma_p, blur_kernel, blur_sigma, dtype, device):
    """The linear map from a patch of differences to its windowed contribution.

    ``operator @ d`` blurs the flattened ``patch_size`` x ``patch_size`` patch
    ``d`` (torchvision-like Gaussian with reflect padding inside the patch),
    then multiplies it by the normalised 2-D Gaussian window. Built in float64
    on the CPU once per setting, applied to all pixels with one matmul.
    """
    operator = _float64_patch_operator(patch_size, float(sigma_p), blur_kernel, blur_sigma)
    return operator.to(device=device, dtype=dtype, copy=True)


@functools.lru_cache(maxsize=8)
def _float64_patch_operator(patch_size, sigma_p, blur_kernel, blur_sigma):
    # Cached: blurring the 49 unit patches runs float64 grouped convolutions
    # on torch's slow path, 70-150 ms on this 2-core CPU: more than the maps
    # of a batch of 16 images, had it been redone for every batch.
    area = patch_size * patch_size
    basis = torch.eye(area, dtype=torch.float64).reshape(area, patch_size, patch_size)
    if blur_sigma:
        basis = gaussian_blur(basis, blur_kernel, blur_sigma)
    blur = basis.reshape(area, area).T  # column j: the blurred j-th unit patch
    window = gaussian_kernel1d(patch_size, sigma_p, torch.float64, "cpu")
    window = torch.outer(window, window).reshape(area, 1)  # sums to 1
    return window * blur


def _box_sums(terms: list, patch_size: int, like: torch.Tensor) -> list:
    """Sums of ``patch_size`` consecutive terms, for every start, by running sums.

    ``terms`` holds, per offset, ``(counts, complemented)``: the indicator is
    ``counts``, or ``1 - counts`` when ``complemented`` (an earlier offset,
    read from the indicator of its mirror), or zero when ``counts`` is None
    (the pixel itself). Counts wrap around in ``uint8`` while a sum is being
    updated, but every finished sum is a count of at most ``patch_size``, so
    the wrap-around cancels out.
    """

    def add(running, term, sign, out_of_place=False):
        counts, complemented = term
        if counts is None:
            return running
        if complemented == (sign > 0):  # adding 1 - counts, or taking counts away
            return running - counts if out_of_place else running.sub_(counts)
        return running + counts if out_of_place else running.add_(counts)

    # The constant part of the complemented terms, added once per box.
    ones = [int(counts is not None and complemented) for counts, complemented in terms]
    running = torch.zeros_like(like)
    for dx in range(patch_size):
        add(running, terms[dx], +1)
    if sum(ones[:patch_size]):
        running.add_(sum(ones[:patch_size]))
    sums = [running]
    for start in range(1, patch_size):
        enter, leave = start + patch_size - 1, start - 1
        # The entering offset is never the pixel itself (that one is in every box).
        running = add(running, terms[enter], +1, out_of_place=True)
        add(running, terms[leave], -1)
        if ones[enter] != ones[leave]:
            running.add_(ones[enter] - ones[leave])
        sums.append(running)
    return sums


def _precedence_counts(padded: torch.Tensor, patch_size: int) -> list:
    """Box sums of "the pixel at this offset precedes me" indicators.

    Returns ``sums[dy][ax]`` of shape ``(c, hp * wp)`` (rows of the padded
    map one after the other): at each pixel, the number of offsets ``(dy -
    span, dx - span)`` with ``ax <= dx < ax + patch_size`` whose pixel
    precedes it (smaller, or equal and earlier in row-major order).

    The map is read as one flat row per channel, so every offset is one
    contiguous shifted slice (pixels that wrap onto the next row, or fall
    outside the map, give indicators that no neighbourhood reads). Whether
    the pixel at ``q - d`` precedes ``q`` is the complement of whether ``q``
    precedes ``q - d``, that is of the indicator of the mirrored offset ``d``
    read ``d`` pixels earlier: only the later half of the offsets is
    compared, and each of them serves its mirror row too.
    """
    channels, hp, wp = padded.shape
    span = patch_size - 1
    size = hp * wp
    narrow = patch_size * (patch_size + 1) <= 255  # every box sum stays below 256
    margin = span * wp + span  # the largest shift
    extended = F.pad(padded.reshape(channels, size), (margin, margin))
    like = padded.new_empty((channels, size), dtype=torch.uint8 if narrow else torch.int32)
    sums = [None] * (2 * span + 1)
    for dy in range(span, 2 * span + 1):
        later, earlier = [], []  # this row's terms; its mirror row's, by decreasing dx
        for dx in range(2 * span + 1):
            shift = (dy - span) * wp + (dx - span)
            if shift <= 0:  # row ``span`` only: the pixel itself and earlier offsets
                later.append((None, False))
                continue
            # entry j: is pixel j smaller than pixel j - shift, which comes first?
            precedes = (
                extended[:, margin : margin + size + shift]
                < extended[:, margin - shift : margin + size]
            )
            counts = precedes.view(torch.uint8) if narrow else precedes.to(torch.int32)
            later.append((counts[:, shift : shift + size], False))
            earlier.append((counts[:, :size], True))
        if dy == span:
            terms = [earlier[span - 1 - dx] for dx in range(span)] + later[span:]
            sums[dy] = _box_sums(terms, patch_size, like)
        else:
            sums[dy] = _box_sums(later, patch_size, like)
            sums[2 * span - dy] = _box_sums(earlier[::-1], patch_size, like)
    return sums


def _rank_differences(
    padded: torch.Tensor, reference: torch.Tensor, patch_size: int, groups: int = 1
) -> torch.Tensor:
    """Channel sums of ``|value - reference[rank]|`` at every neighbourhood position.

    Parameters
    ----------
    padded : torch.Tensor of shape (c, h + patch_size - 1, w + patch_size - 1)
        Padded channels: ``groups`` images' channels one after the other.
    reference : torch.Tensor of shape (c, patch_size**2)
        Sorted reference values of the same channels.
    groups : int, default=1
        Number of images in ``padded`` (each has ``c // groups`` channels).

    Returns
    -------
    differences : torch.Tensor of shape (groups, patch_size**2, h * w)
        Row ``k`` (row-major position in the neighbourhood) holds, for the
        neighbourhood of every pixel, the sum over the image's channels of the
        absolute difference between the value at position ``k`` and the
        reference value of the same rank.

    Notes
    -----
    Sorting every neighbourhood costs one sort of ``patch_size**2`` values per
    pixel and channel. Instead, the rank of the value at position ``k`` is
    counted: it is the number of neighbourhood values that precede it, with
    ties broken by position (row-major), which is exactly the order of a
    stable sort. Whether the value at ``q + d`` precedes the value at ``q``
    depends only on the pair, so it is computed once per offset ``d`` for the
    whole map and shared by every neighbourhood that holds both pixels. The
    rank of position ``k`` is then the sum of these indicators over a
    ``patch_size`` x ``patch_size`` box of offsets, done with running sums
    (first along x, then along y) on small integer maps; only half of the
    offsets need a comparison (:func:`_precedence_counts`). This is several
    times faster than sorting on the CPU and gives the same ranks.
    """
    channels, hp, wp = padded.shape
    span = patch_size - 1  # largest |offset| between two pixels of a neighbourhood
    h, w = hp - span, wp - span
    window_sums = _precedence_counts(padded, patch_size)  # [offset row dy][box start ax]
    differences = padded.new_empty((groups, patch_size, patch_size, h * w))
    # reference[c, rank] read as flat[c * area + rank]: int32 indices built in
    # one add from the small counts (gather would need an int64 copy of them).
    area = patch_size * patch_size
    flat_reference = reference.reshape(-1)
    channel_offsets = torch.arange(
        0, channels * area, area, dtype=torch.int32, device=padded.device
    ).view(channels, 1, 1)
    for ax in range(patch_size):
        column = [window_sums[dy][ax] for dy in range(patch_size)]
        running = column[0] + column[1] if patch_size > 1 else column[0].clone()
        for counts in column[2:]:
            running += counts
        for ay in range(patch_size):
            if ay:
                running = running + window_sums[ay + span][ax]
                running -= window_sums[ay - 1][ax]
            # The box of offsets starting at (ay, ax) is the neighbourhood seen
            # from position (ky, kx); that position holds pixel p + (ky, kx).
            ky, kx = span - ay, span - ax
            index = running.view(channels, hp, wp)[:, ky : ky + h, kx : kx + w]
            index = index + channel_offsets
            matched = flat_reference.index_select(0, index.view(-1)).view(channels, h, w)
            gaps = (padded[:, ky : ky + h, kx : kx + w] - matched).abs_()
            differences[:, ky, kx] = gaps.view(groups, channels // groups, h * w).sum(dim=1)
    return differences.view(groups, patch_size * patch_size, h * w)


def _auto_channel_chunk(h: int, w: int, patch_size: int, itemsize: int, device) -> int:
    """Channels per chunk so that one chunk's working set stays near _CHUNK_BYTES."""
    span = patch_size - 1
    count_bytes = 1 if patch_size * (patch_size + 1) <= 255 else 4
    padded_area = (h + span) * (w + span)
    margin = span * (w + span) + span  # see _precedence_counts
    per_channel = (
        # box sums of every offset row, indicators of one pair of mirrored rows
        count_bytes
        * (
            padded_area * ((2 * span + 1) * patch_size + 1)
            + (2 * span + 1) * (padded_area + margin)
        )
        + (2 * padded_area + 2 * margin) * itemsize  # padded, zero-extended
        + h * w * (8 + 3 * itemsize)  # input, ranks as int32, matched values, differences
    )
    # Measured peaks (ru_maxrss) run about 25% above this count: temporaries.
    budget = _CHUNK_BYTES.get(torch.device(device).type, _CHUNK_BYTES_ACCELERATOR)
    return max(1, int(budget / (1.3 * per_channel)))


def feature_correspondence_analysis(
    features: torch.Tensor,
    *,
    patch_size: int = 7,
    sigma_p: float = 3.0,
    patch_blur_kernel: int = 5,
    patch_blur_sigma: float | None = 1.0,
    reference: torch.Tensor | None = None,
    channel_chunk: int | None = None,
    implementation: str = "auto",
) -> torch.Tensor:
    """Raw FCA anomaly maps (before :func:`postprocess_anomaly_maps`).

    For every image independently:

    1. the reference is ``reference`` or :func:`fca_reference` of the image;
    2. the map is reflect-padded by ``patch_size // 2``; for every pixel, the
       values of each channel in its ``patch_size`` x ``patch_size``
       neighbourhood are ranked (ties broken by row-major position, as a
       stable sort), and each value is compared with the reference value of
       its rank: ``|value - reference[rank]|``, kept at the value's position;
    3. these differences are averaged over channels, giving one
       ``patch_size`` x ``patch_size`` difference patch per pixel;
    4. each patch is blurred (Gaussian ``patch_blur_kernel``,
       ``patch_blur_sigma``, reflect padding inside the patch, as torchvision),
       multiplied by the normalised 2-D Gaussian window of std ``sigma_p``, and
       added onto the padded map at its place (fold); the result is cropped
       back to ``h`` x ``w``.

    Steps 3-4 are linear, so they are applied as one precomputed
    ``patch_size**2`` x ``patch_size**2`` matrix followed by ``F.fold``.

    Maps with a side shorter than ``patch_size // 2 + 1`` cannot be
    reflect-padded by torch: the reflection is then repeated, and a side of
    length 1 replicated (see :func:`gaussian_blur`), so any map size works; a
    1 x 1 map scores 0.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, h, w)
        Floating-point feature maps (for the paper: VAE residuals). Computed
        in float32 at least; the result has the input's dtype and device.
    patch_size : int, default=7
        Odd neighbourhood (and tile) side.
    sigma_p : float, default=3.0
        Standard deviation of the Gaussian window over the patch.
    patch_blur_kernel : int, default=5
        Kernel size of the blur of each difference patch.
    patch_blur_sigma : float or None, default=1.0
        Its standard deviation; None or 0 skips that blur.
    reference : torch.Tensor of shape (C, patch_size**2) or (n, C, patch_size**2), default=None
        Sorted (ascending) reference values, shared by all images or one per
        image; None computes :func:`fca_reference` per image.
    channel_chunk : int, default=None
        Channels processed at once (their difference sums are accumulated);
        when it is at least ``2 * C``, ``channel_chunk // C`` whole images are
        processed together (cheaper for small maps). None picks it to keep the
        working set near 64 MB on the CPU, 1 GB on other devices. Does
        not change the result beyond float rounding. Used by the torch
        implementation only.
    implementation : {"auto", "torch", "numba"}, default="auto"
        Where step 2 (ranks and differences) runs: ``"numba"`` is the compiled
        CPU kernel of :mod:`skanomclust.nn.fca_cpu` (CPU tensors only, needs
        numba), ``"torch"`` the tensor operations that also run on a GPU, and
        ``"auto"`` the kernel for CPU tensors when numba can be imported, else
        torch. Both give the same ranks; their channel sums differ by float
        rounding only.

    Returns
    -------
    maps : torch.Tensor of shape (n, h, w)
        Higher is more anomalous.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import feature_correspondence_analysis
    >>> features = torch.rand(2, 8, 20, 20, generator=torch.Generator().manual_seed(0))
    >>> features[0, :, 8:11, 8:11] += 3.0  # a defect in the first image
    >>> maps = feature_correspondence_analysis(features)
    >>> maps.shape
    torch.Size([2, 20, 20])
    >>> bool(maps[0, 9, 9] > 3 * maps[1].max())
    True
    """
    _check_maps(features)
    size = _check_patch_size(patch_size)
    if channel_chunk is not None and (
        not isinstance(channel_chunk, Integral) or channel_chunk < 1
    ):
        raise ValueError(f"channel_chunk must be a positive integer, got {channel_chunk!r}")
    n, channels, h, w = features.shape
    area, half = size * size, size // 2
    dtype = _working_dtype(features.dtype)
    if reference is not None:
        if reference.ndim == 2:
            reference = reference.unsqueeze(0).expand(n, -1, -1)
        if reference.shape != (n, channels, area):
            raise ValueError(
                f"reference must have shape ({channels}, {area}) or ({n}, {channels}, {area}), "
                f"got {tuple(reference.shape)}"
            )
    kernel = _use_cpu_kernel(implementation, features)
    operator = _patch_operator(
        size, sigma_p, patch_blur_kernel, patch_blur_sigma, dtype, features.device
    )
    chunk = channel_chunk or _auto_channel_chunk(h, w, size, dtype.itemsize, features.device)
    # Either several whole images per step, or one image in chunks of channels.
    images_per_step = _KERNEL_IMAGES if kernel else max(1, chunk // channels)
    chunk = min(chunk, channels)
    maps = torch.empty((n, h, w), dtype=dtype, device=features.device)
    for first in range(0, n, images_per_step):
        last = min(first + images_per_step, n)
        images = features[first:last].to(dtype)
        if reference is None:
            references = fca_reference(images, size, implementation="numba" if kernel else "torch")
        else:
            references = reference[first:last].to(device=images.device, dtype=dtype)
        padded = reflect_pad(images, half, half, half, half)
        if kernel:
            totals = torch.from_numpy(
                _cpu_kernel().rank_differences(
                    padded.contiguous().numpy(),
                    references.contiguous().numpy(),
                    size,
                    threads=torch.get_num_threads(),
                )
            )
        else:
            totals = torch.zeros((last - first, area, h * w), dtype=dtype, device=features.device)
            for start in range(0, channels, chunk):
                stop = start + chunk
                totals += _rank_differences(
                    padded[:, start:stop].flatten(0, 1),
                    references[:, start:stop].flatten(0, 1),
                    size,
                    groups=last - first,
                )
        contributions = operator @ (totals / channels)
        folded = F.fold(contributions, (h + 2 * half, w + 2 * half), size)
        maps[first:last] = folded[:, 0, half : half + h, half : half + w]
    return maps.to(features.dtype)
