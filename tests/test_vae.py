"""Tests of the per-pixel VAE (skanomclust.nn.vae)."""

import math
import warnings

import pytest
import torch
from torch import nn

import skanomclust.nn.vae as vae_module
from skanomclust.nn import (
    PixelVAE,
    minmax_scale,
    minmax_scale_stats,
    train_pixel_vae,
    vae_loss,
    vae_residuals,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SMALL = {"hidden_channels": 32, "latent_channels": 4}


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def single_thread():
    """These networks are tiny: one thread is faster, and immune to busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def segment_textures(n, channels, h, w, seed):
    """Normal pixels lie on a segment between two fixed vectors (a 1-D manifold)."""
    g = torch.Generator().manual_seed(seed)
    start, end = torch.rand(2, channels, generator=g)
    mix = (0.5 + 0.15 * torch.randn(n, 1, h, w, generator=g)).clamp(0, 1)
    return start.view(1, -1, 1, 1) * (1 - mix) + end.view(1, -1, 1, 1) * mix


# --------------------------------------------------------------------------- module


def test_pixel_vae_layers_and_shapes(generator):
    vae = PixelVAE(6, hidden_channels=10, latent_channels=3, generator=generator)
    linear = [(m.in_features, m.out_features) for m in vae.modules() if isinstance(m, nn.Linear)]
    assert linear == [(6, 10), (10, 10), (10, 3), (10, 3), (3, 10), (10, 10), (10, 6)]
    assert isinstance(vae.encoder[-1], nn.ReLU) and isinstance(vae.decoder[-1], nn.ReLU)
    x = torch.rand(7, 6, generator=generator)
    recon, mu, log_sigma = vae(x, generator=generator)
    assert recon.shape == (7, 6) and mu.shape == (7, 3) and log_sigma.shape == (7, 3)
    assert torch.all(recon >= 0)
    mean = vae.reconstruct_mean(x)
    torch.testing.assert_close(mean, vae.decode(vae.encode(x)[0]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_channels"):
        PixelVAE(0)


def test_pixel_vae_init_from_generator_only():
    state = torch.get_rng_state()
    a = PixelVAE(5, **SMALL, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global RNG must not matter
    b = PixelVAE(5, **SMALL, generator=torch.Generator().manual_seed(1))
    c = PixelVAE(5, **SMALL, generator=torch.Generator().manual_seed(2))
    torch.set_rng_state(state)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
        fan_in = pa.shape[-1] if name.endswith("weight") else None
        if fan_in:
            assert pa.abs().max() <= 1 / math.sqrt(fan_in)
    state = torch.get_rng_state()
    PixelVAE(5, **SMALL, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)


def test_forward_noise_comes_from_the_generator(generator):
    vae = PixelVAE(4, **SMALL, generator=generator)
    x = torch.rand(9, 4, generator=generator)
    first = vae(x, generator=torch.Generator().manual_seed(5))
    second = vae(x, generator=torch.Generator().manual_seed(5))
    other = vae(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], other[0])
    torch.testing.assert_close(first[1], other[1], rtol=0, atol=0)  # mu is deterministic


# --------------------------------------------------------------------------- loss and scaling


def test_vae_loss_matches_hand_computation():
    x = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    recon = torch.tensor([[0.5, 1.0], [0.0, 0.25]])
    mu = torch.tensor([[1.0], [0.0]])
    log_sigma = torch.tensor([[0.0], [math.log(2.0)]])
    mse = (0.25 + 0 + 0.25 + 0) / 4
    # sigma^2 + mu^2 - log sigma - 1/2, per element, then the mean.
    penalty = ((1 + 1 - 0 - 0.5) + (4 + 0 - math.log(2.0) - 0.5)) / 2
    loss = vae_loss(x, recon, mu, log_sigma, kl_weight=0.1)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(mse + 0.1 * penalty, rel=1e-6)
    assert vae_loss(x, recon, mu, log_sigma).item() == pytest.approx(mse + 1e-3 * penalty)


def test_minmax_scale_per_image_and_channel(generator):
    features = torch.rand(3, 4, 5, 6, generator=generator) * 10 - 3
    features[1, 2] = 7.0  # a constant channel
    features[2] = -1.0  # a constant image
    mins, maxs = minmax_scale_stats(features)
    assert mins.shape == (3, 4) and maxs.shape == (3, 4)
    torch.testing.assert_close(mins[0, 1], features[0, 1].min())
    scaled = minmax_scale(features, mins, maxs)
    assert torch.isfinite(scaled).all()
    assert scaled.min() >= 0 and scaled.max() <= 1
    torch.testing.assert_close(scaled[0].amax(dim=(-2, -1)), torch.ones(4))
    torch.testing.assert_close(scaled[0].amin(dim=(-2, -1)), torch.zeros(4))
    assert torch.all(scaled[1, 2] == 0) and torch.all(scaled[2] == 0)
    # Single vectors with their images' statistics give the same values.
    image, row, col = (
        torch.tensor([0, 1, 2, 1]),
        torch.tensor([0, 4, 2, 1]),
        torch.tensor([5, 0, 3, 3]),
    )
    vectors = minmax_scale(features[image, :, row, col], mins[image], maxs[image])
    torch.testing.assert_close(vectors, scaled[image, :, row, col])


# --------------------------------------------------------------------------- training


def train(features, seed, **kwargs):
    settings = dict(n_steps=20, pixels_per_step=32, **SMALL)
    settings.update(kwargs)
    return train_pixel_vae(features, generator=torch.Generator().manual_seed(seed), **settings)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(generator):
    features = torch.rand(3, 5, 7, 9, generator=generator)
    state = torch.get_rng_state()
    vae_a, history_a = train(features, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    vae_b, history_b = train(features, seed=3)
    vae_c, history_c = train(features, seed=4)
    assert history_a == history_b and history_a != history_c
    for pa, pb, pc in zip(vae_a.parameters(), vae_b.parameters(), vae_c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    stats = minmax_scale_stats(features)
    res_a, res_b = vae_residuals(vae_a, features, *stats), vae_residuals(vae_b, features, *stats)
    assert torch.equal(res_a, res_b)
    assert not torch.equal(res_a, vae_residuals(vae_c, features, *stats))


def test_training_returns_eval_module_and_history(generator):
    features = torch.rand(2, 3, 4, 4, generator=generator)
    vae, history = train(features, seed=0, n_steps=7)
    assert isinstance(vae, PixelVAE) and not vae.training
    assert len(history) == 7 and all(isinstance(v, float) and math.isfinite(v) for v in history)
    vae, history = train(features, seed=0, n_steps=0)
    assert history == []
    with pytest.raises(ValueError, match="pixels_per_step"):
        train(features, seed=0, pixels_per_step=0)


TOY = {
    "n_steps": 200,
    "pixels_per_step": 256,
    "lr": 2e-3,
    "weight_decay": 0,
    "hidden_channels": 64,
}


def test_training_decreases_the_loss():
    features = segment_textures(4, 16, 16, 16, seed=1)
    _, history = train(features, seed=0, latent_channels=2, **TOY)
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert last < 0.3 * first


@pytest.mark.parametrize("seed", [0, 1])
def test_residuals_small_on_normal_pixels_large_on_outliers(seed):
    channels = 16
    features = segment_textures(4, channels, 16, 16, seed=seed + 2)
    # Outliers: every channel at its minimum or maximum, alternately. Inside
    # each channel's range (the scaling is unchanged) but far off the segment.
    low, high = features.amin(dim=(0, 2, 3)), features.amax(dim=(0, 2, 3))
    outlier = torch.where(torch.arange(channels) % 2 == 1, low, high)
    positions = [(0, 3, 4), (1, 10, 12), (3, 7, 7)]
    is_outlier = torch.zeros(4, 16, 16, dtype=torch.bool)
    for image, row, col in positions:
        features[image, :, row, col] = outlier
        is_outlier[image, row, col] = True
    stats = minmax_scale_stats(features)
    vae, _ = train(features, seed=seed, latent_channels=2, **TOY)
    residuals = vae_residuals(vae, features, *stats)
    # The decoder's final ReLU (the authors' architecture) can leave an output
    # channel at 0 for every input; such a channel is not reconstructed at all
    # (its residual is the scaled feature). Judge the channels it does reconstruct.
    reconstructed = (minmax_scale(features, *stats) - residuals).amax(dim=(0, 2, 3)) > 0
    assert reconstructed.sum() >= channels // 2
    error = residuals[:, reconstructed].norm(dim=1)  # (n, h, w)
    normal = error[~is_outlier]
    assert normal.mean() < 0.05 * reconstructed.sum().sqrt()
    assert error[is_outlier].min() > 5 * normal.quantile(0.99)


def test_constant_channels_do_not_produce_nan(generator):
    features = torch.rand(3, 4, 6, 6, generator=generator)
    features[:, 1] = 2.5
    features[2] = 0.0
    vae, history = train(features, seed=0, n_steps=10)
    assert all(math.isfinite(v) for v in history)
    residuals = vae_residuals(vae, features, *minmax_scale_stats(features))
    assert torch.isfinite(residuals).all()


def test_sampling_never_reads_beyond_the_tensor():
    # A non-square view into a NaN-filled buffer: any read outside it would poison the loss.
    buffer = torch.full((4, 3, 12, 12), float("nan"))
    features = buffer[1:3, :, 2:7, 3:12]
    features.copy_(torch.rand(features.shape, generator=torch.Generator().manual_seed(0)))
    _, history = train(features, seed=0, n_steps=50, pixels_per_step=64)
    assert all(math.isfinite(v) for v in history)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pixel_major_gather_trains_the_same_weights(monkeypatch, generator, dtype):
    # Training gathers pixels from a pixel-major copy when it fits in memory, and
    # from the (n, C, h, w) features otherwise: the same vectors, so the same weights.
    from skanomclust.nn import vae_training

    features = (3 * torch.rand(3, 6, 5, 7, generator=generator)).to(dtype)
    rows = vae_training._pixel_rows(features)
    assert rows is not None and rows.shape == (3 * 5 * 7, 6)
    assert torch.equal(rows[(2 * 5 + 4) * 7 + 1], features[2, :, 4, 1])
    vae_a, history_a = train(features, seed=1, n_steps=20, pixels_per_step=32)
    monkeypatch.setattr(vae_training, "_COPY_SHARE_OF_AVAILABLE", 0.0)
    assert vae_training._pixel_rows(features) is None
    vae_b, history_b = train(features, seed=1, n_steps=20, pixels_per_step=32)
    assert history_a == history_b
    for pa, pb in zip(vae_a.parameters(), vae_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # Features already channels-last in memory are read in place, whatever the budget.
    in_place = features.contiguous(memory_format=torch.channels_last)
    assert vae_training._pixel_rows(in_place).data_ptr() == in_place.data_ptr()
    monkeypatch.setattr(vae_training, "_available_memory", lambda device: None)
    assert vae_training._pixel_rows(features) is None
    vae_c, history_c = train(in_place, seed=1, n_steps=20, pixels_per_step=32)
    assert history_c == history_a


def test_available_memory_on_the_cpu():
    from skanomclust.nn import vae_training

    available = vae_training._available_memory(torch.device("cpu"))
    assert available is None or available > 0
    assert vae_training._available_memory(torch.device("meta")) is None


def test_progress_hook_and_bar(generator):
    features = torch.rand(2, 3, 4, 4, generator=generator)
    steps = []
    train(features, seed=0, n_steps=4, progress=steps.append)
    assert steps == [0, 1, 2, 3]

    class Bar:
        count = 0

        def update(self, n=1):
            self.count += n

    bar = Bar()
    train(features, seed=0, n_steps=5, progress=bar)
    assert bar.count == 5


# --------------------------------------------------------------------------- residuals


def test_residuals_definition_and_batching(generator):
    features = torch.rand(5, 4, 3, 6, generator=generator) * 4
    vae, _ = train(features, seed=0, n_steps=5)
    mins, maxs = minmax_scale_stats(features)
    residuals = vae_residuals(vae, features, mins, maxs, batch_size=2)
    assert residuals.shape == features.shape and residuals.dtype == torch.float32
    scaled = minmax_scale(features, mins, maxs)
    with torch.no_grad():
        vectors = scaled[3].reshape(4, -1).T  # (h*w, C)
        expected = scaled[3] - vae.reconstruct_mean(vectors).T.reshape(4, 3, 6)
    torch.testing.assert_close(residuals[3], expected, atol=1e-6, rtol=1e-6)
    for batch_size in (1, 5, 100):
        torch.testing.assert_close(
            vae_residuals(vae, features, mins, maxs, batch_size=batch_size),
            residuals,
            atol=1e-6,
            rtol=1e-6,
        )
    with pytest.raises(ValueError, match="batch_size"):
        vae_residuals(vae, features, mins, maxs, batch_size=0)


def test_residuals_in_parts_and_channels_last_equal_one_pass(generator, monkeypatch):
    # The network runs over parts of a batch's pixel rows and the rows are stored
    # channels-last: exactly the values of one pass over all pixels, NCHW order.
    features = (torch.rand(3, 5, 7, 6, generator=generator) * 3).half()
    vae, _ = train(features.float(), seed=0, n_steps=5)
    mins, maxs = minmax_scale_stats(features)
    monkeypatch.setattr(vae_module, "_RESIDUAL_ROWS", 10)  # 42 rows per image: five parts
    residuals = vae_residuals(vae, features, mins, maxs, batch_size=2)
    assert residuals.is_contiguous(memory_format=torch.channels_last)
    scaled = minmax_scale(features.float(), mins.float(), maxs.float())
    with torch.no_grad():
        rows = scaled.permute(0, 2, 3, 1).reshape(-1, 5)
        mean = vae.decode(vae.encode(rows)[0]).reshape(3, 7, 6, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(residuals, scaled - mean, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_a_device(generator, device):
    features = torch.rand(3, 4, 5, 5, generator=generator)
    vae, history = train(features, seed=0, n_steps=5, device=device)
    assert next(vae.parameters()).device.type == device
    residuals = vae_residuals(vae, features, *minmax_scale_stats(features))
    assert residuals.device == features.device and torch.isfinite(residuals).all()
    # Same initial weights on every device: they are drawn on the generator's device.
    cpu_init = PixelVAE(4, **SMALL, generator=torch.Generator().manual_seed(0))
    dev_init = PixelVAE(4, **SMALL, generator=torch.Generator().manual_seed(0)).to(device)
    for a, b in zip(cpu_init.parameters(), dev_init.parameters(), strict=True):
        assert torch.equal(a, b.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_matches_step_by_step_training(generator):
    # Features on the GPU take the captured-graph path; on the host, the same
    # steps run one op at a time with the same draws (a device generator
    # seeded from the same CPU generator), so the weights must agree.
    features = torch.rand(6, 8, 7, 7, generator=generator)
    settings = {"n_steps": 40, "pixels_per_step": 64, "device": "cuda"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns
        graphed, graphed_history = train(features.cuda(), seed=1, **settings)
        again, _ = train(features.cuda(), seed=1, **settings)
    eager, eager_history = train(features, seed=1, **settings)
    for a, b, c in zip(graphed.parameters(), again.parameters(), eager.parameters(), strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(graphed_history, eager_history, atol=1e-5, rtol=1e-4)
    assert graphed_history[-1] < graphed_history[0]


def test_training_module_is_importable_from_its_old_place():
    from skanomclust.nn.vae import train_pixel_vae as old_place

    assert old_place is train_pixel_vae


def test_forward_with_given_noise_equals_forward_drawing_it(generator):
    vae = PixelVAE(5, **SMALL, generator=generator)
    x = torch.rand(9, 5, generator=generator)
    drawn = vae(x, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(9, SMALL["latent_channels"], generator=torch.Generator().manual_seed(4))
    for a, b in zip(drawn, vae(x, noise=noise), strict=True):
        assert torch.equal(a, b)


def test_minmax_scale_into_a_channels_last_output_gives_the_same_values(generator):
    features = torch.rand(2, 5, 4, 3, generator=generator)
    stats = minmax_scale_stats(features)
    out = torch.empty_like(features, memory_format=torch.channels_last)
    result = minmax_scale(features, *stats, out=out)
    assert result.data_ptr() == out.data_ptr() and out.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(out, minmax_scale(features, *stats))
