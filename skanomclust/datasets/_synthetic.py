"""Procedural texture images with pixel-annotated defects of several types.

:func:`make_synthetic_textures` draws each image's texture
(:mod:`~skanomclust.datasets._textures`) and its defect
(:mod:`~skanomclust.datasets._defects`) from a seed of its own.
"""

from numbers import Integral

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._defects import _DEFECT_FUNCS, DEFECT_TYPES
from ._textures import _TEXTURE_FUNCS, TEXTURES, _smooth_noise

__all__ = ["make_synthetic_textures"]


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)


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
