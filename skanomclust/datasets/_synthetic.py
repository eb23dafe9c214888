"""Procedural texture images with pixel-annotated defects of several types."""

from functools import lru_cache
from numbers import Integral

import numpy as np
from scipy import ndimage
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_synthetic_textures"]

DEFECT_TYPES = ("scratch", "spot", "hole", "stain", "crack")
TEXTURES = ("fabric", "stone", "wood")

# Base colours (RGB in [0, 1]) of each texture family; every image jitters them.
_FAMILY_COLOURS = {
    "fabric": ((0.22, 0.32, 0.52), (0.78, 0.76, 0.70)),  # warp (indigo), weft (ecru)
    "stone": ((0.30, 0.29, 0.28), (0.74, 0.71, 0.66)),  # dark and light minerals
    "wood": ((0.50, 0.31, 0.16), (0.80, 0.62, 0.42)),  # late wood, early wood
}
# Stain tints: luminance-neutral colour directions (coffee, rust, oil, ink).
_STAIN_TINTS = np.array(
    [[1.25, 0.95, 0.55], [1.40, 0.80, 0.55], [0.95, 1.15, 0.60], [0.70, 0.85, 1.45]]
)
_LUMA = np.array([0.299, 0.587, 0.114])


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)


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


# --------------------------------------------------------------------------- shapes
def _blob(rng, size, radius, roughness=0.25, ragged=0.1):
    """Normalised radial distance (< 1 inside) of an irregular, slightly elongated blob.

    ``roughness`` bends the outline with a few low harmonics, ``ragged`` adds small-scale
    irregularity of the edge.
    """
    margin = min(radius, size / 4)
    cy, cx = rng.uniform(margin, size - margin, size=2)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    theta = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.6, 1.0)
    c, s = np.cos(theta), np.sin(theta)
    a = c * (x - cx) + s * (y - cy)
    b = (c * (y - cy) - s * (x - cx)) / aspect
    phi = np.arctan2(b, a)
    wobble = np.ones_like(phi)
    for k in (2, 3):
        wobble += roughness / k * rng.standard_normal() * np.cos(k * phi + rng.uniform(0, 6.3))
    edge = 1.0 + ragged * _smooth_noise(rng, (size, size), max(1.0, 0.2 * radius))
    return np.hypot(a, b) / (radius * np.clip(wobble, 0.5, None)) * edge


