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

With ``compute_dtype=torch.bfloat16`` the matrix products run in bfloat16
(mixed precision, as ``torch.autocast`` does it): the weights are rounded
from the float32 flat parameter at every step, the hidden activations and
their gradients are bfloat16, and everything that meets the loss (the
reconstruction, the latent mean, log-scale and sample, their gradients),
the bias gradients and the optimiser's state stay float32. On a CPU with
bfloat16 instructions (AVX512-BF16, AMX) the products run faster than in
float32 (the user guide's "Speed and memory" has the figures); the result
is then no longer autograd's float32 result but the same step computed
with 8-bit mantissas in the products.

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
    compute_dtype : torch.dtype, default=torch.float32
        The dtype of the matrix products: float32 (autograd's float32
        gradients, bitwise) or bfloat16 (mixed precision, see the module).

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

    def __init__(
        self,
        module: PixelVAE,
        pixels: int,
        kl_weight: float,
        *,
        compute_dtype: torch.dtype = torch.float32,
    ):
        if compute_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype}")
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

        mixed = compute_dtype != torch.float32

        def buffer(width, dtype=torch.float32):
            return torch.empty((pixels, width), dtype=dtype)

        def product_buffer(like):
            # Where a product in the compute dtype lands before its float32
            # use; in float32 the float32 buffer itself (no copy).
            return torch.empty_like(like, dtype=compute_dtype) if mixed else like

        # Activations (kept for the backward pass), then gradients and the
        # penalty's exp(2 * log_sigma), which becomes its own gradient term.
        self._enc1, self._enc2, self._dec1, self._dec2 = (
            buffer(hidden, compute_dtype) for _ in range(4)
        )
        self._mu, self._log_sigma, self._sigma, self._z = (buffer(latent) for _ in range(4))
        self._reconstruction = buffer(channels)
        self._grad_out, self._squared = buffer(channels), buffer(channels)
        self._penalty_terms = buffer(latent)
        self._grad_hidden, self._grad_hidden2, self._grad_hidden3 = (
            buffer(hidden, compute_dtype) for _ in range(3)
        )
        self._grad_z, self._grad_mu, self._grad_log_sigma, self._doubled_exp = (
            buffer(latent) for _ in range(4)
        )
        # Mixed precision only: the weights, the network's input and the
        # float32 tensors entering a product, rounded to the compute dtype,
        # and the products that come back to float32.
        self._compute_weights = self._weights
        self._compute_grads = self._grads
        self._flat_compute = None
        if mixed:
            self._flat_compute = torch.empty(flat.shape, dtype=compute_dtype)
            self._compute_weights = {
                name: part.view(self._weights[name].shape)
                for name, part in zip(self._names, self._flat_compute.split(sizes), strict=True)
            }
            self._compute_grads = {
                name: torch.empty_like(grads, dtype=compute_dtype)
                for name, grads in self._grads.items()
                if name.endswith(".weight")
            }
        self._products = {
            name: product_buffer(tensor)
            for name, tensor in [
                ("mu", self._mu),
                ("log_sigma", self._log_sigma),
                ("reconstruction", self._reconstruction),
                ("grad_z", self._grad_z),
            ]
        }
        self._inputs = {
            name: buffer(width, compute_dtype) if mixed else None
            for name, width in [
                ("x", channels),
                ("z", latent),
                ("grad_out", channels),
                ("grad_mu", latent),
                ("grad_log_sigma", latent),
            ]
        }

    def _input(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A float32 tensor as a product's operand: itself, or rounded to the compute dtype."""
        buffer = self._inputs[name]
        return tensor if buffer is None else buffer.copy_(tensor)

    def _product(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """A product written into ``self._products[name]``, as the float32 tensor ``out``."""
        product = self._products[name]
        return out if product is out else out.copy_(product)

    def _linear(self, layer: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # F.linear on 2-d inputs is this addmm.
        weights = self._compute_weights
        return torch.addmm(weights[f"{layer}.bias"], x, weights[f"{layer}.weight"].t(), out=out)

    def _linear_grads(
        self, layer: str, grad: torch.Tensor, x: torch.Tensor, grad_operand=None
    ) -> None:
        # grad_operand: grad in the compute dtype, when grad is float32.
        name = f"{layer}.weight"
        operand = grad if grad_operand is None else grad_operand
        product = torch.mm(operand.t(), x, out=self._compute_grads[name])
        if product is not self._grads[name]:
            self._grads[name].copy_(product)
        torch.sum(grad, 0, dtype=torch.float32, out=self._grads[f"{layer}.bias"])

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
        if self._flat_compute is not None:
            self._flat_compute.copy_(self.parameter.detach())
        weight, products = self._compute_weights, self._products
        mu, log_sigma, sigma, z = self._mu, self._log_sigma, self._sigma, self._z
        # Forward (PixelVAE.forward).
        x_operand = self._input("x", x)
        self._linear("encoder.0", x_operand, self._enc1).relu_()
        self._linear("encoder.2", self._enc1, self._enc2).relu_()
        self._linear("to_mu", self._enc2, products["mu"])
        self._linear("to_log_sigma", self._enc2, products["log_sigma"])
        mu, log_sigma = self._product("mu", mu), self._product("log_sigma", log_sigma)
        torch.exp(log_sigma, out=sigma)
        torch.mul(sigma, noise, out=z).add_(mu)
        z_operand = self._input("z", z)
        self._linear("decoder.0", z_operand, self._dec1).relu_()
        self._linear("decoder.2", self._dec1, self._dec2).relu_()
        self._linear("decoder.4", self._dec2, products["reconstruction"])
        reconstruction = self._product("reconstruction", self._reconstruction).relu_()
        # Loss (vae_loss): mse_loss is the mean of the squared differences.
        difference = torch.sub(reconstruction, x, out=self._grad_out)
        doubled_exp = torch.mul(log_sigma, 2, out=self._doubled_exp).exp_()
        # (doubled_exp + mu**2 - log_sigma - 0.5).mean() and the mean square,
        # into buffers (a float sum is the same in either order of two terms).
        penalty = torch.pow(mu, 2, out=self._penalty_terms).add_(doubled_exp)
        penalty = penalty.sub_(log_sigma).sub_(0.5).mean()
        squared = torch.square(difference, out=self._squared)
        loss = squared.mean() + self._kl_weight * penalty
        # Backward. mse_loss's gradient: 2 / numel * (reconstruction - x).
        grad = difference.mul_(2.0 / difference.numel())
        self._relu_grad(grad, reconstruction)
        operand = self._input("grad_out", grad)
        self._linear_grads("decoder.4", grad, self._dec2, operand)
        grad = torch.mm(operand, weight["decoder.4.weight"], out=self._grad_hidden)
        self._relu_grad(grad, self._dec2)
        self._linear_grads("decoder.2", grad, self._dec1)
        grad = torch.mm(grad, weight["decoder.2.weight"], out=self._grad_hidden2)
        self._relu_grad(grad, self._dec1)
        self._linear_grads("decoder.0", grad, z_operand)
        torch.mm(grad, weight["decoder.0.weight"], out=products["grad_z"])
        grad_z = self._product("grad_z", self._grad_z)
        # mu: from z, plus the penalty's mean(mu**2): g * (2 * mu).
        penalty_grad = self._penalty_grad
        grad_mu = torch.mul(mu, 2, out=self._grad_mu).mul_(penalty_grad).add_(grad_z)
        # log_sigma: the penalty's -log_sigma and exp(2 * log_sigma) terms
        # (summed first, as autograd reaches them first), then z's
        # exp(log_sigma) * noise term.
        doubled_exp.mul_(penalty_grad).mul_(2)
        grad_log_sigma = torch.neg(penalty_grad.expand_as(mu), out=self._grad_log_sigma)
        grad_log_sigma.add_(doubled_exp).add_(grad_z.mul_(noise).mul_(sigma))
        mu_operand = self._input("grad_mu", grad_mu)
        log_sigma_operand = self._input("grad_log_sigma", grad_log_sigma)
        self._linear_grads("to_mu", grad_mu, self._enc2, mu_operand)
        self._linear_grads("to_log_sigma", grad_log_sigma, self._enc2, log_sigma_operand)
        grad = torch.mm(mu_operand, weight["to_mu.weight"], out=self._grad_hidden)
        grad += torch.mm(log_sigma_operand, weight["to_log_sigma.weight"], out=self._grad_hidden3)
        self._relu_grad(grad, self._enc2)
        self._linear_grads("encoder.2", grad, self._enc1)
        grad = torch.mm(grad, weight["encoder.2.weight"], out=self._grad_hidden2)
        self._relu_grad(grad, self._enc1)
        self._linear_grads("encoder.0", grad, x_operand)
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
