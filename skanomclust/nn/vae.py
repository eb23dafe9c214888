"""The per-pixel variational auto-encoder that models normal features (step 2).

Its training loop is in :mod:`~skanomclust.nn.vae_training`.

A VAE on single feature vectors (the paper's network is all 1x1 convolutions,
which is an MLP applied to every pixel), trained on the pixels of all input
images, normal and anomalous together: defects are rare and small, so it
mostly learns to reconstruct normal texture. The residual between the scaled
features and the reconstruction from the posterior mean is what FCA analyses
(:mod:`skanomclust.nn.fca`).

Everything random (weight initialisation, pixel sampling, reparameterisation
noise) comes from a ``torch.Generator`` passed in; the global RNG is never
touched. Pure torch.
"""

from __future__ import annotations

from numbers import Integral

import torch
from torch import nn
from torch.nn import functional as F

from .ops import init_linear_layers

__all__ = [
    "PixelVAE",
    "minmax_scale",
    "minmax_scale_stats",
    "vae_loss",
    "vae_residuals",
]

# Added to (max - min) before dividing, as in the authors' code.
_SCALE_EPS = 1e-8

# Pixels per forward pass in vae_residuals: a pass's activations (a few MB)
# stay in the cache between layers. On a 2-core CPU, 1024-4096 rows ran the
# network 20% faster than a batch's 16,384 pixels at once, with the same
# result (each row's output does not depend on the others).
_RESIDUAL_ROWS = 2048


class PixelVAE(nn.Module):
    """Variational auto-encoder acting on single feature vectors.

    Layers follow the authors' ``compute_residuals.py`` (1x1 convolutions
    there, linear layers here: the same maps on ``(N, C)`` vectors):

    - encoder: ``C -> hidden``, ReLU, ``hidden -> hidden``, ReLU;
    - two linear heads on the encoder output: ``mu`` and ``log_sigma``
      (``latent`` each, no activation; ``sigma = exp(log_sigma)``);
    - decoder: ``latent -> hidden``, ReLU, ``hidden -> hidden``, ReLU,
      ``hidden -> C``, ReLU (the scaled inputs are in [0, 1], so the final
      ReLU only removes negative reconstructions).

    A caveat of that final ReLU, kept for fidelity: with the default
    initialisation about 40% of the output channels (at 512 channels, on
    uniform inputs) have a negative pre-activation for every input, so no
    gradient reaches them; training revives some, and those left output 0
    everywhere, making their residual the scaled feature itself.

    Parameters
    ----------
    in_channels : int
        Feature channels ``C``.
    hidden_channels : int, default=512
        Width of the hidden layers.
    latent_channels : int, default=128
        Latent dimensions.
    generator : torch.Generator, default=None
        Source of the initial weights (see :meth:`reset_parameters`); None
        uses torch's global RNG, like any ``nn.Module``.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import PixelVAE
    >>> g = torch.Generator().manual_seed(0)
    >>> vae = PixelVAE(16, hidden_channels=32, latent_channels=4, generator=g)
    >>> recon, mu, log_sigma = vae(torch.rand(10, 16, generator=g), generator=g)
    >>> recon.shape, mu.shape, log_sigma.shape
    (torch.Size([10, 16]), torch.Size([10, 4]), torch.Size([10, 4]))
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 512,
        latent_channels: int = 128,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        for name, value in [
            ("in_channels", in_channels),
            ("hidden_channels", hidden_channels),
            ("latent_channels", latent_channels),
        ]:
            if not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_channels = int(in_channels)
        self.hidden_channels = int(hidden_channels)
        self.latent_channels = int(latent_channels)
        # Built on the meta device so that construction draws nothing from the
        # global RNG; reset_parameters then draws from ``generator``.
        with torch.device("meta"):
            self.encoder = nn.Sequential(
                nn.Linear(in_channels, hidden_channels),
                nn.ReLU(),
                nn.Linear(hidden_channels, hidden_channels),
                nn.ReLU(),
            )
            self.to_mu = nn.Linear(hidden_channels, latent_channels)
            self.to_log_sigma = nn.Linear(hidden_channels, latent_channels)
            self.decoder = nn.Sequential(
                nn.Linear(latent_channels, hidden_channels),
                nn.ReLU(),
                nn.Linear(hidden_channels, hidden_channels),
                nn.ReLU(),
                nn.Linear(hidden_channels, in_channels),
                nn.ReLU(),
            )
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw new weights as torch's default init does, from ``generator``.

        Every weight and bias is uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``:
        the distribution of ``nn.Linear``'s and ``nn.Conv2d``'s default
        initialisation (the authors' network is initialised that way). Values
        are drawn on the generator's device and copied, so a CPU generator
        gives the same weights on any device.
        """
        init_linear_layers(self, generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)`` of the posterior of each vector of ``x`` (N, C)."""
        hidden = self.encoder(x)
        return self.to_mu(hidden), self.to_log_sigma(hidden)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(N, C)`` of latent vectors ``z`` (N, latent)."""
        return self.decoder(z)

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``x`` through a sampled latent (reparameterisation).

        Parameters
        ----------
        x : torch.Tensor of shape (N, C)
            Scaled feature vectors.
        generator : torch.Generator, default=None
            Source of the latent noise; it may live on another device than
            ``x`` (noise is drawn there and moved). None uses torch's global
            RNG.
        noise : torch.Tensor of shape (N, latent), default=None
            Standard normal noise drawn beforehand (``generator`` is then not
            used): the training loop draws it into a fixed buffer, which a
            captured CUDA graph can read.

        Returns
        -------
        reconstruction : torch.Tensor of shape (N, C)
        mu : torch.Tensor of shape (N, latent)
        log_sigma : torch.Tensor of shape (N, latent)
        """
        mu, log_sigma = self.encode(x)
        if noise is not None:
            noise = noise.to(mu.device)
        elif generator is None:
            noise = torch.randn_like(mu)
        else:
            noise = torch.randn(
                mu.shape, generator=generator, device=generator.device, dtype=mu.dtype
            ).to(mu.device)
        return self.decode(mu + torch.exp(log_sigma) * noise), mu, log_sigma

    def reconstruct_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction ``decode(mu(x))`` of vectors ``x`` (N, C)."""
        return self.decode(self.to_mu(self.encoder(x)))  # log_sigma is not needed


