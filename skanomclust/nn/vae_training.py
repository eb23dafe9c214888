"""Training the per-pixel VAE (step 2): random pixels of all images, AdamW.

Kept apart from the network (:mod:`~skanomclust.nn.vae`) because the loop
has three ways to run the same steps: on the CPU with the gradients written
out (:mod:`~skanomclust.nn.vae_step`), with autograd one op at a time (an
accelerator with the features left on the host), and on CUDA as one captured
graph replayed per step.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from numbers import Integral

import torch

from .vae import _SCALE_EPS, PixelVAE, minmax_scale_stats, vae_loss
from .vae_step import VAETrainingStep

__all__ = ["train_pixel_vae", "training_precision"]

# Eager steps run on a side stream before the capture (CUDA graphs need the
# allocator and the autograd engine warmed up); they are ordinary training steps.
_WARMUP_STEPS = 3

# The pixel-major copy of the features (see _pixel_rows) is made only while it
# takes at most this share of the memory still available on their device.
_COPY_SHARE_OF_AVAILABLE = 0.25


_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def training_precision(precision: str, device) -> str:
    """The precision :func:`train_pixel_vae` should use: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` is bfloat16 on a CPU that multiplies bfloat16 in hardware
    (AVX512-BF16 or AMX, as torch reports them), where its products are
    faster than float32's, and float32 anywhere else: without those
    instructions bfloat16 products are emulated, which can be slower than
    float32 (not measured here: this package's machines have them). Other devices
    train in float32 (``"bfloat16"`` there raises ValueError, as in
    :func:`train_pixel_vae`).

    Examples
    --------
    >>> from skanomclust.nn.vae_training import training_precision
    >>> training_precision("float32", "cpu"), training_precision("auto", "meta")
    ('float32', 'float32')
    """
    on_cpu = torch.device(device).type == "cpu"
    if precision == "bfloat16" and not on_cpu:
        raise ValueError(
            f"bfloat16 training is implemented on the CPU only, not on {device}; "
            "use 'float32' or 'auto'"
        )
    if precision != "auto":
        return precision
    if not on_cpu:
        return "float32"
    native = (
        getattr(torch.cpu, name, lambda: False)()
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return "bfloat16" if any(native) else "float32"


def train_pixel_vae(
    features: torch.Tensor,
    *,
    n_steps: int,
    pixels_per_step: int,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    kl_weight: float = 1e-3,
    hidden_channels: int = 512,
    latent_channels: int = 128,
    generator: torch.Generator,
    device="cpu",
    precision: str = "float32",
    progress: Callable[[int], object] | None = None,
) -> tuple[PixelVAE, list[float]]:
    """Train a :class:`PixelVAE` on random pixels of all images.

    The per image and channel min-max statistics are computed once. Each step
    then draws ``pixels_per_step`` positions (image, row, column) uniformly with
    ``generator``, gathers those feature vectors, scales them with their
    image's statistics, moves them to ``device`` and takes one AdamW step on
    :func:`vae_loss`. The vectors are gathered from a pixel-major copy of the
    features (each pixel's channels side by side), made once when it fits in
    a quarter of the memory still available, else from the features as they
    are: the same values either way (see :func:`_pixel_rows`).

    On the CPU each step runs :class:`~skanomclust.nn.vae_step.VAETrainingStep`:
    the same loss and gradients as autograd's, computed into buffers
    allocated once, and AdamW on one flat parameter.

    On CUDA, when ``features`` are on the training device, the step (gather,
    scaling, forward, loss, backward, AdamW) is captured once as a CUDA graph
    and replayed: the network is small, so launching its few dozen kernels one
    by one from Python cost more than running them. Only the draws of each
    step (positions and latent noise, into fixed buffers) run outside the
    graph, in the same order as on the CPU.

    The authors instead iterate over batches of 8 whole maps for
    ``ceil(10000 / n_images)`` epochs: about 10000 map passes, i.e. 1250
    steps of 8 x 4096 pixels at 512 x 512 input. Sampling pixels lets the
    schedule be chosen independently of the image count and size.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, h, w)
        Unscaled feature maps (normally float32, on the CPU).
    n_steps : int
        Optimiser steps.
    pixels_per_step : int
        Pixel vectors per step.
    lr, weight_decay : float, default=1e-4, 0.1
        AdamW settings (the authors').
    kl_weight : float, default=1e-3
        See :func:`vae_loss`.
    hidden_channels, latent_channels : int, default=512, 128
        See :class:`PixelVAE`.
    generator : torch.Generator
        The only source of randomness (initial weights, pixel positions, latent
        noise). The same seed gives bitwise identical weights (on the same
        device and thread settings); the global RNG is not used.
    device : str or torch.device, default="cpu"
        Where the network is trained.
    precision : {"float32", "bfloat16"}, default="float32"
        Dtype of the matrix products (CPU only for bfloat16): see
        :class:`~skanomclust.nn.vae_step.VAETrainingStep` and
        :func:`training_precision`.
    progress : callable or tqdm-like, default=None
        Called as ``progress(step)`` after every step, or, if it has an
        ``update`` method (a tqdm bar), ``progress.update(1)``.

    Returns
    -------
    module : PixelVAE
        The trained network, in eval mode, on ``device``.
    history : list of float
        The loss of every step.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import train_pixel_vae
    >>> g = torch.Generator().manual_seed(0)
    >>> features = torch.rand(3, 8, 6, 6, generator=g)
    >>> vae, history = train_pixel_vae(
    ...     features, n_steps=5, pixels_per_step=16, hidden_channels=16,
    ...     latent_channels=4, generator=g)
    >>> len(history), vae.training
    (5, False)
    """
    if features.ndim != 4 or features.numel() == 0:
        raise ValueError(f"features must be non-empty (n, C, h, w), got {tuple(features.shape)}")
    for name, value, low in [("n_steps", n_steps, 0), ("pixels_per_step", pixels_per_step, 1)]:
        if not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    training_precision(precision, device)  # refuses bfloat16 off the CPU
    n, channels, h, w = features.shape
    mins, maxs = (stat.float() for stat in minmax_scale_stats(features))
    # minmax_scale's divisor, per image and channel, computed once instead of
    # for every gathered pixel (the same float32 operations on the same values).
    ranges = maxs - mins + _SCALE_EPS
    module = PixelVAE(channels, hidden_channels, latent_channels, generator=generator)
    module.to(device).train()
    device = next(module.parameters()).device  # "cuda" -> "cuda:0"
    graphed = device.type == "cuda" and features.device == device
    if device.type == "cpu":
        # Gradients written out into buffers allocated once, and one flat
        # parameter for AdamW: the same values as autograd's, faster (vae_step).
        written_out = VAETrainingStep(
            module, pixels_per_step, kl_weight, compute_dtype=_PRECISIONS[precision]
        )
        optimizer = torch.optim.AdamW([written_out.parameter], lr=lr, weight_decay=weight_decay)
    else:
        written_out = None
        # One fused kernel per step on CUDA instead of one per parameter tensor.
        fused = {"fused": True, "capturable": graphed} if device.type == "cuda" else {}
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=lr, weight_decay=weight_decay, **fused
        )
    draws = _step_generator(generator, device)
    # The draws of a step, in a fixed order: image, row and column of every
    # pixel, then the latent noise. Drawn into fixed buffers (a graph reads them).
    index = torch.empty((3, pixels_per_step), dtype=torch.long, device=draws.device)
    noise = torch.empty((pixels_per_step, latent_channels), device=draws.device)

    def draw():
        for row, size in zip(index, (n, h, w), strict=True):
            torch.randint(size, (pixels_per_step,), generator=draws, out=row)
        torch.randn(noise.shape, generator=draws, out=noise)

    rows = _pixel_rows(features)

    def loss_of_step():
        image, row, col = index.to(features.device)
        if rows is None:
            vectors = features[image, :, row, col].float()  # (pixels_per_step, C)
        else:
            vectors = rows.index_select(0, (image * h + row) * w + col).float()
        # minmax_scale in place (the gathered vectors are a fresh tensor), with
        # each pixel's row of statistics gathered.
        vectors = vectors.sub_(mins.index_select(0, image)).div_(ranges.index_select(0, image))
        vectors = vectors.to(device)
        if written_out is not None:
            loss = written_out(vectors, noise)  # fills the flat parameter's gradient
        else:
            reconstruction, mu, log_sigma = module(vectors, noise=noise)
            loss = vae_loss(vectors, reconstruction, mu, log_sigma, kl_weight)
            loss.backward()
        optimizer.step()
        return loss.detach()

    def report(step):
        if hasattr(progress, "update"):
            progress.update(1)
        elif progress is not None:
            progress(step)

    # Losses are copied into one preallocated tensor: no device sync per step,
    # and no reference kept to each step's loss (keeping the detached losses
    # held memory that grew with every step: on MTD's float16 features the
    # training peaked 622 MB above its start over 2000 steps, 202 MB without).
    history = torch.empty(n_steps, dtype=torch.float32, device=device)

    def eager_step(step):
        draw()
        if written_out is None:  # the written-out step overwrites its gradient
            optimizer.zero_grad(set_to_none=True)
        history[step] = loss_of_step()
        report(step)

    done = 0
    if graphed and n_steps > _WARMUP_STEPS + 1:
        done = _run_graphed(eager_step, draw, loss_of_step, optimizer, history, report)
    for step in range(done, n_steps):
        eager_step(step)
    if written_out is not None:
        written_out.copy_to(module)
    module.eval()
    return module, history.tolist()


def _run_graphed(eager_step, draw, loss_of_step, optimizer, history, report) -> int:
    """Run the training steps through one captured CUDA graph; the steps done.

    Returns fewer than ``len(history)`` steps only if the capture fails (an
    unusual driver or allocator setting): a warning says so and the caller
    runs the remaining steps one op at a time, with the same draws.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step in range(_WARMUP_STEPS):
            eager_step(step)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # Gradients are created inside the graph's memory pool and overwritten at
    # every replay (backward into None gradients assigns instead of adding).
    optimizer.zero_grad(set_to_none=True)
    try:
        with torch.cuda.graph(graph):
            loss = loss_of_step()
    except RuntimeError as exc:  # pragma: no cover - needs a GPU
        warnings.warn(
            f"Could not capture the VAE's training step as a CUDA graph ({exc}); "
            "training continues one operation at a time.",
            RuntimeWarning,
            stacklevel=3,
        )
        return _WARMUP_STEPS
    for step in range(_WARMUP_STEPS, len(history)):
        draw()
        graph.replay()
        history[step] = loss
        report(step)
    return len(history)


def _pixel_rows(features: torch.Tensor) -> torch.Tensor | None:
    """The features as one row of channels per pixel, ``(n * h * w, C)``; or None.

    In the ``(n, C, h, w)`` layout the channels of one pixel lie ``h * w``
    values apart, so gathering a step's random pixels touches
    ``pixels_per_step x C`` scattered cache lines: on MTD's features about a
    quarter of a CPU step, against a few percent from pixel-major rows plus
    one copy (the user guide's "Speed and memory" has the figures). Features
    already in that layout (channels-last memory) are used as a view;
    otherwise the copy is made when it takes at most a quarter of the memory
    still available on their device (None otherwise, or when that cannot be
    told: gather from ``features`` directly).
    """
    n, channels, h, w = features.shape
    pixel_major = features.permute(0, 2, 3, 1)
    if pixel_major.is_contiguous():
        return pixel_major.view(n * h * w, channels)
    available = _available_memory(features.device)
    if available is None or features.nbytes > _COPY_SHARE_OF_AVAILABLE * available:
        return None
    return pixel_major.reshape(n * h * w, channels)


def _available_memory(device: torch.device) -> int | None:
    """Bytes of memory still free on ``device``, or None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # not on every system (macOS)
            return None
    return None


def _step_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator of the per-step draws (pixel positions, latent noise).

    On the CPU it is ``generator`` itself. On an accelerator, drawing every
    step's positions and noise on the CPU and copying them over made the
    training wait on the host (on an H200, 3.4 ms per step, most of the VAE's
    time): a generator on the device is seeded once from ``generator``
    instead, so the draws stay a function of the seed and nothing crosses
    between host and device inside the loop.
    """
    if device.type == "cpu" or generator.device == device:
        return generator
    seed = int(torch.randint(2**63 - 1, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)
