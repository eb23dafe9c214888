"""Reading the image inputs of the first pipeline step: the data contract for images.

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
    used as they are. :meth:`ImageCollection.sizes` gives sizes after it.

Accepted collections (:func:`check_images`)
    - an array (n, H, W, C) with C in {1, 2, 3, 4}, or (n, H, W) grayscale;
    - a list (or 1-D array) of file paths, PIL images or 2-D/3-D arrays (sizes
      may differ);
    - a 2-D array (n, W): scikit-learn's tabular input, accepted so that the
      first step passes scikit-learn's estimator checks, read as n one-row
      grayscale images. The one exception to the rules above: a table is never
      rejected for its range or integer type (the checks feed standardised and
      int64 tables); such values reach the backbone unscaled, as float32.
      NaN and infinities are still rejected.

:func:`check_images` checks what it can before any backbone work: array values
and dtypes, and each file's header (it exists, Pillow identifies it, its mode
is allowed). Pixel values of files (e.g. a float TIFF outside [0, 1]) and data
cut off after a valid header are found when the image is decoded, or before
by :func:`read_header` with ``verify=True``, which the folder loader uses.
:class:`~skanomclust.TextureFeatureExtractor` runs scikit-learn's
``validate_data`` on 2-D inputs (arrays, nested lists, DataFrames) before
:func:`check_images`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch.nn import functional as F

__all__ = ["ImageCollection", "ImageReadError", "check_images", "decode_image", "read_header"]

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


class ImageCollection:
    """A validated, lazily read sequence of images.

    Parameters
    ----------
    items : list or numpy.ndarray
        The images, already checked by :func:`check_images`.
    kind : {"array", "list"}
        Whether ``items`` is one stacked array or a list of single images.
    headers : dict, optional
        ``{index: (height, width)}`` of the files, as read by :func:`check_images`.
    """

    def __init__(self, items, kind, headers=None):
        self.items = items
        self.kind = kind
        self.headers = {} if headers is None else headers

    def __len__(self):
        return len(self.items)

    def name(self, index: int) -> str:
        """How to refer to image ``index`` in an error message."""
        item = self.items[index]
        if _is_path(item):
            return f"image {index} ({os.fspath(item)!r})"
        return f"image {index}"

    def sizes(self) -> list[tuple[int, int]]:
        """Upright (height, width) of every image (reads file headers only)."""
        if self.kind == "array":
            shape = self.items.shape[1:3] if self.items.ndim > 2 else (1, self.items.shape[1])
            return [tuple(shape)] * len(self)
        out = []
        for index, item in enumerate(self.items):
            if _is_path(item):
                size = self.headers.get(index) or read_header(item, self.name(index))
            elif _is_pil(item):
                size = _upright_size(item, header_only=False)
            else:
                size = tuple(item.shape[:2]) if item.ndim > 1 else (1, item.shape[0])
            out.append(size)
        return out

    def decoded(self, index: int) -> np.ndarray:
        """Image ``index`` decoded by :func:`decode_image` (tables: unscaled values)."""
        if self.kind == "array":
            return _from_array(self.items[index], self.name(index), strict=self.items.ndim > 2)
        return decode_image(self.items[index], self.name(index))

    def iter_batches(
        self, batch_size: int, image_size: int, device="cpu"
    ) -> Iterator[torch.Tensor]:
        """Yield float32 tensors (B, 3, image_size, image_size)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield torch.cat(
                [_to_tensor(self.decoded(i), image_size, device) for i in range(start, stop)]
            )


def _to_tensor(image: np.ndarray, image_size: int, device) -> torch.Tensor:
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(image.astype(np.float32)).to(device) / 255.0
    else:
        tensor = torch.from_numpy(np.array(image, dtype=np.float32)).to(device)
    if tensor.ndim == 2:
        tensor = tensor[None, None].expand(-1, 3, -1, -1)
    else:
        tensor = tensor.permute(2, 0, 1)[None]
    if tuple(tensor.shape[-2:]) != (image_size, image_size):
        tensor = F.interpolate(
            tensor,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return tensor


def _check_stacked(array: np.ndarray) -> None:
    if array.shape[0] == 0:
        raise ValueError(f"Found array with 0 images (shape {array.shape}); need at least 1.")
    if array.ndim == 4 and array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected channels-last images (n, H, W, C) with C in (1, 2, 3, 4), got shape "
            f"{array.shape}. (Channels-first feature maps belong to later pipeline steps.)"
        )
    if 0 in array.shape[1:]:
        raise ValueError(f"Found images of size 0 (shape {array.shape}).")
    if array.ndim == 4:  # the values decode_image checks: alpha is dropped first
        array = array[..., :1] if array.shape[-1] <= 2 else array[..., :3]
    try:  # the whole array at once; image by image only to name the first bad one
        _check_values(array, "images", strict=array.ndim > 2)
    except ImageReadError:
        for index in range(len(array)):
            _check_values(array[index], f"image {index}", strict=array.ndim > 2)
        raise


def check_images(X) -> ImageCollection:
    """Validate the image input of the first step, reading file headers only.

    Parameters
    ----------
    X : array-like or list
        See the module docstring for the accepted forms.

    Returns
    -------
    images : ImageCollection

    Raises
    ------
    ValueError, TypeError, FileNotFoundError
        With a message naming the offending image.
    """
    if _is_path(X):
        raise TypeError(
            f"Expected a collection of images, got a single path {os.fspath(X)!r}; "
            "pass a list of paths (see skanomclust.datasets.load_texture_folder for folders)."
        )
    if hasattr(X, "__array__") and not isinstance(X, (list, tuple)):
        array = np.asarray(X)
        if array.dtype == object:
            return check_images(list(array))
        if array.ndim == 1 and array.dtype.kind in "US":  # an array of paths
            return check_images(array.tolist())
        if array.ndim not in (2, 3, 4):
            raise ValueError(
                f"Expected images as a (n, H, W, C) or (n, H, W) array, got shape {array.shape}"
            )
        _check_stacked(array)
        return ImageCollection(array, "array")
    if not isinstance(X, (list, tuple)):
        raise TypeError(
            "Expected images as a numpy array or a list of paths, PIL images or arrays; got "
            f"{type(X).__name__}"
        )
    if len(X) == 0:
        raise ValueError("Found an empty list of images; need at least 1.")
    items, headers = [], {}
    for index, item in enumerate(X):
        name = f"image {index}"
        if _is_path(item):
            name = f"image {index} ({os.fspath(item)!r})"
            if not Path(item).is_file():
                raise FileNotFoundError(f"{name} does not exist")
            headers[index] = read_header(item, name)
        elif isinstance(item, np.ndarray):
            _check_values(_channels(item, name), name)
        elif _is_pil(item):
            _check_mode(item.mode, name)
        else:
            raise TypeError(
                f"{name} is a {type(item).__name__}; expected a file path, a PIL image or a "
                "numpy array"
            )
        items.append(item)
    return ImageCollection(items, "list", headers)
