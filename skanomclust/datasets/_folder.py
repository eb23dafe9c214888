"""Loader for folders of texture images, labelled (MVTec AD layout) or not.

Nothing is left out without a word: folders and files that cannot be read,
broken links and symbolic links leading back to a folder already read are
listed in the returned ``skipped`` and in one warning. Images are decoded by
:func:`skanomclust._image_decoding.decode_image`, under the data contract of the
extractor's input. Which files are images, of which class and with which mask
is found by :mod:`skanomclust.datasets._folder_layout`; this module reads them.
"""

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.utils import Bunch

from .._image_decoding import ImageReadError, decode_image, read_header
from ._folder_layout import (
    _MASK_SUFFIX,
    NORMAL_CLASS,
    _find,
    _listing,
    _mask_index,
    _normalise_extensions,
    _note,
    _order_class_names,
    _why,
)

__all__ = ["load_texture_folder"]


def _read_all(paths, read, on_error, skipped):
    """``{path: read(path)}`` for the paths that can be read; the others by ``on_error``."""
    out, failed = {}, []
    for path in paths:
        try:
            out[path] = read(path)
        except (ImageReadError, OSError) as exc:
            failed.append((str(path), _why(exc)))
    if failed and on_error == "raise":
        raise ValueError(
            f"{len(failed)} of {len(paths)} images cannot be read (on_error='skip' leaves "
            f"them out):\n{_listing(failed)}"
        )
    skipped.extend(failed)
    return out


def _read_mask(path, image_path, size):
    name = f"mask {str(path)!r}"
    try:
        with Image.open(path) as img:
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode not in ("1", "L", "F") and not img.mode.startswith("I"):
                img = img.convert("L")  # colour and palette masks: their luminance
            values = decode_image(img, name)
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ValueError(f"Cannot read mask file {str(path)!r}: {_why(exc)}") from exc
    if values.shape != size:
        raise ValueError(
            f"Mask {str(path)!r} is {values.shape[1]}x{values.shape[0]} pixels but image "
            f"{str(image_path)!r} is {size[1]}x{size[0]} (width x height)."
        )
    # Above half the white level: > 127 for 8-bit masks, > 32767 for 16-bit ones.
    return values > (127 if values.dtype == np.uint8 else 0.5)


def _load_masks(filenames, labels, sizes, gt_root, extensions, skipped):
    masks = []
    indices = {}
    for path, label in zip(filenames, labels, strict=True):
        size = sizes[path]
        if label == NORMAL_CLASS:
            masks.append(np.zeros(size, dtype=bool))
            continue
        if label not in indices:
            indices[label] = _mask_index(gt_root / label, extensions, skipped)
        mask_path = indices[label].get(path.stem)
        if mask_path is None:
            raise ValueError(
                f"No mask for defect image {str(path)!r}: expected "
                f"{str(gt_root / label / (path.stem + _MASK_SUFFIX + '.png'))!r}."
            )
        masks.append(_read_mask(mask_path, path, size))
    return masks


