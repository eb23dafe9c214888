"""The defects of ``make_synthetic_textures``: scratches, spots, holes, stains and cracks.

Split from :mod:`skanomclust.datasets._synthetic`: each defect is drawn onto a
texture image at a random place, size and strength, and returns the image with
its pixel mask; the shapes (blobs, strokes, random walks) are built here too.
"""

import numpy as np
from scipy import ndimage

from ._textures import _smooth_noise

DEFECT_TYPES = ("scratch", "spot", "hole", "stain", "crack")

# Stain tints: luminance-neutral colour directions (coffee, rust, oil, ink).
_STAIN_TINTS = np.array(
    [[1.25, 0.95, 0.55], [1.40, 0.80, 0.55], [0.95, 1.15, 0.60], [0.70, 0.85, 1.45]]
)
_LUMA = np.array([0.299, 0.587, 0.114])


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
