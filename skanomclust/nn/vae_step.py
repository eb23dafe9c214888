"""One training step of the per-pixel VAE with written-out gradients (step 2, CPU).

:func:`~skanomclust.nn.vae_training.train_pixel_vae` takes 2000 steps of a
small network (seven linear layers) on 2048 pixels each. On a CPU, autograd's
version of a step spends a quarter to a third of its time outside the matrix
products: a fresh tensor for every intermediate and gradient, ``mse_loss``'s
slow reduction, and AdamW's dozen small operations for each of the fourteen
weight and bias tensors. :class:`VAETrainingStep` computes the same step with
the gradients written out:

- every activation and gradient lives in a buffer allocated once, and each
  operation writes into it (``out=`` or in place);
- all weights and biases are views of one flat parameter, and all their
  gradients views of one flat gradient, so AdamW updates one tensor.

The operations mirror those autograd runs, in the same order wherever the
order changes the float rounding (the sums of gradients reaching a tensor
from several uses, the scalars of the means), so the gradients, and hence the
trained weights, are bitwise those of ``vae_loss(...).backward()`` with the
same BLAS (the tests compare them). The user guide's "Speed and memory" has
the measured gain.

The CUDA path of the training keeps autograd: there the whole step is one
captured CUDA graph, which removes the per-operation costs this avoids.
"""

from __future__ import annotations

import torch

from .vae import PixelVAE

__all__ = ["VAETrainingStep"]

# The network's linear layers in forward order (PixelVAE's submodule names).
_LAYERS = (
    "encoder.0",
    "encoder.2",
    "to_mu",
    "to_log_sigma",
    "decoder.0",
    "decoder.2",
    "decoder.4",
)


