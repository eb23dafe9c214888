"""Decoding one image input of the first pipeline step: the data contract for images.

Every image, whether given as a file path, a PIL image or a numpy array, goes
through :func:`decode_image`, which applies the rules below and returns a
*decoded image*: a uint8 array (8-bit and 1-bit data) or a float32 array in
[0, 1] (everything else), of shape (H, W) for one channel or (H, W, 3) for
colour. The extractor divides uint8 by 255, repeats one channel to RGB and
resizes; so a picture gives the same tensor whether it is passed as a path, a
PIL image or its decoded array, which is what
:func:`~skanomclust.datasets.load_texture_folder` returns with
``load_images=True``.

Values: the white level is the type's, never guessed from the data
    - uint8 (PIL modes "L", "RGB", "P", ...): kept; white is 255.
    - bool (PIL mode "1"): kept as uint8 0 and 255.
    - uint16, any byte order (PIL modes "I;16", "I;16B", ...): divided by
      65535 to float32, whatever the largest value present (12-bit camera data
      stay dark; an array whose maximum is 125 is not read as 8-bit).
    - floats (PIL mode "F", float16/32/64 arrays): must already lie in [0, 1];
      kept as float32. Values outside [0, 1], NaN and infinities are rejected
      with an error naming the image and the range found (divide 8-bit values
      by 255, 16-bit ones by 65535).
    - any other integer type (signed, 32 or 64 bits, e.g. PIL mode "I" from
      an int32 TIFF, or numpy's default int64): rejected, naming the image and
      its range. These types have no standard white level and guessing one
      from the values read the same file differently from one image to the next;
      convert with ``astype(np.uint8)`` or ``astype(np.uint16)``, or divide by
      the white level.

Channels
    (H, W) and (H, W, 1) are one channel; (H, W, 2) is gray + alpha and
    (H, W, 4) RGB + alpha (or RGBX). Alpha is dropped, not composited onto a
    background: the colour stored under transparent pixels is used as it is.
    Other PIL modes (palette "P"/"PA", "CMYK", "YCbCr", "HSV", "LAB", "RGBa")
    are converted to RGB(A) by Pillow. Pillow reads 48-bit RGB files as 8 bits
    per channel; pass a uint16 array to keep 16 bits of colour.

Orientation
    Files and PIL images are turned upright by their EXIF Orientation tag with
    :func:`PIL.ImageOps.exif_transpose`, as image viewers show them; arrays are
    used as they are. :meth:`skanomclust._images.ImageCollection.sizes` gives sizes
    after it.

Collections of images (arrays, lists of paths) are checked and read in batches by
:mod:`skanomclust._images`, every image through :func:`decode_image`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
from PIL import ExifTags, Image, ImageOps

__all__ = ["ImageReadError", "decode_image", "read_header"]

# Modes whose pixels numpy reads directly with a meaning the rules above cover.
_DIRECT_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "RGBX", "I", "F"})
_ALPHA_MODES = frozenset({"PA", "RGBa", "La"})
_FIX = (
    "convert with astype(np.uint8) for 0-255 values or astype(np.uint16) for 0-65535, "
    "or divide by the white level for floats in [0, 1]"
)


class ImageReadError(ValueError):
    """An image that cannot be read or breaks the data contract.

    Parameters
    ----------
    name : str
        How the image is referred to (its index and path).
    reason : str
        What is wrong, a predicate without the name ("has ...", "cannot be read: ...");
        the loader lists it next to the path.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} {reason}")
        self.reason = reason


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def _is_pil(item) -> bool:
    return isinstance(item, Image.Image)


def _mode_note(mode) -> str:
    return "" if mode is None else f" (PIL mode {mode!r})"


def _check_mode(mode: str, name: str) -> None:
    # Rejected from the header already: no pixel of an "I" image is readable under the rules.
    if mode == "I":
        raise ImageReadError(
            name,
            "has 32-bit integer pixels (PIL mode 'I', e.g. an int32 TIFF): they have no "
            f"standard white level and it is not guessed from the values; {_FIX}.",
        )