def load_texture_folder(
    path, *, load_images=False, load_masks=True, extensions=None, on_error="raise"
):
    """Load a folder of texture images, with class labels and defect masks if present.

    Three layouts are recognised, in this order:

    1. **MVTec AD category root**: ``path/test/<class>/<image>`` with pixel masks in
       ``path/ground_truth/<class>/<stem>_mask.png``. Class ``good`` holds the
       defect-free images; class folders without images are skipped. Only ``test`` is
       read: the ``train`` folder (normal images only)
       is ignored unless ``path`` points at it directly (then it is read as layout 2,
       giving a single class ``good``).
    2. **Class folders**: ``path/<class>/<image>``, recognised when ``path`` has no image
       files of its own and every visible sub-folder directly holds at least one image
       (files in deeper sub-folders of a class folder are not read). Masks are taken from
       a ``ground_truth`` folder inside ``path`` or next to it (``path/../ground_truth``)
       when one exists, with the same naming as in layout 1.
    3. **Plain folder**: any other folder; its images are collected recursively and have
       no labels. Folders named ``ground_truth`` are skipped.

    Hidden files and folders (names starting with ``.``) are always ignored. Symbolic
    links to files and folders are followed; a folder is read once, so a link leading
    back to an ancestor (a loop) or to a folder already read is not followed again.
    Folders that cannot be listed, broken links and such links are not errors: they are
    listed in ``skipped`` and named in a warning.

    Every image file's header is checked before anything else is read: Pillow identifies
    the format, size and mode, and checksums PNG chunks, without decoding pixels (0.05 s
    for the 1344 JPEG files of MTD); only float images (whose values must lie in [0, 1])
    and JPEG files that do not end with their end-of-image marker (cut off) are decoded
    to check them. With ``load_images=True`` every image is also decoded.
    ``on_error`` says what happens to images failing either step.

    Parameters
    ----------
    path : str or path-like
        Folder to read.
    load_images : bool, default=False
        Whether to decode the images into ``images``. Without it only file names, labels
        and masks are returned.
    load_masks : bool, default=True
        Whether to read the defect masks. False leaves ``masks`` None and saves their
        memory (and the reading time) when only the class labels are needed.
    extensions : iterable of str, default=None
        File extensions counted as images, case-insensitive, with or without the dot.
        None means ``.png .jpg .jpeg .bmp .tif .tiff .webp``.
    on_error : {"raise", "skip"}, default="raise"
        For images that cannot be read or break the data contract of
        :mod:`skanomclust._image_decoding` (e.g. a float TIFF outside [0, 1]): ``"raise"`` a
        ValueError naming every such file; ``"skip"`` leaves them out of ``filenames``,
        ``target``, ``masks`` and ``images`` and lists them in ``skipped`` (a class left
        without images is dropped from ``target_names``). Masks that cannot be read always
        raise.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        filenames : list of str
            Image paths. Labelled data are grouped by class in the order of
            ``target_names`` and sorted by file name within a class; unlabelled data
            are sorted by their path relative to ``path``.
        target : ndarray of shape (n_images,), dtype int64, or None
            Class index of each image into ``target_names``; None without labels.
        target_names : list of str or None
            Class (folder) names, sorted, with ``good`` first when present; None
            without labels.
        masks : list of ndarray of dtype bool, or None
            One mask of shape (height, width) per image, True on defect pixels (mask
            value above half its white level: > 127 for 8-bit masks); all False for
            ``good`` images. None when there is no ``ground_truth`` folder (and for plain
            folders) or with ``load_masks=False``. All masks are read into memory (for
            MTD: 1344 masks, about 140 MB).
        images : list of ndarray, or None
            Only with ``load_images=True``: each image as the extractor reads it (see
            :func:`skanomclust._image_decoding.decode_image`): upright (EXIF orientation
            applied), shape (height, width) for single-channel images and (height, width,
            3) for colour ones (palette images expanded to RGB, alpha dropped); dtype uint8
            for 8-bit (and 1-bit) images, float32 in [0, 1] for 16-bit and float ones.
            Passing these arrays to the extractor gives the same features as passing
            ``filenames``. Otherwise None.
        skipped : list of tuple of str
            ``(path, reason)`` for everything not read: folders that cannot be listed,
            broken links, links to a folder already read, and with ``on_error="skip"``
            images that cannot be read. Empty when everything was read.
        DESCR : str
            Short description of what was read.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is not a folder.
    ValueError
        If no image is found, a defect image has no mask, a mask's size differs from
        its image's, a mask cannot be decoded, or (``on_error="raise"``) an image cannot.

    Warns
    -----
    UserWarning
        Naming the entries of ``skipped``, when there are any.

    Examples
    --------
    Write a small synthetic data set in the MVTec AD layout and read it back:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skanomclust.datasets import load_texture_folder, make_synthetic_textures
    >>> data = make_synthetic_textures(n_normal=3, n_per_defect=2, defect_types=("hole",),
    ...                                image_size=32, random_state=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for i, (image, mask, y) in enumerate(zip(data.images, data.masks, data.target)):
    ...         name = data.target_names[y]
    ...         folder = Path(tmp, "test", name)
    ...         folder.mkdir(parents=True, exist_ok=True)
    ...         Image.fromarray(image).save(folder / f"{i:03d}.png")
    ...         if name != "good":
    ...             folder = Path(tmp, "ground_truth", name)
    ...             folder.mkdir(parents=True, exist_ok=True)
    ...             Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{i:03d}_mask.png")
    ...     loaded = load_texture_folder(tmp, load_images=True)
    >>> loaded.target_names, loaded.target.tolist(), loaded.skipped
    (['good', 'hole'], [0, 0, 0, 1, 1], [])
    >>> loaded.images[0].shape, loaded.images[0].dtype, int(loaded.masks[3].sum()) > 0
    ((32, 32, 3), dtype('uint8'), True)
    """
    root = Path(os.fspath(path))
    if not root.exists():
        raise FileNotFoundError(f"Texture folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder.")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    extensions = _normalise_extensions(extensions)
    with os.scandir(root):  # the folder itself must be readable: raises PermissionError
        pass

    skipped = []
    files, labels, gt_root, layout = _find(root, extensions, skipped)
    # Headers first (cheap), so that nothing is read or decoded for a file that fails.
    sizes = _read_all(
        files, lambda p: read_header(p, repr(str(p)), verify=True), on_error, skipped
    )
    images = None
    if load_images:
        images = _read_all(
            [f for f in files if f in sizes],
            lambda p: decode_image(p, repr(str(p))),
            on_error,
            skipped,
        )
    kept = [i for i, f in enumerate(files) if f in sizes and (images is None or f in images)]
    files = [files[i] for i in kept]
    if not files:
        raise ValueError(f"None of the image files in {str(root)!r} can be read.{_note(skipped)}")

    target = target_names = masks = None
    if labels is not None:
        labels = [labels[i] for i in kept]
        target_names = _order_class_names(set(labels))
        target = np.array([target_names.index(name) for name in labels], dtype=np.int64)
        if gt_root.is_dir() and not load_masks:
            layout += f", masks in {str(gt_root)!r} not read"
        elif gt_root.is_dir():
            masks = _load_masks(files, labels, sizes, gt_root, extensions, skipped)
            layout += f", masks from {str(gt_root)!r}"
        else:
            layout += ", no ground_truth masks"

    skipped = list(dict.fromkeys(skipped))  # layout detection may meet an entry twice
    descr = f"Texture images: {len(files)} files; {layout}."
    if target_names is not None:
        counts = np.bincount(target, minlength=len(target_names))
        descr += "\nClasses: " + ", ".join(
            f"{n} ({c})" for n, c in zip(target_names, counts, strict=True)
        )
        descr += "."
    if skipped:
        entries = f"{len(skipped)} {'entry' if len(skipped) == 1 else 'entries'}"
        descr += f"\n{entries} not read (see skipped)."
        warnings.warn(
            f"load_texture_folder({str(root)!r}) did not read {entries} "
            f"(listed in the result's skipped):\n{_listing(skipped)}",
            UserWarning,
            stacklevel=2,
        )
    return Bunch(
        filenames=[str(f) for f in files],
        target=target,
        target_names=target_names,
        masks=masks,
        images=None if images is None else [images[f] for f in files],
        skipped=skipped,
        DESCR=descr,
    )
