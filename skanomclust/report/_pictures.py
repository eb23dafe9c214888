"""The report's pictures: thumbnails with the anomaly region outlined, heat maps, originals.

Every image is decoded by :func:`skanomclust._image_decoding.decode_image` (the package's one
decoder, so a thumbnail shows what the method saw: EXIF orientation applied, 16-bit
data scaled the same way). Per image three JPEG pictures are made:

- the thumbnail, its shorter side :data:`THUMB_SHORT` pixels and its longer side at
  most :data:`THUMB_LONG` (aspect ratio kept, the whole image shown), with the boundary
  of the anomalous region drawn on it;
- the anomaly map at the same size, in the "inferno" colours on a scale shared by all
  images, so that maps can be compared across the page;
- for images given as arrays (no file to link to), the plain image at up to
  :data:`ORIGINAL_LONG` pixels for the enlarged view. Files are shown from where they
  are instead, at full size.

:class:`PictureStore` puts them either into the page (data URIs: one file to mail) or,
for large runs, into a folder beside it, which keeps the HTML small and lets the
browser load only the pictures scrolled into view.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

THUMB_SHORT = 224
THUMB_LONG = 320
ORIGINAL_LONG = 768
OUTLINE_COLOUR = (0, 230, 255)  # cyan: stands out on the grey, brown and blue textures

# Matplotlib's "inferno" colour map sampled at 17 points (dark = normal, bright = anomalous).
_INFERNO = np.array(
    [
        (0, 0, 4),
        (11, 7, 36),
        (33, 12, 74),
        (61, 9, 101),
        (87, 16, 110),
        (113, 25, 110),
        (138, 34, 106),
        (163, 44, 97),
        (188, 55, 84),
        (210, 70, 68),
        (228, 90, 49),
        (241, 115, 29),
        (249, 142, 9),
        (252, 172, 17),
        (249, 203, 53),
        (242, 234, 105),
        (252, 255, 164),
    ],
    dtype=np.float64,
)
LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_INFERNO)), c) for c in _INFERNO.T],
    axis=1,
).astype(np.uint8)


def thumbnail_shape(height, width):
    """Thumbnail (height, width): shorter side ``THUMB_SHORT``, longer at most ``THUMB_LONG``.

    Small images are enlarged so that all thumbnails have about the same height;
    elongated ones keep their shape (a wide strip stays wide, it is not squeezed
    into a square box).
    """
    scale = min(THUMB_SHORT / min(height, width), THUMB_LONG / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_uint8(image):
    """A decoded image (uint8 or float in [0, 1], gray or RGB) as uint8, channels kept."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image


def to_rgb8(image):
    """A decoded image (uint8 or float in [0, 1], gray or RGB) as an RGB uint8 array."""
    image = to_uint8(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def resize(picture, shape):
    """``picture`` (uint8, gray or RGB) resized to ``shape`` (height, width), bilinear.

    A gray picture is resized before it is made RGB (:func:`to_rgb8`): the
    same pixels for a third of the work.
    """
    if picture.shape[:2] == tuple(shape):
        return picture
    image = Image.fromarray(picture).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR, reducing_gap=2.0
    )
    return np.asarray(image)


def resize_map(amap, shape):
    """An anomaly map (feature resolution) upsampled to ``shape``, bilinear.

    The map covers the whole image (the features are computed on the resized
    image), so it is stretched to the picture whatever their aspect ratios.
    """
    image = Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def outline(picture, amap, threshold, colour=OUTLINE_COLOUR):
    """``picture`` with the boundary of ``amap > threshold`` drawn 2 pixels wide.

    The line lies on the region's own boundary pixels and one pixel outside, so
    that a region of one pixel is still visible and the inside stays uncovered.
    """
    region = amap > threshold
    if not region.any():
        return picture
    edge = region & ~_erode(region)
    edge |= _dilate(edge) & ~region
    out = picture.copy()
    out[edge] = colour
    return out


def _erode(mask):
    """Binary erosion by the 4-neighbour cross, outside the picture counting as background.

    The same as ``scipy.ndimage.binary_erosion(mask, border_value=0)``, written
    with slices: about 40 times faster on a thumbnail, where scipy's general
    routine took as long as encoding the picture.
    """
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (
        mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    )
    return inner