def _stroke(points, size, values):
    """Distance to a polyline and, per pixel, ``values`` at the nearest point of the line."""
    pts = np.asarray(points, dtype=float)
    # Resample densely so that the rasterised centre line has no gaps.
    seg = np.hypot(*np.diff(pts, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    fine = np.linspace(0.0, arc[-1], max(int(arc[-1] * 3), 2))
    rows = np.rint(np.interp(fine, arc, pts[:, 0])).astype(int)
    cols = np.rint(np.interp(fine, arc, pts[:, 1])).astype(int)
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    if not keep.any():
        return np.full((size, size), np.inf), np.zeros((size, size))
    along = np.zeros((size, size))
    along[rows[keep], cols[keep]] = np.interp(fine, arc, values)[keep]
    centre = np.zeros((size, size), dtype=bool)
    centre[rows[keep], cols[keep]] = True
    dist, (ir, ic) = ndimage.distance_transform_edt(~centre, return_indices=True)
    return dist, along[ir, ic]


def _random_walk(rng, start, direction, n_steps, step, jag):
    pts = [np.asarray(start, dtype=float)]
    heading = direction
    for _ in range(n_steps):
        heading += jag * rng.standard_normal() + 0.3 * (direction - heading)
        pts.append(pts[-1] + step * np.array([np.sin(heading), np.cos(heading)]))
    return np.array(pts)


# --------------------------------------------------------------------------- defects
def _luma(img):
    return img @ _LUMA


def _scratch(rng, img, scale):
    size = img.shape[0]
    length = rng.uniform(0.35, 0.85) * size
    heading = rng.uniform(0, 2 * np.pi)
    mid = rng.uniform(0.25 * size, 0.75 * size, size=2)
    d = np.array([np.sin(heading), np.cos(heading)])
    normal = np.array([-d[1], d[0]])
    bend = rng.uniform(-0.12, 0.12) * length
    t = np.linspace(-0.5, 0.5, 40)
    pts = mid + np.outer(t * length, d) + np.outer((1 - 4 * t**2) * bend, normal)
    width = scale * rng.uniform(0.7, 1.8)
    dist, along = _stroke(pts, size, values=t + 0.5)
    coverage = np.clip(width / 2.0 + 0.5 - dist, 0.0, 1.0)
    # The scratch fades in and out along its length.
    envelope = 0.45 + 0.55 * np.sin(np.pi * np.clip(along, 0, 1)) ** 0.5
    alpha = coverage * envelope * rng.uniform(0.25, 0.85)
    target = 0.97 if rng.random() < 0.6 else 0.05
    img = img + alpha[..., None] * (target - img)
    return img, coverage >= 0.5


def _spot(rng, img, scale):
    size = img.shape[0]
    radius = scale * rng.uniform(2.5, 6.5)
    d = _blob(rng, size, radius, roughness=0.2, ragged=0.08)
    alpha = np.clip((1.0 - d) * radius / (0.8 * scale) + 0.5, 0.0, 1.0)
    strength = rng.uniform(0.4, 0.9)
    tint = np.array([0.30, 0.22, 0.14]) * rng.uniform(0.5, 1.2)
    img = img + (strength * alpha)[..., None] * (tint - img)
    return img, d <= 1.0


def _hole(rng, img, scale):
    size = img.shape[0]
    radius = scale * rng.uniform(5.0, 14.0)
    d = _blob(rng, size, radius, roughness=0.3, ragged=0.12)
    inside = d <= 1.0
    # Sharp edge (half a pixel of anti-aliasing) with a thin frayed, brighter rim.
    alpha = np.clip((1.0 - d) * radius / (0.5 * scale), 0.0, 1.0)
    rim = np.exp(-(((d - 1.0) * radius / (1.2 * scale)) ** 2)) * (d > 1.0)
    backing = rng.uniform(0.02, 0.25) * (1.0 + 0.3 * rng.standard_normal(img.shape[:2]))
    backing = ndimage.gaussian_filter(backing, 0.8)[..., None] * np.array([1.0, 0.95, 0.9])
    depth = rng.uniform(0.75, 1.0)
    img = img * (1.0 + 0.25 * rim)[..., None]
    img = img + (depth * alpha)[..., None] * (backing - img)
    return img, inside


def _stain(rng, img, scale):
    size = img.shape[0]
    radius = scale * rng.uniform(9.0, 22.0)
    d = _blob(rng, size, radius, roughness=0.3, ragged=0.1)
    edge = rng.uniform(0.25, 0.5)
    alpha = np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0)
    strength = rng.uniform(0.35, 0.9)
    tint = _STAIN_TINTS[rng.integers(len(_STAIN_TINTS))]
    tint = tint / (tint @ _LUMA)  # keep luminance: only the hue changes ...
    lum = _luma(img)[..., None]
    stained = lum * tint * rng.uniform(0.8, 1.0)  # ... and a little darker, texture kept
    if rng.random() < 0.5:  # dried rim
        stained = stained * (1.0 - 0.25 * np.exp(-(((d - 0.9) / 0.12) ** 2)))[..., None]
    img = img + (strength * alpha)[..., None] * (stained - img)
    return img, alpha >= 0.5


def _crack(rng, img, scale):
    size = img.shape[0]
    start = rng.uniform(0.2 * size, 0.8 * size, size=2)
    heading = rng.uniform(0, 2 * np.pi)
    step = 2.5 * scale
    n_steps = int(rng.uniform(0.25, 0.55) * size / step)
    main = _random_walk(rng, start, heading, n_steps, step, jag=0.45)
    strokes = [(main, np.linspace(1.0, 0.35, len(main)))]
    for _ in range(rng.integers(1, 4)):
        at = rng.integers(len(main) // 4, len(main) - 1)
        branch_dir = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch = _random_walk(
            rng, main[at], branch_dir, max(2, int(rng.uniform(0.2, 0.5) * n_steps)), step, jag=0.5
        )
        strokes.append((branch, np.linspace(0.7, 0.25, len(branch))))
    width = scale * rng.uniform(1.0, 2.0)
    coverage = np.zeros(img.shape[:2])
    for pts, taper in strokes:
        dist, thickness = _stroke(pts, size, values=taper)
        coverage = np.maximum(coverage, np.clip(width * thickness / 2.0 + 0.5 - dist, 0.0, 1.0))
    strength = rng.uniform(0.45, 0.9)
    img = img * (1.0 - strength * coverage)[..., None]
    return img, coverage >= 0.5


_DEFECT_FUNCS = {
    "scratch": _scratch,
    "spot": _spot,
    "hole": _hole,
    "stain": _stain,
    "crack": _crack,
}


# --------------------------------------------------------------------------- public
def make_synthetic_textures(
    n_normal=60,
    n_per_defect=15,
    *,
    defect_types=DEFECT_TYPES,
    texture="fabric",
    image_size=128,
    random_state=None,
):
    """Generate texture images with pixel-annotated defects of several types.

    A small, fully procedural stand-in for one texture category of an anomaly
    detection benchmark (such as a category of MVTec AD): every image shows the
    same kind of material with random per-image variation of phase, orientation,
    scale and colour, and the defective images each carry exactly one defect
    of one type at a random position with random size and intensity (sometimes
    subtle). Nothing is downloaded; only NumPy and SciPy are used and the output
    is a deterministic function of ``random_state``.

    Parameters
    ----------
    n_normal : int, default=60
        Number of defect-free images (class ``"good"``, target 0).
    n_per_defect : int, default=15
        Number of images of each defect type.
    defect_types : sequence of str, default=("scratch", "spot", "hole", "stain", "crack")
        Defect types to include, in the order of their target values 1, 2, ...
        Available types:

        - ``"scratch"``: a thin, long, slightly curved bright or dark line at a
          random orientation that fades in and out along its length;
        - ``"spot"``: a small, roughly round, dark brownish blob;
        - ``"hole"``: a larger irregular region where the texture is missing,
          dark with a sharp edge and a thin frayed rim;
        - ``"stain"``: a soft-edged region whose hue changes (coffee, rust, oil
          or ink tints) while the texture stays visible;
        - ``"crack"``: a jagged, branching, dark line that tapers off.
    texture : {"fabric", "stone", "wood"}, default="fabric"
        Texture family shared by all images: a plain-weave fabric with indigo
        warp and ecru weft threads, a granite-like grainy stone made of
        filtered noise, or planed wood with warped growth rings.
    image_size : int, default=128
        Height and width of the square images. Texture and defect sizes scale
        with it (the default look is defined at 128 pixels); at least 32.
    random_state : int, RandomState instance or None, default=None
        Seed or random number generator; pass an int for reproducible output
        (the same seed gives byte-identical arrays).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        images : ndarray of shape (n_images, image_size, image_size, 3), dtype uint8
            RGB images in a random (but seeded) order, not grouped by class.
        masks : ndarray of shape (n_images, image_size, image_size), dtype bool
            Defect masks; all False for the normal images and non-empty for
            every defective image.
        target : ndarray of shape (n_images,), dtype int64
            Class index of each image into ``target_names``; 0 is ``"good"``.
        target_names : list of str
            ``["good", *defect_types]``.
        DESCR : str
            Short description of the data set.

    Raises
    ------
    ValueError
        If a defect type is unknown or repeated, the texture is unknown, a
        count is not a non-negative integer, fewer than two images would be
        generated, or ``image_size`` is smaller than 32.

    Examples
    --------
    >>> from skanomclust.datasets import make_synthetic_textures
    >>> data = make_synthetic_textures(n_normal=4, n_per_defect=2, image_size=64,
    ...                                random_state=0)
    >>> data.images.shape, data.images.dtype
    ((14, 64, 64, 3), dtype('uint8'))
    >>> data.target_names
    ['good', 'scratch', 'spot', 'hole', 'stain', 'crack']
    >>> has_defect = data.masks.any(axis=(1, 2))
    >>> bool(has_defect[data.target == 0].any()), bool(has_defect[data.target > 0].all())
    (False, True)
    """
    n_normal = _check_count(n_normal, "n_normal")
    n_per_defect = _check_count(n_per_defect, "n_per_defect")
    if isinstance(defect_types, str):
        defect_types = (defect_types,)
    defect_types = tuple(defect_types)
    unknown = [d for d in defect_types if d not in DEFECT_TYPES]
    if unknown:
        raise ValueError(
            f"Unknown defect type(s) {unknown}; valid types are {list(DEFECT_TYPES)}."
        )
    if len(set(defect_types)) != len(defect_types):
        raise ValueError(f"defect_types contains duplicates: {list(defect_types)}.")
    if texture not in TEXTURES:
        raise ValueError(f"Unknown texture {texture!r}; valid textures are {list(TEXTURES)}.")
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}.")
    image_size = int(image_size)
    n_images = n_normal + n_per_defect * len(defect_types)
    if n_images < 2:
        raise ValueError(f"At least 2 images are needed, got {n_images}.")

    rs = check_random_state(random_state)
    # One independent stream per image: the images do not depend on each other's draws.
    seeds = rs.randint(0, 2**31 - 1, size=n_images + 1)
    target = np.repeat(
        np.arange(len(defect_types) + 1), [n_normal] + [n_per_defect] * len(defect_types)
    )
    order = np.random.default_rng(seeds[-1]).permutation(n_images)
    target = target[order].astype(np.int64)

    scale = image_size / 128.0
    texture_func = _TEXTURE_FUNCS[texture]
    images = np.empty((n_images, image_size, image_size, 3), dtype=np.uint8)
    masks = np.zeros((n_images, image_size, image_size), dtype=bool)
    for i, label in enumerate(target):
        rng = np.random.default_rng(seeds[i])
        img = texture_func(rng, image_size, scale)
        # Uneven illumination and overall exposure vary from image to image.
        light = 1.0 + 0.06 * _smooth_noise(rng, (image_size, image_size), 30 * scale)
        img = img * (light * rng.uniform(0.9, 1.1))[..., None]
        if label > 0:
            for _ in range(10):  # redraw in the rare case the defect left the image
                new, mask = _DEFECT_FUNCS[defect_types[label - 1]](rng, img, scale)
                if mask.sum() >= 3:
                    img = new
                    break
            masks[i] = mask
        img = img + rng.normal(0.0, 0.012, size=img.shape)  # sensor noise
        images[i] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    counts = ", ".join(
        f"{name} ({n})"
        for name, n in zip(
            ["good", *defect_types],
            np.bincount(target, minlength=len(defect_types) + 1),
            strict=True,
        )
    )
    descr = (
        f"Synthetic {texture} texture images ({n_images} images of {image_size}x{image_size} "
        f"RGB pixels) generated by skanomclust.datasets.make_synthetic_textures.\n"
        f"Classes: {counts}.\nEach defective image has one defect and a boolean pixel mask; "
        "normal images have empty masks."
    )
    return Bunch(
        images=images,
        masks=masks,
        target=target,
        target_names=["good", *defect_types],
        DESCR=descr,
    )