def vae_loss(
    x: torch.Tensor,
    reconstruction: torch.Tensor,
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    kl_weight: float = 1e-3,
) -> torch.Tensor:
    """Reconstruction error plus weighted latent penalty, as the authors train.

    ``mean((reconstruction - x)**2) + kl_weight * mean(sigma**2 + mu**2 - log(sigma) - 1/2)``

    Both means run over every element (all vectors and all channels or latent
    dimensions), as ``F.mse_loss`` and the authors' ``.mean()`` do. The
    penalty is the authors' form (and METHOD.md's), not the textbook Gaussian
    KL divergence ``(sigma**2 + mu**2 - 1)/2 - log(sigma)``: it pulls ``mu``
    to 0 and ``sigma**2`` to 1/2 instead of 1.

    Parameters
    ----------
    x, reconstruction : torch.Tensor of shape (N, C)
        Inputs and reconstructions.
    mu, log_sigma : torch.Tensor of shape (N, latent)
        Posterior parameters from :meth:`PixelVAE.forward`.
    kl_weight : float, default=1e-3
        Weight of the latent penalty.

    Returns
    -------
    loss : torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import vae_loss
    >>> x = torch.tensor([[1.0, 0.0]])
    >>> vae_loss(x, torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 1), kl_weight=1.0)
    tensor(1.)
    """
    mse = F.mse_loss(reconstruction, x)
    penalty = (torch.exp(2 * log_sigma) + mu**2 - log_sigma - 0.5).mean()
    return mse + kl_weight * penalty


def minmax_scale_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel minimum and maximum of feature maps.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, h, w)

    Returns
    -------
    mins, maxs : torch.Tensor of shape (n, C)
        Same dtype and device as ``features``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must have shape (n, C, h, w), got {tuple(features.shape)}")
    return features.amin(dim=(-2, -1)), features.amax(dim=(-2, -1))