def _dilate(mask):
    """Binary dilation by the 4-neighbour cross (``scipy.ndimage.binary_dilation``)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def heat_map(amap, vmin, vmax):
    """An anomaly map in the inferno colours, ``vmin`` black and ``vmax`` pale yellow."""
    scale = 255.0 / max(vmax - vmin, 1e-12)
    index = np.clip((amap - vmin) * scale, 0.0, 255.0)
    return LUT[np.rint(index, out=index).astype(np.uint8)]


def colour_scale(anomaly_maps, threshold, max_maps=400):
    """The shared heat-map scale (vmin, vmax): low and high quantiles of the map values.

    Computed on at most ``max_maps`` evenly spaced maps, which keeps it cheap for
    memory-mapped maps of large runs. ``vmax`` stays above the region threshold, so
    outlined pixels are bright on the heat map too.
    """
    n = len(anomaly_maps)
    chosen = np.unique(np.linspace(0, n - 1, min(n, max_maps)).round().astype(np.intp))
    values = np.concatenate(
        [np.asarray(anomaly_maps[i], dtype=np.float32).ravel() for i in chosen]
    )
    vmin = float(np.quantile(values, 0.01))
    vmax = float(max(np.quantile(values, 0.999), threshold * 1.05, vmin + 1e-6))
    return vmin, vmax


def jpeg(picture, quality=85):
    """JPEG bytes; 4:4:4 chroma so that the thin coloured outline stays sharp.

    Not Huffman-optimised: that made the files about 10% smaller but took 1.5-3
    times as long to encode, and Pillow then encodes into a buffer of one byte
    per pixel, which a grainy texture at this quality can overflow ("Suspension
    not allowed here").
    """
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def render(item, amap, threshold, vmin, vmax, name):
    """The pictures of one image: outlined thumbnail, heat map, and (for arrays) the image.

    Returns
    -------
    pictures : dict
        ``thumb`` and ``heat`` (JPEG bytes), ``original`` (JPEG bytes or None for a
        file, which is linked instead), ``width`` and ``height`` of the thumbnail,
        and ``size``, the image's own (width, height).
    """
    from .._image_decoding import decode_image

    image = to_uint8(decode_image(item, name))
    shape = thumbnail_shape(*image.shape[:2])
    picture = to_rgb8(resize(image, shape))
    big_map = resize_map(amap, shape)
    original = None
    if not isinstance(item, (str, os.PathLike)):
        height, width = image.shape[:2]
        scale = min(1.0, ORIGINAL_LONG / max(height, width))
        original = jpeg(to_rgb8(resize(image, (round(height * scale), round(width * scale)))), 90)
    return {
        "thumb": jpeg(outline(picture, big_map, threshold)),
        "heat": jpeg(heat_map(big_map, vmin, vmax), 80),
        "original": original,
        "width": shape[1],
        "height": shape[0],
        "size": (image.shape[1], image.shape[0]),
    }


class PictureStore:
    """Where the pictures go: into the page, or files in a folder beside it.

    Parameters
    ----------
    html_path : pathlib.Path
        The report being written; the folder is its sibling ``<stem>_files``.
    embed : bool
        Data URIs in the page (True) or JPEG files in the folder (False).

    Attributes
    ----------
    folder : pathlib.Path or None
        The final folder (files mode).
    """

    def __init__(self, html_path, embed):
        self.embed = embed
        self.folder = None if embed else html_path.with_name(f"{html_path.stem}_files")
        self._staging = None
        if not embed:
            # Written next to the final place, moved there once complete (like the HTML).
            self._staging = html_path.with_name(f".{html_path.stem}_files.tmp-{os.getpid()}")
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging.mkdir(parents=True)

    def put(self, index, kind, data):
        """Store one picture; return the URL the page uses for it."""
        if data is None:
            return None
        if self.embed:
            return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        name = f"{index}{kind}.jpg"
        (self._staging / name).write_bytes(data)
        return f"{self.folder.name}/{name}"

    def commit(self):
        """Move the finished folder into place (replacing an older one)."""
        if self._staging is None:
            return
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self._staging.rename(self.folder)
        self._staging = None

    def discard(self):
        """Remove the unfinished folder (after an error)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def file_url(item):
    """A ``file://`` URL of an image file, shown at full size in the enlarged view."""
    return Path(item).resolve().as_uri()
