"""Steps 2-3 put together: the anomaly maps of a batch, and what surrounds FCA.

- :func:`localize_batch`: the maps of a batch of feature maps, from the VAE's
  residuals (:mod:`~skanomclust.nn.vae`) through FCA (:mod:`~skanomclust.nn.fca`);
- :func:`fit_fca_projection` (:func:`sample_fca_input_pixels`,
  :func:`principal_channels`) and :func:`project_channels`: this package's FCA
  speed-up, projecting the FCA input onto its leading principal directions;
- :func:`postprocess_anomaly_maps`: the paper's smoothing and border clearing;
- :func:`position_baseline`: this package's replacement of the border clearing,
  the typical map value at each position.

Pure torch, on the device and dtype of the input.
"""

from __future__ import annotations

from numbers import Integral

import torch

from .fca import feature_correspondence_analysis
from .ops import gaussian_blur
from .vae import PixelVAE, minmax_scale, minmax_scale_stats, vae_residuals

__all__ = [
    "fca_input",
    "fit_fca_projection",
    "localize_batch",
    "localize_images",
    "position_baseline",
    "postprocess_anomaly_maps",
    "principal_channels",
    "project_channels",
    "sample_fca_input_pixels",
]

# Rows per float64 chunk in principal_channels.
_COVARIANCE_CHUNK = 8192


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


def fca_input(features: torch.Tensor, vae: PixelVAE | None) -> torch.Tensor:
    """What FCA reads: the VAE's residuals, or (without a VAE) the min-max scaled features.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw feature maps, float32, on the VAE's device.
    vae : PixelVAE or None

    Returns
    -------
    source : Tensor of shape (n, C, h, w)
    """
    mins, maxs = minmax_scale_stats(features)
    if vae is None:
        return minmax_scale(features, mins, maxs)
    return vae_residuals(vae, features, mins, maxs, batch_size=len(features))


def sample_fca_input_pixels(
    features: torch.Tensor,
    vae: PixelVAE | None,
    *,
    n_images: int,
    n_pixels: int,
    generator: torch.Generator,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Pixels of the FCA input drawn from a random subset of images, to fit the projection.

    ``n_images`` images are drawn without replacement, then ``n_pixels //
    n_images`` pixels (at least one, at most all) of each one's FCA input
    (:func:`fca_input`): a covariance estimate from many images at the cost
    of computing the input of a few.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw feature maps in any float dtype, on any device; only the drawn
        images are moved to ``device`` (in float32), a batch at a time.
    vae : PixelVAE or None
        The trained VAE (None: the min-max scaled features).
    n_images, n_pixels : int
        Images drawn (at most ``n``) and pixels in all.
    generator : torch.Generator
        CPU generator of every draw.
    batch_size : int, default=16
        Images per call of the VAE.
    device : torch.device or str, default="cpu"

    Returns
    -------
    pixels : Tensor of shape (m, C), float32, on ``device``
    """
    n, channels, h, w = features.shape
    n_images = min(n, n_images)
    per_image = min(h * w, max(1, n_pixels // n_images))
    images = torch.randperm(n, generator=generator)[:n_images].sort().values
    samples = []
    for start in range(0, n_images, batch_size):
        chosen = images[start : start + batch_size]
        batch = features[chosen.to(features.device)].to(device).float()
        pixels = fca_input(batch, vae).flatten(2).transpose(1, 2)  # (b, h * w, C)
        picks = torch.stack(
            [torch.randperm(h * w, generator=generator)[:per_image] for _ in chosen]
        ).to(device)
        samples.append(torch.gather(pixels, 1, picks[..., None].expand(-1, -1, channels)))
    return torch.cat(samples).flatten(0, 1)


def fit_fca_projection(
    features: torch.Tensor,
    vae: PixelVAE | None,
    n_components: int,
    *,
    generator: torch.Generator,
    n_images: int = 256,
    n_pixels: int = 65536,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The channel projection before FCA, fitted on pixels of sampled images.

    The defaults sample enough pixels for a stable estimate of a 200-channel
    covariance, in a fraction of a second. Returns None (FCA then reads every
    channel) when fewer than ``10 * C`` pixels can be sampled: the directions
    would be too poorly estimated to be stable, and FCA is cheap there.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw feature maps (see :func:`sample_fca_input_pixels`).
    vae : PixelVAE or None
    n_components : int
        Principal directions kept (at most C).
    generator : torch.Generator
        CPU generator of the samples.
    n_images, n_pixels, batch_size, device :
        Passed to :func:`sample_fca_input_pixels`.

    Returns
    -------
    (components, mean) or None
        As :func:`principal_channels`, on ``device``.
    """
    pixels = sample_fca_input_pixels(
        features,
        vae,
        n_images=n_images,
        n_pixels=n_pixels,
        generator=generator,
        batch_size=batch_size,
        device=device,
    )
    if len(pixels) < 10 * features.shape[1]:
        return None
    return principal_channels(pixels, n_components)


def localize_batch(
    features: torch.Tensor,
    vae: PixelVAE | None,
    *,
    mode: str = "vae_fca",
    components: torch.Tensor | None = None,
    mean: torch.Tensor | None = None,
    patch_size: int = 7,
    sigma_p: float = 3.0,
    border: int = 0,
) -> torch.Tensor:
    """Raw-and-post-processed anomaly maps of a batch (before any position baseline).

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw feature maps, float32; everything runs on their device.
    vae : PixelVAE or None
        The trained normality model (None for ``mode="fca"``).
    mode : {"vae_fca", "fca", "vae"}, default="vae_fca"
        FCA of the VAE residuals (the paper), FCA of the scaled features
        (zero-shot), or the mean absolute residual.
    components, mean : Tensor or None
        Channel projection applied before FCA (:func:`principal_channels`).
    patch_size, sigma_p : int, float
        FCA's neighbourhood and window (:func:`~skanomclust.nn.fca_reference`).
    border : int, default=0
        Frame cleared after smoothing (:func:`postprocess_anomaly_maps`).

    Returns
    -------
    maps : Tensor of shape (n, h, w)
    """
    source = fca_input(features, None if mode == "fca" else vae)
    if mode == "vae":
        # Channel means in the (n, C, h, w) memory order of earlier versions:
        # the same float sums whatever layout fca_input returns.
        raw = source.contiguous().abs().mean(dim=1)
    else:
        if components is not None:
            source = project_channels(source, components, mean)
        raw = feature_correspondence_analysis(source, patch_size=patch_size, sigma_p=sigma_p)
    return postprocess_anomaly_maps(raw, border=border)


def localize_images(
    features: torch.Tensor,
    vae: PixelVAE | None,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress=None,
    **options,
) -> torch.Tensor:
    """:func:`localize_batch` over many images, a batch at a time.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw feature maps in any float dtype (e.g. half-precision storage on
        the CPU); each batch is moved to ``device`` in float32.
    vae : PixelVAE or None
    batch_size : int, default=16
    device : torch.device or str, default="cpu"
    progress : callable or None
        Called with the number of images of each finished batch.
    **options
        Passed to :func:`localize_batch` (``mode``, ``components``, ...).

    Returns
    -------
    maps : Tensor of shape (n, h, w), float32, on the CPU
    """
    out = torch.empty((features.shape[0], *features.shape[2:]), dtype=torch.float32)
    for start in range(0, len(features), batch_size):
        batch = features[start : start + batch_size]
        maps = localize_batch(batch.to(device).float(), vae, **options)
        out[start : start + len(batch)] = maps.cpu()
        if progress is not None:
            progress(len(batch))
    return out
