"""The procedural textures of ``make_synthetic_textures``: fabric, stone and wood.

Split from :mod:`skanomclust.datasets._synthetic`: each texture draws one image
from a random generator, out of smooth periodic noise (also used for the defects'
edges and the images' uneven lighting) and a jittered pair of family colours.
"""

from functools import lru_cache

import numpy as np
from scipy import ndimage

TEXTURES = ("fabric", "stone", "wood")

# Base colours (RGB in [0, 1]) of each texture family; every image jitters them.
_FAMILY_COLOURS = {
    "fabric": ((0.22, 0.32, 0.52), (0.78, 0.76, 0.70)),  # warp (indigo), weft (ecru)
    "stone": ((0.30, 0.29, 0.28), (0.74, 0.71, 0.66)),  # dark and light minerals
    "wood": ((0.50, 0.31, 0.16), (0.80, 0.62, 0.42)),  # late wood, early wood
}


@lru_cache(maxsize=8)
def _squared_frequencies(shape):
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return fy**2 + fx**2


def _smooth_noise(rng, shape, sigma):
    """White noise low-pass filtered with a periodic Gaussian, zero mean and unit std.

    The filter is applied in the Fourier domain, so its cost does not grow with ``sigma``.
    """
    spectrum = np.fft.rfft2(rng.standard_normal(shape))
    spectrum *= np.exp(-2.0 * (np.pi * sigma) ** 2 * _squared_frequencies(shape))
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=shape)
    return noise / (noise.std() + 1e-12)


def _grid(size, angle, offset=(0.0, 0.0)):
    """Pixel coordinates rotated by ``angle`` (radians): ``u`` across, ``v`` along."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    c, s = np.cos(angle), np.sin(angle)
    u = c * x + s * y + offset[0]
    v = -s * x + c * y + offset[1]
    return u, v


def _palette(rng, family, tint=0.03, own=0.02):
    """The family's two colours with a shared per-image tint and a small independent jitter."""
    shared = rng.uniform(0.9, 1.1) * (1.0 + tint * rng.standard_normal(3))
    return [
        np.clip(np.asarray(c) * shared * (1.0 + own * rng.standard_normal(3)), 0.0, 1.0)
        for c in _FAMILY_COLOURS[family]
    ]


# --------------------------------------------------------------------------- textures
def _fabric(rng, size, scale):
    """2/1 twill weave: each warp thread floats over two weft threads, then under one."""
    period = scale * rng.uniform(7.5, 9.5)
    angle = np.deg2rad(rng.uniform(-8.0, 8.0))
    u, v = _grid(size, angle, rng.uniform(0, 3 * period, size=2))
    # Threads are not perfectly straight: slow lateral wander of both thread systems.
    u += 0.6 * scale * _smooth_noise(rng, (size, size), 6 * scale)
    v += 0.6 * scale * _smooth_noise(rng, (size, size), 6 * scale)
    fu, fv = u / period, v / period
    iu, iv = np.floor(fu).astype(int), np.floor(fv).astype(int)
    fu -= iu
    fv -= iv
    phase = (iu + iv) % 3
    warp_on_top = phase != 0
    # Round yarn cross-section times the arch of the float over the crossed threads.
    warp_h = np.sqrt(np.sin(np.pi * fu)) * (0.5 + 0.5 * np.sin(np.pi * (phase - 1 + fv) / 2))
    weft_h = np.sqrt(np.sin(np.pi * fv)) * (0.5 + 0.5 * np.sin(np.pi * fu))
    height = np.where(warp_on_top, warp_h, weft_h)
    # Per-thread thickness/brightness irregularity (slubs) and fibres along each thread.
    warp_gain = 1.0 + 0.07 * rng.standard_normal(64)
    weft_gain = 1.0 + 0.07 * rng.standard_normal(64)
    gain = np.where(warp_on_top, warp_gain[iu % 64], weft_gain[iv % 64])
    fibres = rng.standard_normal((64, 64))
    across = np.where(warp_on_top, u, v) * (1.6 / scale)
    along = np.where(warp_on_top, v, u + 17 * period) * (0.15 / scale)
    fib = ndimage.map_coordinates(fibres, [across, along], order=1, mode="grid-wrap")
    warp_col, weft_col = _palette(rng, "fabric", tint=0.04, own=0.04)
    colour = np.where(warp_on_top[..., None], warp_col, weft_col)
    shade = (0.3 + 0.7 * height) * gain * (1.0 + 0.12 * fib)
    return colour * shade[..., None]


def _stone(rng, size, scale):
    """Granite-like stone: multi-scale filtered noise plus scattered mineral grains."""
    shape = (size, size)
    k = scale * rng.uniform(0.85, 1.2)
    weights = np.array([0.45, 0.35, 0.5]) * rng.uniform(0.8, 1.2, size=3)
    field = (
        weights[0] * _smooth_noise(rng, shape, 0.8 * k)
        + weights[1] * _smooth_noise(rng, shape, 2.5 * k)
        + weights[2] * _smooth_noise(rng, shape, 7.0 * k)
    )
    mix = 1.0 / (1.0 + np.exp(-1.6 * field))
    dark, light = _palette(rng, "stone", tint=0.02)
    img = dark + mix[..., None] * (light - dark)
    # Sparse grains: small light and dark specks of a few pixels.
    grains = np.zeros(shape)
    n_grains = int(rng.uniform(0.012, 0.02) * size * size / scale**2)
    rows, cols = rng.integers(0, size, size=(2, n_grains))
    grains[rows, cols] = rng.choice([-1.0, 1.0], size=n_grains, p=[0.6, 0.4])
    grains = ndimage.gaussian_filter(grains, 0.7 * scale, mode="wrap") * (2 * np.pi * scale**2)
    img = img * (1.0 + 0.35 * np.clip(grains, -1.0, 1.0))[..., None]
    return img


def _wood(rng, size, scale):
    """Planed wood: gently warped growth rings and fine pores along the grain."""
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    u, v = _grid(size, angle, rng.uniform(0, 500, size=2))
    period = scale * rng.uniform(10.0, 15.0)
    # Rings bend slowly (a large-scale warp) and drift across the board (a slight curvature).
    warp = period * (
        0.55 * _smooth_noise(rng, (size, size), 25 * scale)
        + rng.uniform(-1.5, 1.5) * ((v - v.mean()) / size) ** 2
    )
    ring = (u + warp) / period
    frac = ring - np.floor(ring)
    # Slow early wood brightening, quick transition into the darker late wood.
    profile = np.where(frac < 0.75, frac / 0.75, (1.0 - frac) / 0.25) ** 1.5
    pores = rng.standard_normal((128, 256))
    streaks = ndimage.map_coordinates(
        pores, [(u + warp) * 1.2 / scale, v * 0.05 / scale], order=1, mode="grid-wrap"
    )
    late, early = _palette(rng, "wood")
    mix = np.clip(0.9 * profile + 0.05 + 0.15 * streaks, 0.0, 1.0)
    return late + mix[..., None] * (early - late)


_TEXTURE_FUNCS = {"fabric": _fabric, "stone": _stone, "wood": _wood}