def minmax_scale(
    features: torch.Tensor,
    mins: torch.Tensor,
    maxs: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scale features to [0, 1] per image and channel: ``(f - min) / (max - min + 1e-8)``.

    The ``1e-8`` (the authors' value) keeps constant channels finite: they map
    to 0 everywhere.

    Parameters
    ----------
    features : torch.Tensor of shape (n, C, ...) or (N, C)
        Maps (any trailing spatial dimensions) or single vectors.
    mins, maxs : torch.Tensor of shape (n, C)
        From :func:`minmax_scale_stats`; for vectors, the rows of the images
        they come from.
    out : torch.Tensor, default=None
        Where to write the result (the shape of ``features``, in any memory
        layout, e.g. channels-last); the same values as without it.

    Returns
    -------
    scaled : torch.Tensor
        Same shape as ``features``, in the promoted dtype of the inputs.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import minmax_scale, minmax_scale_stats
    >>> f = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # (1, 2, 1, 2), channel 1 constant
    >>> minmax_scale(f, *minmax_scale_stats(f))
    tensor([[[[0., 1.]],
    <BLANKLINE>
             [[0., 0.]]]])
    """
    spatial = (1,) * (features.ndim - mins.ndim)
    mins = mins.reshape(mins.shape + spatial)
    maxs = maxs.reshape(maxs.shape + spatial)
    if out is None:
        return (features - mins) / (maxs - mins + _SCALE_EPS)
    return torch.sub(features, mins, out=out).div_(maxs - mins + _SCALE_EPS)


def vae_residuals(
    module: PixelVAE,
    features: torch.Tensor,
    mins: torch.Tensor,
    maxs: torch.Tensor,
    batch_size: int = 8,
) -> torch.Tensor:
    """Residuals ``scaled(F) - decode(mu(scaled(F)))`` of every pixel.

    Images are streamed to the module's device ``batch_size`` at a time under
    :func:`torch.inference_mode`; the result is gathered on the device of
    ``features``.

    Parameters
    ----------
    module : PixelVAE
        A trained network.
    features : torch.Tensor of shape (n, C, h, w)
        Unscaled feature maps.
    mins, maxs : torch.Tensor of shape (n, C)
        Their :func:`minmax_scale_stats`.
    batch_size : int, default=8
        Images per forward pass.

    Returns
    -------
    residuals : torch.Tensor of shape (n, C, h, w), float32
        In channels-last memory (``torch.channels_last``): each pixel's
        channels side by side, as the network computes them.
    """
    if features.ndim != 4:
        raise ValueError(f"features must have shape (n, C, h, w), got {tuple(features.shape)}")
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n, channels, h, w = features.shape
    device = next(module.parameters()).device
    # Channels-last memory: the network's pixel-major rows are stored as they
    # are, and a projection of the channels (a matmul over pixel rows) reads
    # them without another transposed copy.
    residuals = torch.empty(
        (n, channels, h, w),
        dtype=torch.float32,
        device=features.device,
        memory_format=torch.channels_last,
    )
    in_place = residuals.device == device
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = features[start:stop].to(device=device, dtype=torch.float32)
            low, high = (
                s[start:stop].to(device=device, dtype=torch.float32) for s in (mins, maxs)
            )
            # Scaled straight into channels-last memory (the output's own rows
            # when it is on this device): no scaled copy in the (n, C, h, w)
            # order, no transposed copy of it.
            scaled = residuals[start:stop]
            if not in_place:
                scaled = torch.empty_like(scaled, device=device)
            minmax_scale(batch, low, high, out=scaled)
            # Pixel-major rows, a view, turned into residuals in place part by part.
            vectors = scaled.permute(0, 2, 3, 1).view(-1, channels)
            for part in vectors.split(_RESIDUAL_ROWS):
                part -= module.reconstruct_mean(part)
            if not in_place:
                residuals[start:stop] = scaled
    return residuals


def __getattr__(name):
    # ``train_pixel_vae`` lived here before 0.2.1; importing it lazily keeps
    # ``from skanomclust.nn.vae import train_pixel_vae`` working without an
    # import cycle (the training module builds on this one).
    if name == "train_pixel_vae":
        from .vae_training import train_pixel_vae

        return train_pixel_vae
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
