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
input. Nothing here learns anything.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from torch.nn import functional as F

__all__ = [
    "fca_reference",
    "feature_correspondence_analysis",
    "gaussian_blur",
    "position_baseline",
    "postprocess_anomaly_maps",
    "principal_channels",
    "project_channels",
]

# Working-set target of one chunk in feature_correspondence_analysis. On a
# 2-core CPU, 64-128 MB ran faster than 16 MB (more Python overhead per
# channel) and 256 MB (worse cache use); on a GPU the number of kernel
# launches dominates, so chunks are larger there.
_CHUNK_BYTES = {"cpu": 64 * 2**20}
_CHUNK_BYTES_ACCELERATOR = 256 * 2**20
# Rows per float64 chunk in principal_channels.
_COVARIANCE_CHUNK = 8192


# --------------------------------------------------------------------------- padding and blur


def _reflect_indices(size: int, before: int, after: int, device) -> torch.Tensor:
    """Source index of every position of a reflect-padded axis of length ``size``.

    Reflection without repeating the edge sample (torch's ``"reflect"``), repeated
    as often as needed, so any amount of padding is defined (as numpy's
    ``np.pad(mode="reflect")``). A length-1 axis has nothing to reflect and is
    replicated.
    """
    positions = torch.arange(-before, size + after, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    positions = torch.remainder(positions, period)
    return torch.where(positions >= size, period - positions, positions)


def _reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last two dimensions of ``x`` by any amount (see _reflect_indices)."""
    h, w = x.shape[-2:]
    if x.ndim == 4 and max(top, bottom) < h and max(left, right) < w:
        # single reflection: torch's own (much faster) padding gives the same values
        return F.pad(x, (left, right, top, bottom), mode="reflect")
    if top or bottom:
        x = x.index_select(-2, _reflect_indices(x.shape[-2], top, bottom, x.device))
    if left or right:
        x = x.index_select(-1, _reflect_indices(x.shape[-1], left, right, x.device))
    return x


def _pair(value, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return value[0], value[0]
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a pair, got {value!r}")
        return tuple(value)
    return value, value


def _gaussian_kernel1d(kernel_size: int, sigma: float, dtype, device) -> torch.Tensor:
    """Normalised 1-D Gaussian, sampled as torchvision samples it."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(x: torch.Tensor, kernel_size, sigma) -> torch.Tensor:
    """Gaussian blur of the last two dimensions, as torchvision's ``gaussian_blur``.

    Same kernel (normalised, sampled at integer offsets) and same borders
    (reflect padding by ``kernel_size // 2``), applied as two 1-D convolutions,
    which is mathematically the same as torchvision's 2-D convolution (results
    agree to float rounding).

    Unlike torchvision this never fails on maps smaller than the kernel: where
    reflect padding would need more samples than the map has, the reflection is
    repeated (as ``numpy.pad(mode="reflect")`` does); a side of length 1 is
    replicated. Where torchvision works, the padding is identical.

    Parameters
    ----------
    x : torch.Tensor of shape (..., h, w)
        Floating-point maps; leading dimensions are batch dimensions.
    kernel_size : int or (int, int)
        Odd kernel size, or ``(kx, ky)`` (torchvision's order: width first).
    sigma : float or (float, float)
        Positive standard deviation, or ``(sx, sy)``.

    Returns
    -------
    blurred : torch.Tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import gaussian_blur
    >>> x = torch.zeros(5, 5)
    >>> x[2, 2] = 1.0
    >>> blurred = gaussian_blur(x, 3, 1.0)
    >>> round(blurred.sum().item(), 6)
    1.0
    """
    kx, ky = _pair(kernel_size, "kernel_size")
    sx, sy = _pair(sigma, "sigma")
    for k in (kx, ky):
        if not isinstance(k, Integral) or k <= 0 or k % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
    for s in (sx, sy):
        if not isinstance(s, Real) or s <= 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
    if not x.is_floating_point():
        raise TypeError(f"gaussian_blur needs a floating-point tensor, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (..., h, w), got {tuple(x.shape)}")
    shape = x.shape
    h, w = shape[-2:]
    if x.numel() == 0:
        return x.clone()
    # All maps as the channels of one image, blurred by a depthwise (grouped)
    # convolution: several times faster on CPU than a batch of 1-channel maps.
    maps = x.reshape(1, -1, h, w)
    groups = maps.shape[1]
    flat = _reflect_pad(maps, ky // 2, ky // 2, kx // 2, kx // 2)
    kernel_y = _gaussian_kernel1d(ky, float(sy), x.dtype, x.device)
    kernel_x = _gaussian_kernel1d(kx, float(sx), x.dtype, x.device)
    flat = F.conv2d(flat, kernel_y.view(1, 1, ky, 1).expand(groups, 1, ky, 1), groups=groups)
    flat = F.conv2d(flat, kernel_x.view(1, 1, 1, kx).expand(groups, 1, 1, kx), groups=groups)
    return flat.reshape(shape)


# --------------------------------------------------------------------------- FCA


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


def fca_reference(features: torch.Tensor, patch_size: int = 7) -> torch.Tensor:
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
    reference = features.new_empty((n, channels, size * size))
    for i in range(n):
        image = _reflect_pad(
            features[i], pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2
        )
        rows, cols = image.shape[-2] // size, image.shape[-1] // size
        tiles = image[:, : rows * size, : cols * size].reshape(channels, rows, size, cols, size)
        tiles = tiles.permute(0, 1, 3, 2, 4).reshape(channels, rows * cols, size * size)
        reference[i] = tiles.sort(dim=-1).values.median(dim=1).values
    return reference


def _patch_operator(patch_size, sigma_p, blur_kernel, blur_sigma, dtype, device):
    """The linear map from a patch of differences to its windowed contribution.

    ``operator @ d`` blurs the flattened ``patch_size`` x ``patch_size`` patch
    ``d`` (torchvision-like Gaussian with reflect padding inside the patch),
    then multiplies it by the normalised 2-D Gaussian window. Built once in
    float64 on the CPU, applied to all pixels with one matmul.
    """
    area = patch_size * patch_size
    basis = torch.eye(area, dtype=torch.float64).reshape(area, patch_size, patch_size)
    if blur_sigma:
        basis = gaussian_blur(basis, blur_kernel, blur_sigma)
    blur = basis.reshape(area, area).T  # column j: the blurred j-th unit patch
    window = _gaussian_kernel1d(patch_size, float(sigma_p), torch.float64, "cpu")
    window = torch.outer(window, window).reshape(area, 1)  # sums to 1
    return (window * blur).to(device=device, dtype=dtype)


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
    (first along x, then along y) on small integer maps. This is several times
    faster than sorting on the CPU and gives the same ranks.
    """
    channels, hp, wp = padded.shape
    span = patch_size - 1  # largest |offset| between two pixels of a neighbourhood
    h, w = hp - span, wp - span
    offsets = 2 * span + 1
    narrow = patch_size * (patch_size + 1) <= 255  # running sums stay below 256

    def as_counts(mask):
        counts = mask.view(torch.uint8)
        return counts if narrow else counts.to(torch.int32)

    # Pixels outside the padded map are never in a neighbourhood; their
    # indicators are computed (against zeros) and never read.
    extended = F.pad(padded, (span, span, span, span))
    window_sums = []  # [offset row dy][box start ax] -> (c, hp, wp) counts
    for dy in range(offsets):
        precedes = []
        for dx in range(offsets):
            other = extended[:, dy : dy + hp, dx : dx + wp]
            # Row-major earlier positions win ties: they count when merely equal.
            earlier = (dy, dx) < (span, span)
            precedes.append(as_counts(other <= padded if earlier else other < padded))
        running = precedes[0] + precedes[1] if patch_size > 1 else precedes[0].clone()
        for dx in range(2, patch_size):
            running += precedes[dx]
        row = [running]
        for ax in range(1, patch_size):
            running = running + precedes[ax + span]
            running -= precedes[ax - 1]
            row.append(running)
        window_sums.append(row)

    differences = padded.new_empty((groups, patch_size, patch_size, h * w))
    for ax in range(patch_size):
        running = window_sums[0][ax].clone()
        for dy in range(1, patch_size):
            running += window_sums[dy][ax]
        for ay in range(patch_size):
            if ay:
                running = running + window_sums[ay + span][ax]
                running -= window_sums[ay - 1][ax]
            # The box of offsets starting at (ay, ax) is the neighbourhood seen
            # from position (ky, kx); that position holds pixel p + (ky, kx).
            ky, kx = span - ay, span - ax
            ranks = running[:, ky : ky + h, kx : kx + w].long().reshape(channels, -1)
            matched = torch.gather(reference, 1, ranks)
            values = padded[:, ky : ky + h, kx : kx + w].reshape(channels, -1)
            gaps = (values - matched).abs_().view(groups, channels // groups, h * w)
            differences[:, ky, kx] = gaps.sum(dim=1)
    return differences.view(groups, patch_size * patch_size, h * w)


def _auto_channel_chunk(h: int, w: int, patch_size: int, itemsize: int, device) -> int:
    """Channels per chunk so that one chunk's working set stays near _CHUNK_BYTES."""
    span = patch_size - 1
    count_bytes = 1 if patch_size * (patch_size + 1) <= 255 else 4
    padded_area = (h + span) * (w + span)
    per_channel = (
        padded_area * count_bytes * ((2 * span + 1) * (patch_size + 1) + 2)  # indicators, sums
        + (padded_area + (h + 3 * span) * (w + 3 * span)) * itemsize  # padded, zero-extended
        + h * w * (8 + 3 * itemsize)  # input, ranks as int64, matched values, differences
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
        working set near 128 MB on the CPU, 256 MB on other devices. Does
        not change the result beyond float rounding.

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
    operator = _patch_operator(
        size, sigma_p, patch_blur_kernel, patch_blur_sigma, dtype, features.device
    )
    chunk = channel_chunk or _auto_channel_chunk(h, w, size, dtype.itemsize, features.device)
    # Either several whole images per step, or one image in chunks of channels.
    images_per_step = max(1, chunk // channels)
    chunk = min(chunk, channels)
    maps = torch.empty((n, h, w), dtype=dtype, device=features.device)
    for first in range(0, n, images_per_step):
        last = min(first + images_per_step, n)
        images = features[first:last].to(dtype)
        if reference is None:
            references = fca_reference(images, size)
        else:
            references = reference[first:last].to(device=images.device, dtype=dtype)
        padded = _reflect_pad(images, half, half, half, half)
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


def postprocess_anomaly_maps(
    maps: torch.Tensor,
    *,
    blur_kernel: int = 5,
    blur_sigma: float | None = 1.0,
    border: int = 5,
) -> torch.Tensor:
    """Smooth anomaly maps and clear their border, as the paper does.

    Parameters
    ----------
    maps : torch.Tensor of shape (..., h, w)
        Raw maps, e.g. from :func:`feature_correspondence_analysis`.
    blur_kernel : int, default=5
        Kernel size of the Gaussian blur (:func:`gaussian_blur`).
    blur_sigma : float or None, default=1.0
        Its standard deviation; None or 0 skips the blur.
    border : int, default=5
        Width of the frame set to 0 on every side after blurring; 0 keeps
        every pixel. A border of at least half the map side clears the whole
        map (every pixel is then within ``border`` of an edge).

    Returns
    -------
    maps : torch.Tensor
        A new tensor of the same shape, dtype and device.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import postprocess_anomaly_maps
    >>> out = postprocess_anomaly_maps(torch.ones(1, 6, 6), border=2)
    >>> out[0]
    tensor([[0., 0., 0., 0., 0., 0.],
            [0., 0., 0., 0., 0., 0.],
            [0., 0., 1., 1., 0., 0.],
            [0., 0., 1., 1., 0., 0.],
            [0., 0., 0., 0., 0., 0.],
            [0., 0., 0., 0., 0., 0.]])
    """
    if not isinstance(border, Integral) or border < 0:
        raise ValueError(f"border must be a non-negative integer, got {border!r}")
    out = gaussian_blur(maps, blur_kernel, blur_sigma) if blur_sigma else maps.clone()
    if border:
        h, w = out.shape[-2:]
        keep = torch.zeros((h, w), dtype=torch.bool, device=out.device)
        keep[border : h - border, border : w - border] = True
        out = out.masked_fill(~keep, 0)
    return out


def position_baseline(maps: torch.Tensor) -> torch.Tensor:
    """Typical anomaly value at each map position over a set of images.

    The per-position (lower) median of the maps. Subtracting it from every map
    (this package's addition to the method) removes what all images share at
    a position, chiefly the response to the zero-information frame that
    reflect padding creates at the map's edges, while a defect at a position
    stays visible as long as fewer than half the images have one there. It
    replaces the paper's fixed border clearing, which also erases real defects
    that touch the image border (see the user guide).

    Parameters
    ----------
    maps : torch.Tensor of shape (n, h, w)
        Anomaly maps of many images (the more, the more robust).

    Returns
    -------
    baseline : torch.Tensor of shape (h, w)

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import position_baseline
    >>> maps = torch.tensor([[[1.0, 5.0]], [[2.0, 5.0]], [[9.0, 6.0]]])
    >>> position_baseline(maps)
    tensor([[2., 5.]])
    """
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"Expected maps of shape (n, h, w) with n >= 1, got {tuple(maps.shape)}")
    return maps.median(dim=0).values


# --------------------------------------------------------------------------- channel reduction


def principal_channels(
    samples: torch.Tensor, n_components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading principal directions of feature vectors (this package's FCA speed-up).

    FCA's cost grows linearly with the number of channels, and neighbouring
    channels of a CNN are strongly correlated; projecting the FCA input onto
    its leading principal directions (:func:`project_channels`) keeps most of
    its variance with a fraction of the channels.

    Parameters
    ----------
    samples : torch.Tensor of shape (m, C)
        Feature vectors (e.g. pixels sampled from many images).
    n_components : int
        Directions to keep, ``1 <= n_components <= min(m, C)``.

    Returns
    -------
    components : torch.Tensor of shape (n_components, C)
        Orthonormal rows, by decreasing explained variance; each row's entry
        of largest magnitude is positive, so the result does not depend on
        the sign convention of the eigensolver.
    mean : torch.Tensor of shape (C,)
        Mean of ``samples``.
    Both have the dtype and device of ``samples``.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import principal_channels
    >>> x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    >>> components, mean = principal_channels(x, 1)
    >>> components, mean
    (tensor([[0.7071, 0.7071]]), tensor([2., 2.]))
    """
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (m, C), got {tuple(samples.shape)}")
    m, c = samples.shape
    if not isinstance(n_components, Integral) or not 1 <= n_components <= min(m, c):
        raise ValueError(
            f"n_components must be an integer in [1, min(m, C)] = [1, {min(m, c)}], "
            f"got {n_components!r}"
        )
    # Eigenvectors of the covariance, accumulated in float64 over row chunks:
    # the same directions as an SVD of the centred samples, without their
    # float64 copies (an SVD of 65536 x 192 samples raised the peak memory of
    # a whole MTD run by about 280 MB).
    chunks = samples.split(_COVARIANCE_CHUNK)
    mean = sum(chunk.double().sum(dim=0) for chunk in chunks) / m
    covariance = torch.zeros((c, c), dtype=torch.float64, device=samples.device)
    for chunk in chunks:
        centred = chunk.double() - mean
        covariance += centred.T @ centred
    _, vectors = torch.linalg.eigh(covariance / m)
    components = vectors.flip(1)[:, :n_components].T  # by decreasing eigenvalue
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(n_components), largest])
    components = components * torch.where(signs == 0, 1.0, signs)[:, None]
    return components.to(samples.dtype), mean.to(samples.dtype)


def project_channels(
    features: torch.Tensor, components: torch.Tensor, mean: torch.Tensor
) -> torch.Tensor:
    """Coordinates of every pixel's centred vector along ``components``.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, h, w)
    components : torch.Tensor of shape (k, C)
        E.g. from :func:`principal_channels`.
    mean : torch.Tensor of shape (C,)

    Returns
    -------
    projected : torch.Tensor of shape (n, k, h, w)
    """
    if features.ndim != 4 or components.ndim != 2 or components.shape[1] != features.shape[1]:
        raise ValueError(
            f"features (n, C, h, w) and components (k, C) do not match: "
            f"{tuple(features.shape)} and {tuple(components.shape)}"
        )
    centred = features - mean.to(features)[None, :, None, None]
    return torch.einsum("nchw,kc->nkhw", centred, components.to(features))
