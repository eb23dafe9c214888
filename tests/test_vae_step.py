"""Tests of the VAE's written-out training step (skanomclust.nn.vae_step)."""

import pytest
import torch

from skanomclust.nn import PixelVAE, train_pixel_vae, vae_loss
from skanomclust.nn.vae_step import VAETrainingStep
from skanomclust.nn.vae_training import training_precision

# Another BLAS may round products differently from autograd's own calls; with
# this machine's the values agree bitwise (see test_same_weights_as_autograd).
CLOSE = {"rtol": 1e-5, "atol": 1e-7}


def autograd_step(module, x, noise, kl_weight):
    module.zero_grad(set_to_none=True)
    reconstruction, mu, log_sigma = module(x, noise=noise)
    loss = vae_loss(x, reconstruction, mu, log_sigma, kl_weight)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize(
    ("channels", "hidden", "latent", "pixels", "kl_weight"),
    [(192, 128, 32, 64, 1e-3), (5, 7, 3, 11, 0.3), (1, 2, 1, 1, 0.0)],
)
def test_loss_and_gradients_equal_autograd(channels, hidden, latent, pixels, kl_weight):
    g = torch.Generator().manual_seed(channels)
    module = PixelVAE(channels, hidden, latent, generator=g)
    x = torch.rand(pixels, channels, generator=g)
    noise = torch.randn(pixels, latent, generator=g)
    expected_loss, expected = autograd_step(module, x, noise, kl_weight)
    step = VAETrainingStep(module, pixels, kl_weight)
    loss = step(x, noise)
    assert not loss.requires_grad and loss.shape == ()
    torch.testing.assert_close(loss, expected_loss, **CLOSE)
    got = step.gradients()
    assert sorted(got) == sorted(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, **CLOSE, msg=name)
    # A second call overwrites the gradients instead of adding to them.
    step(x, noise)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, **CLOSE, msg=name)


def test_same_weights_as_autograd_after_many_steps():
    # The CPU training uses the written-out step; autograd with AdamW over the
    # module's parameters, the same draws in the same order, is the reference.
    g = torch.Generator().manual_seed(1)
    features = torch.rand(4, 6, 9, 9, generator=g)
    settings = {"hidden_channels": 16, "latent_channels": 4, "lr": 3e-3, "weight_decay": 0.1}
    vae, history = train_pixel_vae(
        features,
        n_steps=30,
        pixels_per_step=40,
        generator=torch.Generator().manual_seed(5),
        **settings,
    )
    draws = torch.Generator().manual_seed(5)
    reference = PixelVAE(6, 16, 4, generator=draws)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=3e-3, weight_decay=0.1)
    mins = features.amin(dim=(-2, -1))
    ranges = features.amax(dim=(-2, -1)) - mins + 1e-8
    expected_history = []
    for _ in range(30):
        image, row, col = (torch.randint(size, (40,), generator=draws) for size in (4, 9, 9))
        noise = torch.randn(40, 4, generator=draws)
        x = (features[image, :, row, col] - mins[image]) / ranges[image]
        loss, _ = autograd_step(reference, x, noise, 1e-3)
        optimizer.step()
        expected_history.append(loss.item())
    torch.testing.assert_close(history, expected_history, **CLOSE)
    for (name, got), want in zip(vae.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, **CLOSE, msg=name)


def test_copy_to_writes_the_weights_back_and_the_module_is_untouched_before():
    g = torch.Generator().manual_seed(2)
    module = PixelVAE(4, 8, 2, generator=g)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    step = VAETrainingStep(module, 5, 1e-3)
    with torch.no_grad():
        step.parameter.add_(1.0)  # changes the step's copy only
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name])
    step.copy_to(module)
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name] + 1.0)