def _check_values(array: np.ndarray, name: str, *, strict: bool = True, mode=None) -> None:
    """Raise if ``array``'s dtype or values break the contract (no copy is made)."""
    kind = array.dtype.kind
    if kind == "c":
        raise ImageReadError(name, f"has complex dtype {array.dtype}: complex data not supported")
    if kind not in "biuf":
        raise ImageReadError(name, f"has non-numeric dtype {array.dtype}")
    if array.size == 0:
        raise ImageReadError(name, f"is empty (shape {array.shape})")
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageReadError(name, "contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if strict and (low < 0.0 or high > 1.0):
            raise ImageReadError(
                name,
                f"has float pixel values in [{low:.6g}, {high:.6g}]{_mode_note(mode)}; float "
                "images must lie in [0, 1]: divide 8-bit values by 255 and 16-bit ones by "
                "65535 (or pass uint8/uint16 data); clip resampling overshoots to [0, 1].",
            )
    elif kind in "iu" and strict and not (kind == "u" and array.dtype.itemsize <= 2):
        low, high = int(array.min()), int(array.max())
        raise ImageReadError(
            name,
            f"has {array.dtype} pixel values in [{low}, {high}]{_mode_note(mode)}: only uint8, "
            "uint16, bool and floats in [0, 1] have a defined white level, and it is not "
            f"guessed from the values; {_FIX}.",
        )


def _channels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as (H, W) or (H, W, 3), alpha dropped (a view, no copy)."""
    if array.ndim == 1:  # one row, from a 2-D table or a list
        array = array[None, :]
    if array.ndim not in (2, 3):
        raise ImageReadError(name, f"has {array.ndim} dimensions; expected (H, W) or (H, W, C)")
    if array.ndim == 3:
        if array.shape[-1] not in (1, 2, 3, 4):
            raise ImageReadError(
                name,
                f"has shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
                "(channels last)",
            )
        # 1 -> gray; 2 -> gray + alpha; 4 -> RGB + alpha: keep the colour, drop the alpha.
        array = array[..., 0] if array.shape[-1] <= 2 else array[..., :3]
    return array


def _from_array(array: np.ndarray, name: str, *, strict: bool = True, mode=None) -> np.ndarray:
    """Decode one image array: uint8 or float32, (H, W) or (H, W, 3)."""
    array = _channels(array, name)
    _check_values(array, name, strict=strict, mode=mode)
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind == "u" and size == 1:
        return np.ascontiguousarray(array)
    if kind == "u" and size == 2:
        return array.astype(np.float32) / np.float32(65535)
    return np.array(array, dtype=np.float32)  # floats in [0, 1], or a table's raw values


@contextmanager
def _reading(name: str):
    """Pillow's errors (OSError, SyntaxError, ValueError, ...) as errors naming the image."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} does not exist") from None
    except Exception as exc:
        raise ImageReadError(name, f"cannot be read: {exc}") from exc


def _pil_pixels(image) -> np.ndarray:
    if image.mode in _DIRECT_MODES or image.mode.startswith("I;16"):
        return np.array(image)  # np.array, not asarray: a writeable copy for the caller
    alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return np.array(image.convert("RGBA" if alpha else "RGB"))  # the alpha is dropped next


def decode_image(item, name: str | None = None) -> np.ndarray:
    """Decode one image under the data contract of this module.

    Parameters
    ----------
    item : str, path-like, PIL.Image.Image or numpy.ndarray
        A file, a PIL image (not modified) or an array (H, W) or (H, W, C).
    name : str, optional
        How to name the image in error messages; by default its path, or "image".

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, 3), dtype uint8 or float32
        uint8 for 8-bit and 1-bit data, float32 in [0, 1] otherwise; upright
        (EXIF orientation applied) for files and PIL images.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ImageReadError
        A ValueError naming the image, if it cannot be read or breaks the contract.
    """
    if name is None:
        name = repr(os.fspath(item)) if _is_path(item) else "image"
    if isinstance(item, np.ndarray):
        return _from_array(item, name)
    if not (_is_path(item) or _is_pil(item)):
        raise TypeError(f"{name} is a {type(item).__name__}; expected a path, PIL image or array")
    with _reading(name):
        if _is_pil(item):
            _check_mode(item.mode, name)
            # exif_transpose returns a copy: the caller's image is not changed
            mode, pixels = item.mode, _pil_pixels(ImageOps.exif_transpose(item))
        else:
            _check_not_empty(item, name)
            with Image.open(item) as image:
                _check_mode(image.mode, name)
                ImageOps.exif_transpose(image, in_place=True)
                mode, pixels = image.mode, _pil_pixels(image)
    return _from_array(pixels, name, mode=mode)


def _upright_size(image, *, header_only: bool) -> tuple[int, int]:
    """(height, width) after EXIF orientation."""
    # A PNG's eXIf chunk may follow the pixel data, where only decoding finds it; a header
    # read does not decode, so such a (rare) PNG is sized as stored.
    if header_only and image.format == "PNG" and "exif" not in image.info:
        orientation = 1
    else:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    width, height = image.size
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _check_not_empty(path, name: str) -> None:
    # Pillow's "cannot identify image file" does not say why; an empty file is common.
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageReadError(name, "cannot be read: the file is empty (0 bytes)")


def _needs_decoding(image, path) -> bool:
    """Whether only decoding can check this file: float pixels, or a JPEG cut short."""
    if image.mode == "F":  # values outside [0, 1] are rejected (rare files: cheap)
        return True
    if image.format != "JPEG":
        return False
    with open(path, "rb") as stream:  # a complete JPEG ends with its EOI marker
        stream.seek(max(0, os.path.getsize(path) - 64))
        return not stream.read().rstrip(b"\x00").endswith(b"\xff\xd9")


def read_header(path, name: str | None = None, *, verify: bool = False) -> tuple[int, int]:
    """Check a file's header and return its upright (height, width), pixels not decoded.

    Parameters
    ----------
    path : str or path-like
    name : str, optional
        How to name the image in error messages; by default its path.
    verify : bool, default=False
        Also check what the header cannot show: Pillow's ``verify`` (for PNG it
        reads every chunk and checks its checksum, which finds truncated and
        corrupted files), and a decoding of the pixels of float images (whose
        values must lie in [0, 1]) and of JPEG files that do not end with their
        end-of-image marker (cut off, or followed by other data).

    Returns
    -------
    size : tuple of int
        (height, width) after EXIF orientation.

    Raises
    ------
    FileNotFoundError, ImageReadError
    """
    if name is None:
        name = repr(os.fspath(path))
    with _reading(name):
        _check_not_empty(path, name)
        with Image.open(path) as image:
            _check_mode(image.mode, name)
            size = _upright_size(image, header_only=True)
            if verify:
                if _needs_decoding(image, path):
                    decode_image(path, name)
                image.verify()
    return size