class VAETrainingStep:
    """Loss and gradients of :func:`~skanomclust.nn.vae_loss` for a :class:`PixelVAE`, on the CPU.

    Holds a copy of the module's weights as views of one flat parameter
    (:attr:`parameter`, to be given to the optimiser) and the buffers of one
    step of ``pixels`` vectors. Calling the object runs the forward pass and
    the backward pass and leaves the gradients in ``parameter.grad``;
    :meth:`copy_to` writes the trained weights back into a module.

    Parameters
    ----------
    module : PixelVAE
        The network; its current weights are copied.
    pixels : int
        Vectors per step.
    kl_weight : float
        See :func:`~skanomclust.nn.vae_loss`.

    Examples
    --------
    >>> import torch
    >>> from skanomclust.nn import PixelVAE
    >>> from skanomclust.nn.vae_step import VAETrainingStep
    >>> g = torch.Generator().manual_seed(0)
    >>> vae = PixelVAE(8, hidden_channels=16, latent_channels=4, generator=g)
    >>> step = VAETrainingStep(vae, pixels=32, kl_weight=1e-3)
    >>> optimizer = torch.optim.AdamW([step.parameter], lr=1e-3)
    >>> loss = step(torch.rand(32, 8, generator=g), torch.randn(32, 4, generator=g))
    >>> optimizer.step()
    >>> step.copy_to(vae)
    >>> loss.shape, step.parameter.grad.shape
    (torch.Size([]), torch.Size([1040]))
    """

    def __init__(self, module: PixelVAE, pixels: int, kl_weight: float):
        params = dict(module.named_parameters())
        self._names = [f"{layer}.{kind}" for layer in _LAYERS for kind in ("weight", "bias")]
        if sorted(self._names) != sorted(params):
            raise ValueError(f"expected a PixelVAE's parameters, got {sorted(params)}")
        sizes = [params[name].numel() for name in self._names]
        flat = torch.empty(sum(sizes), dtype=torch.float32)
        self.parameter = torch.nn.Parameter(flat)
        self.parameter.grad = torch.empty_like(flat)
        self._weights, self._grads = {}, {}
        for name, values, grads in zip(
            self._names, flat.split(sizes), self.parameter.grad.split(sizes), strict=True
        ):
            self._weights[name] = values.view(params[name].shape)
            self._grads[name] = grads.view(params[name].shape)
        with torch.no_grad():
            for name in self._names:
                self._weights[name].copy_(params[name])
        channels, hidden, latent = (
            module.in_channels,
            module.hidden_channels,
            module.latent_channels,
        )
        self._pixels = int(pixels)
        # autograd's scalar: float32(kl_weight), divided in float32 by the
        # penalty's element count (MeanBackward).
        self._penalty_grad = torch.tensor(kl_weight, dtype=torch.float32) / (pixels * latent)
        self._kl_weight = kl_weight

        def buffer(width):
            return torch.empty((pixels, width), dtype=torch.float32)

        # Activations (kept for the backward pass), then gradients and the
        # penalty's exp(2 * log_sigma), which becomes its own gradient term.
        self._enc1, self._enc2, self._dec1, self._dec2 = (buffer(hidden) for _ in range(4))
        self._mu, self._log_sigma, self._sigma, self._z = (buffer(latent) for _ in range(4))
        self._reconstruction = buffer(channels)
        self._grad_out = buffer(channels)
        self._grad_hidden, self._grad_hidden2, self._grad_hidden3 = (
            buffer(hidden) for _ in range(3)
        )
        self._grad_z, self._grad_mu, self._grad_log_sigma, self._doubled_exp = (
            buffer(latent) for _ in range(4)
        )

    def _linear(self, layer: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # F.linear on 2-d inputs is this addmm.
        return torch.addmm(
            self._weights[f"{layer}.bias"], x, self._weights[f"{layer}.weight"].t(), out=out
        )

    def _linear_grads(self, layer: str, grad: torch.Tensor, x: torch.Tensor) -> None:
        torch.mm(grad.t(), x, out=self._grads[f"{layer}.weight"])
        torch.sum(grad, 0, out=self._grads[f"{layer}.bias"])

    @staticmethod
    def _relu_grad(grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        # ReLU's backward as autograd runs it (zero where the output is not positive).
        return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0, grad_input=grad)

    def __call__(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward and backward pass on ``x`` (pixels, C) with latent ``noise`` (pixels, latent).

        Returns the loss (a 0-dim tensor, not tied to any graph); the
        gradients are in ``parameter.grad``.
        """
        for name, tensor, like in [("x", x, self._reconstruction), ("noise", noise, self._z)]:
            if tensor.shape != like.shape or tensor.dtype != torch.float32:
                raise ValueError(
                    f"{name} must be float32 of shape {tuple(like.shape)}, "
                    f"got {tensor.dtype} {tuple(tensor.shape)}"
                )
        weight = self._weights
        mu, log_sigma, sigma, z = self._mu, self._log_sigma, self._sigma, self._z
        # Forward (PixelVAE.forward).
        self._linear("encoder.0", x, self._enc1).relu_()
        self._linear("encoder.2", self._enc1, self._enc2).relu_()
        self._linear("to_mu", self._enc2, mu)
        self._linear("to_log_sigma", self._enc2, log_sigma)
        torch.exp(log_sigma, out=sigma)
        torch.mul(sigma, noise, out=z).add_(mu)
        self._linear("decoder.0", z, self._dec1).relu_()
        self._linear("decoder.2", self._dec1, self._dec2).relu_()
        reconstruction = self._linear("decoder.4", self._dec2, self._reconstruction).relu_()
        # Loss (vae_loss): mse_loss is the mean of the squared differences.
        difference = torch.sub(reconstruction, x, out=self._grad_out)
        doubled_exp = torch.mul(log_sigma, 2, out=self._doubled_exp).exp_()
        penalty = (doubled_exp + mu**2 - log_sigma - 0.5).mean()
        loss = difference.square().mean() + self._kl_weight * penalty
        # Backward. mse_loss's gradient: 2 / numel * (reconstruction - x).
        grad = difference.mul_(2.0 / difference.numel())
        self._relu_grad(grad, reconstruction)
        self._linear_grads("decoder.4", grad, self._dec2)
        grad = torch.mm(grad, weight["decoder.4.weight"], out=self._grad_hidden)
        self._relu_grad(grad, self._dec2)
        self._linear_grads("decoder.2", grad, self._dec1)
        grad = torch.mm(grad, weight["decoder.2.weight"], out=self._grad_hidden2)
        self._relu_grad(grad, self._dec1)
        self._linear_grads("decoder.0", grad, z)
        grad_z = torch.mm(grad, weight["decoder.0.weight"], out=self._grad_z)
        # mu: from z, plus the penalty's mean(mu**2): g * (2 * mu).
        penalty_grad = self._penalty_grad
        grad_mu = torch.mul(mu, 2, out=self._grad_mu).mul_(penalty_grad).add_(grad_z)
        # log_sigma: the penalty's -log_sigma and exp(2 * log_sigma) terms
        # (summed first, as autograd reaches them first), then z's
        # exp(log_sigma) * noise term.
        doubled_exp.mul_(penalty_grad).mul_(2)
        grad_log_sigma = torch.neg(penalty_grad.expand_as(mu), out=self._grad_log_sigma)
        grad_log_sigma.add_(doubled_exp).add_(grad_z.mul_(noise).mul_(sigma))
        self._linear_grads("to_mu", grad_mu, self._enc2)
        self._linear_grads("to_log_sigma", grad_log_sigma, self._enc2)
        grad = torch.mm(grad_mu, weight["to_mu.weight"], out=self._grad_hidden)
        grad += torch.mm(grad_log_sigma, weight["to_log_sigma.weight"], out=self._grad_hidden3)
        self._relu_grad(grad, self._enc2)
        self._linear_grads("encoder.2", grad, self._enc1)
        grad = torch.mm(grad, weight["encoder.2.weight"], out=self._grad_hidden2)
        self._relu_grad(grad, self._enc1)
        self._linear_grads("encoder.0", grad, x)
        return loss

    def gradients(self) -> dict[str, torch.Tensor]:
        """The last step's gradients by parameter name: views of ``parameter.grad``."""
        return dict(self._grads)

    @torch.no_grad()
    def copy_to(self, module: PixelVAE) -> None:
        """Write the current weights into ``module`` (one with the same shapes)."""
        params = dict(module.named_parameters())
        for name in self._names:
            params[name].copy_(self._weights[name])
