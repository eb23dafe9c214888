"""Reading the image inputs of the first pipeline step.

Accepted forms (see the user guide, "data contract"):

- a 4-D array ``(n, H, W, C)`` with C in {1, 3, 4}, uint8 (0-255) or float (0-1);
- a 3-D array ``(n, H, W)`` of grayscale images;
- a 2-D array ``(n, W)``: ``n`` grayscale images of a single row (this keeps
  scikit-learn's estimator checks meaningful for the first step);
- a list (or 1-D array) of file paths, of PIL images, or of 2-D/3-D arrays
  (sizes may differ).

:class:`~skanomclust.TextureFeatureExtractor` runs scikit-learn's
``validate_data`` on 2-D inputs (arrays, nested lists, DataFrames) before
:func:`check_images`, so they get scikit-learn's checks and feature names.

Everything is converted lazily, one batch at a time, to float RGB tensors in
[0, 1] resized to a square side: grayscale is repeated to three channels and an
alpha channel is dropped (the colour values are kept as they are).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["ImageCollection", "check_images"]


def _describe(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    return type(item).__name__


class ImageCollection:
    """A validated, lazily read sequence of images.

    Parameters
    ----------
    items : list or numpy.ndarray
        The images, already checked by :func:`check_images`.
    kind : {"array", "list"}
        Whether ``items`` is one stacked array or a list of single images.
    """

    def __init__(self, items, kind):
        self.items = items
        self.kind = kind

    def __len__(self):
        return len(self.items)

    def name(self, index: int) -> str:
        """How to refer to image ``index`` in an error message."""
        item = self.items[index]
        if isinstance(item, (str, os.PathLike)):
            return f"image {index} ({os.fspath(item)!r})"
        return f"image {index}"

    def sizes(self) -> list[tuple[int, int]]:
        """Original (height, width) of every image (opens files headers only)."""
        if self.kind == "array":
            return [tuple(self.items.shape[1:3])] * len(self)
        out = []
        for index, item in enumerate(self.items):
            if isinstance(item, (str, os.PathLike)):
                from PIL import Image

                try:
                    with Image.open(item) as image:
                        out.append((image.height, image.width))
                except Exception as exc:
                    raise ValueError(f"Cannot read {self.name(index)}: {exc}") from exc
            elif hasattr(item, "size") and not isinstance(item, np.ndarray):
                out.append((item.size[1], item.size[0]))
            else:
                out.append(tuple(np.asarray(item).shape[:2]))
        return out

    def _as_array(self, index: int) -> np.ndarray:
        item = self.items[index]
        if isinstance(item, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(item) as image:
                    image.load()
                    array = _pil_to_array(image)
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.name(index)} does not exist") from None
            except Exception as exc:
                raise ValueError(f"Cannot read {self.name(index)}: {exc}") from exc
        elif isinstance(item, np.ndarray):
            array = item
        else:  # PIL image
            array = _pil_to_array(item)
        return _check_single(array, self.name(index))

    def iter_batches(
        self, batch_size: int, image_size: int, device="cpu"
    ) -> Iterator[torch.Tensor]:
        """Yield float32 tensors (B, 3, image_size, image_size) in [0, 1]."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if self.kind == "array":
                chunk = [_check_single(self.items[i], self.name(i)) for i in range(start, stop)]
            else:
                chunk = [self._as_array(i) for i in range(start, stop)]
            yield torch.cat([_to_tensor(a, image_size, device) for a in chunk])


def _pil_to_array(image) -> np.ndarray:
    if image.mode in ("RGB", "L"):
        return np.asarray(image)
    if image.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "HSV", "LAB", "1"):
        return np.asarray(image.convert("RGB"))
    # 16-bit and 32-bit grayscale ("I;16", "I", "F"): scale to [0, 1] floats.
    array = np.asarray(image).astype(np.float32)
    top = {"F": 1.0, "I;16": 65535.0, "I;16B": 65535.0, "I": 65535.0}.get(image.mode, 65535.0)
    return array / top


def _check_single(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} has non-numeric dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise ValueError(f"Complex data not supported: {name} has dtype {array.dtype}")
    if array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"{name} has shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 3) or "
            "(H, W, 4) (channels last)"
        )
    if array.ndim not in (1, 2, 3):
        raise ValueError(f"{name} has {array.ndim} dimensions; expected 2 (H, W) or 3 (H, W, C)")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _to_tensor(array: np.ndarray, image_size: int, device) -> torch.Tensor:
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 2:  # gray + alpha
        array = array[:, :, :1]
    elif array.shape[-1] == 4:  # RGBA: drop alpha
        array = array[:, :, :3]
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array.astype(np.float32)).to(device) / 255.0
    elif array.dtype == bool:
        tensor = torch.from_numpy(array.astype(np.float32)).to(device)
    elif np.issubdtype(array.dtype, np.integer):
        top = 255.0 if array.max(initial=0) <= 255 else float(np.iinfo(array.dtype).max)
        tensor = torch.from_numpy(array.astype(np.float32) / top).to(device)
    else:
        tensor = torch.from_numpy(np.array(array, dtype=np.float32)).to(device)
    tensor = tensor.permute(2, 0, 1)[None]
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    if tuple(tensor.shape[-2:]) != (image_size, image_size):
        tensor = F.interpolate(
            tensor,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return tensor


def check_images(X) -> ImageCollection:
    """Validate the image input of the first step without reading files.

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
    if isinstance(X, (str, os.PathLike)):
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
        if array.shape[0] == 0:
            raise ValueError(f"Found array with 0 images (shape {array.shape}); need at least 1.")
        if array.ndim == 4 and array.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(
                f"Expected channels-last images (n, H, W, C) with C in (1, 3, 4), got shape "
                f"{array.shape}. (Channels-first feature maps belong to later pipeline steps.)"
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"Images have non-numeric dtype {array.dtype}")
        if np.iscomplexobj(array):
            raise ValueError(f"Complex data not supported: images have dtype {array.dtype}")
        if 0 in array.shape[1:]:
            raise ValueError(f"Found images of size 0 (shape {array.shape}).")
        if np.issubdtype(array.dtype, np.floating):
            bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"Input contains NaN or infinite values (image {int(np.argmax(bad))})"
                )
        return ImageCollection(array, "array")
    if not isinstance(X, (list, tuple)):
        raise TypeError(
            "Expected images as a numpy array or a list of paths, PIL images or arrays; got "
            f"{type(X).__name__}"
        )
    if len(X) == 0:
        raise ValueError("Found an empty list of images; need at least 1.")
    items = []
    for index, item in enumerate(X):
        if isinstance(item, (str, os.PathLike)):
            if not Path(item).is_file():
                raise FileNotFoundError(f"image {index} ({os.fspath(item)!r}) does not exist")
            items.append(item)
        elif isinstance(item, np.ndarray):
            items.append(_check_single(item, f"image {index}"))
        elif hasattr(item, "mode") and hasattr(item, "size") and hasattr(item, "getdata"):
            items.append(item)
        else:
            raise TypeError(
                f"image {index} is a {_describe(item)}; expected a file path, a PIL image or "
                "a numpy array"
            )
    return ImageCollection(items, "list")