def test_refuses_other_modules_and_wrong_inputs():
    with pytest.raises(ValueError, match="PixelVAE"):
        VAETrainingStep(torch.nn.Linear(3, 4), 5, 1e-3)
    step = VAETrainingStep(PixelVAE(4, 8, 2), 5, 1e-3)
    with pytest.raises(ValueError, match=r"float32 of shape \(5, 4\)"):
        step(torch.rand(6, 4), torch.randn(6, 2))
    with pytest.raises(ValueError, match="float32"):
        step(torch.rand(5, 4, dtype=torch.float64), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"noise must be float32 of shape \(5, 2\)"):
        step(torch.rand(5, 4), torch.randn(5, 3))


def relative_error(got, want):
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


@pytest.mark.parametrize(
    ("channels", "hidden", "latent", "pixels", "kl_weight"),
    [(192, 128, 32, 256, 1e-3), (5, 7, 3, 11, 0.3)],
)
def test_bfloat16_products_stay_close_to_float32_autograd(
    channels, hidden, latent, pixels, kl_weight
):
    g = torch.Generator().manual_seed(channels)
    module = PixelVAE(channels, hidden, latent, generator=g)
    x = torch.rand(pixels, channels, generator=g)
    noise = torch.randn(pixels, latent, generator=g)
    expected_loss, expected = autograd_step(module, x, noise, kl_weight)
    step = VAETrainingStep(module, pixels, kl_weight, compute_dtype=torch.bfloat16)
    loss = step(x, noise)
    assert loss.dtype == torch.float32 and step.parameter.grad.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss, rtol=1e-2, atol=1e-5)
    got = step.gradients()
    errors = {name: relative_error(got[name], grad) for name, grad in expected.items()}
    # bfloat16 keeps 8 bits of mantissa: a few 1e-3 per product, up to 4e-2
    # after six layers (torch.autocast's bfloat16 autograd: up to 3.5e-2 on
    # the first shape, 0.3 on the second).
    assert max(errors.values()) < 6e-2, errors
    assert any(not torch.equal(got[name], grad) for name, grad in expected.items())
    # The same inputs give the same gradients (and a call overwrites them).
    first = step.parameter.grad.clone()
    step(x, noise)
    assert torch.equal(step.parameter.grad, first)


def test_bfloat16_training_learns_like_float32_and_repeats():
    g = torch.Generator().manual_seed(3)
    features = torch.rand(6, 24, 10, 10, generator=g)
    settings = {"n_steps": 150, "pixels_per_step": 256, "hidden_channels": 32}
    settings.update(latent_channels=8, lr=3e-3)

    def train(precision):
        return train_pixel_vae(
            features, generator=torch.Generator().manual_seed(0), precision=precision, **settings
        )

    vae32, history32 = train("float32")
    vae16, history16 = train("bfloat16")
    again, history_again = train("bfloat16")
    assert history16 == history_again
    for a, b in zip(vae16.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(p.dtype == torch.float32 for p in vae16.parameters())
    # Both runs learn (the loss falls by more than half) and end close.
    tail32, tail16 = sum(history32[-10:]) / 10, sum(history16[-10:]) / 10
    assert tail16 < 0.5 * history16[0]
    assert abs(tail16 - tail32) < 0.05 * tail32


def test_refuses_other_precisions():
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        VAETrainingStep(PixelVAE(4, 8, 2), 5, 1e-3, compute_dtype=torch.float16)
    assert training_precision("auto", "meta") == "float32"
    with pytest.raises(ValueError, match="CPU only"):
        training_precision("bfloat16", "meta")


@pytest.mark.parametrize(
    ("device", "precision", "match"),
    [("cpu", "half", "precision must be one of"), ("meta", "bfloat16", "CPU only")],
)
def test_training_refuses_other_precisions_and_bfloat16_off_the_cpu(device, precision, match):
    with pytest.raises(ValueError, match=match):
        train_pixel_vae(
            torch.rand(2, 3, 4, 4),
            n_steps=1,
            pixels_per_step=4,
            generator=torch.Generator(),
            device=device,
            precision=precision,
        )
