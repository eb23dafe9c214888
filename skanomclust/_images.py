"""Reading the image inputs of the first pipeline step: collections checked, read in batches.

:func:`check_images` validates what the first step is given and returns an
:class:`ImageCollection`, which decodes each image with
:func:`~skanomclust._image_decoding.decode_image` (the data contract for one image,
in :mod:`skanomclust._image_decoding`) and yields resized float32 tensors.

Accepted collections (:func:`check_images`)
    - an array (n, H, W, C) with C in {1, 2, 3, 4}, or (n, H, W) grayscale;
    - a list (or 1-D array) of file paths, PIL images or 2-D/3-D arrays (sizes
      may differ);
    - a 2-D array (n, W): scikit-learn's tabular input, accepted so that the
      first step passes scikit-learn's estimator checks, read as n one-row
      grayscale images. The one exception to the rules of decoding: a table is
      never rejected for its range or integer type (the checks feed standardised
      and int64 tables); such values reach the backbone unscaled, as float32.
      NaN and infinities are still rejected.

:func:`check_images` checks what it can before any backbone work: array values
and dtypes, and each file's header (it exists, Pillow identifies it, its mode
is allowed). Pixel values of files (e.g. a float TIFF outside [0, 1]) and data
cut off after a valid header are found when the image is decoded, or before
by :func:`~skanomclust._image_decoding.read_header` with ``verify=True``, which
the folder loader uses.
:class:`~skanomclust.TextureFeatureExtractor` runs scikit-learn's
``validate_data`` on 2-D inputs (arrays, nested lists, DataFrames) before
:func:`check_images`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ._image_decoding import (
    ImageReadError,
    _channels,
    _check_mode,
    _check_values,
    _from_array,
    _is_path,
    _is_pil,
    _upright_size,
    decode_image,
    read_header,
)
from ._utils import ordered_map

__all__ = ["ImageCollection", "check_images"]

#: Background threads that decode and resize the next images while the backbone
#: runs on an accelerator (:meth:`ImageCollection.iter_batches`); 0 decodes in the
#: calling thread. On the CPU the images are always decoded in the calling thread:
#: the backbone already keeps every core busy there (on this project's 2-core
#: machine one decoding thread made MTD's feature pass no faster).
DECODING_THREADS = min(4, max(1, (os.cpu_count() or 2) - 1))


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
        self, batch_size: int, image_size: int, device="cpu", threads: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield float32 tensors (B, 3, image_size, image_size).

        With an accelerator ``device``, the images of the next batch are
        decoded and resized on :data:`DECODING_THREADS` background threads
        while the caller runs the backbone on the current one: decoding
        releases the GIL, and would otherwise leave the device idle (decoding
        one of MTD's images takes about 0.5 ms on one core, an H200's whole
        feature pass about 2 ms per image). ``threads`` overrides that choice.
        The tensors and their order are the same as decoding one image after
        the other; an unreadable image raises the same error.
        """

        def load(index):
            return _to_tensor(self.decoded(index), image_size, device)

        if threads is None:
            accelerated = torch.device(device).type != "cpu"
            threads = DECODING_THREADS if accelerated and len(self) > batch_size else 0
        batch = []
        for tensor in ordered_map(load, len(self), threads, ahead=batch_size):
            batch.append(tensor)
            if len(batch) == batch_size:
                yield torch.cat(batch)
                batch = []
        if batch:
            yield torch.cat(batch)


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
