"""Loader for folders of texture images, labelled (MVTec AD layout) or not."""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.utils import Bunch

__all__ = ["load_texture_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NORMAL_CLASS = "good"
_GROUND_TRUTH = "ground_truth"
_MASK_SUFFIX = "_mask"


def _normalise_extensions(extensions):
    if extensions is None:
        return frozenset(IMAGE_EXTENSIONS)
    if isinstance(extensions, str):
        extensions = [extensions]
    normalised = set()
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip("."):
            raise ValueError(f"Invalid image extension {ext!r}; expected e.g. '.png'.")
        normalised.add("." + ext.lower().lstrip("."))
    if not normalised:
        raise ValueError("extensions must name at least one file extension.")
    return frozenset(normalised)


def _visible(entries):
    return [e for e in entries if not e.name.startswith(".")]


def _image_files(folder, extensions):
    """Image files directly inside ``folder``, sorted by name."""
    with os.scandir(folder) as it:
        files = [
            Path(e.path)
            for e in _visible(it)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in extensions
        ]
    return sorted(files, key=lambda p: p.name)


def _sub_folders(folder):
    with os.scandir(folder) as it:
        return sorted((Path(e.path) for e in _visible(it) if e.is_dir()), key=lambda p: p.name)


def _image_files_recursive(folder, extensions):
    """Image files below ``folder``, skipping hidden entries and ``ground_truth`` folders."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != _GROUND_TRUTH]
        rel = Path(current).relative_to(folder)
        found.extend(
            (rel / f).as_posix()
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        )
    return [folder / rel for rel in sorted(found)]


def _class_folders(root, extensions):
    """The class layout of ``root``: ``{name: images}``, or None if it is not one.

    ``root`` holds class folders when it has no image files of its own and every visible
    sub-folder (other than ``ground_truth``) directly contains at least one image.
    """
    if _image_files(root, extensions):
        return None
    folders = [f for f in _sub_folders(root) if f.name != _GROUND_TRUTH]
    if not folders:
        return None
    classes = {f.name: _image_files(f, extensions) for f in folders}
    if not all(classes.values()):
        return None
    return classes


def _order_class_names(names):
    names = sorted(names)
    if NORMAL_CLASS in names:
        names.remove(NORMAL_CLASS)
        names.insert(0, NORMAL_CLASS)
    return names


def _image_size(path):
    """(width, height) read from the image header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Cannot read image file {str(path)!r}: {exc}") from exc


def _read_image(path):
    """Pixels as uint8: (H, W) for single-channel images, (H, W, 3) for colour ones."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("L", "RGB"):
                return np.asarray(img, dtype=np.uint8)
            if mode.startswith("I;16"):
                return (np.asarray(img, dtype=np.uint32) // 257).astype(np.uint8)
            if mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                if arr.max(initial=0.0) > 255.0:
                    arr = arr / 257.0
                return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            if mode in ("1", "LA"):
                return np.asarray(img.convert("L"), dtype=np.uint8)
            # RGBA, palette, CMYK, YCbCr, ...: colour without alpha.
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"Cannot read image file {str(path)!r}: {exc}") from exc


def _read_mask(path, image_path, image_size):
    try:
        with Image.open(path) as img:
            if img.size != image_size:
                raise ValueError(
                    f"Mask {str(path)!r} is {img.size[0]}x{img.size[1]} pixels but image "
                    f"{str(image_path)!r} is {image_size[0]}x{image_size[1]} (width x height)."
                )
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                if arr.max(initial=0.0) > 255.0:
                    arr = arr / 257.0
                return arr > 127
            if img.mode != "L":
                img = img.convert("L")
            return np.asarray(img) > 127
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Cannot read mask file {str(path)!r}: {exc}") from exc


def _mask_index(folder, extensions):
    """``{image stem: mask path}`` for the ``<stem>_mask.<ext>`` files of a ground-truth folder."""
    index = {}
    if not folder.is_dir():
        return index
    for path in _image_files(folder, extensions | {".png"}):
        stem = path.stem
        if stem.endswith(_MASK_SUFFIX):
            key = stem[: -len(_MASK_SUFFIX)]
            # Prefer the MVTec convention, <stem>_mask.png, if several extensions exist.
            if key not in index or path.suffix.lower() == ".png":
                index[key] = path
    return index


def _load_masks(filenames, labels, gt_root, extensions):
    masks = []
    indices = {}
    for path, label in zip(filenames, labels, strict=True):
        size = _image_size(path)
        if label == NORMAL_CLASS:
            masks.append(np.zeros((size[1], size[0]), dtype=bool))
            continue
        if label not in indices:
            indices[label] = _mask_index(gt_root / label, extensions)
        mask_path = indices[label].get(path.stem)
        if mask_path is None:
            raise ValueError(
                f"No mask for defect image {str(path)!r}: expected "
                f"{str(gt_root / label / (path.stem + _MASK_SUFFIX + '.png'))!r}."
            )
        masks.append(_read_mask(mask_path, path, size))
    return masks


def load_texture_folder(path, *, load_images=False, load_masks=True, extensions=None):
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

    Hidden files and folders (names starting with ``.``) are always ignored.

    Parameters
    ----------
    path : str or path-like
        Folder to read.
    load_images : bool, default=False
        Whether to decode the images into ``images``. Without it only file names, labels
        and masks are returned (the image headers are still read for the mask sizes).
    load_masks : bool, default=True
        Whether to read the defect masks. False leaves ``masks`` None and saves their
        memory (and the reading time) when only the class labels are needed.
    extensions : iterable of str, default=None
        File extensions counted as images, case-insensitive, with or without the dot.
        None means ``.png .jpg .jpeg .bmp .tif .tiff .webp``.

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
            value > 127); all False for ``good`` images. None when there is no
            ``ground_truth`` folder (and for plain folders) or with ``load_masks=False``.
            All masks are read into memory (for MTD: 1344 masks, about 140 MB).
        images : list of ndarray of dtype uint8, or None
            Only with ``load_images=True``: the pixels as stored, shape (height, width)
            for single-channel images (grayscale, 16-bit scaled to 8 bits) and
            (height, width, 3) for colour images (palette images are expanded to RGB
            and any alpha channel is dropped). Otherwise None.
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
        its image's, or an image or mask file cannot be decoded.

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
    >>> loaded.target_names, loaded.target.tolist()
    (['good', 'hole'], [0, 0, 0, 1, 1])
    >>> loaded.images[0].shape, int(loaded.masks[3].sum()) > 0
    ((32, 32, 3), True)
    """
    root = Path(os.fspath(path))
    if not root.exists():
        raise FileNotFoundError(f"Texture folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder.")
    extensions = _normalise_extensions(extensions)

    classes = None
    gt_root = None
    test = root / "test"
    if test.is_dir():
        layout = f"MVTec AD layout, classes in {str(test)!r}"
        classes = {
            f.name: files
            for f in _sub_folders(test)
            if f.name != _GROUND_TRUTH and (files := _image_files(f, extensions))
        }
        if not classes:
            raise ValueError(f"No image files found in the class folders of {str(test)!r}.")
        gt_root = root / _GROUND_TRUTH
    else:
        classes = _class_folders(root, extensions)
        if classes is not None:
            layout = f"class folders in {str(root)!r}"
            gt_root = root / _GROUND_TRUTH
            if not gt_root.is_dir():
                gt_root = root.parent / _GROUND_TRUTH

    if classes is not None:
        target_names = _order_class_names(classes)
        filenames, labels = [], []
        for name in target_names:
            filenames.extend(classes[name])
            labels.extend([name] * len(classes[name]))
        target = np.repeat(
            np.arange(len(target_names), dtype=np.int64), [len(classes[n]) for n in target_names]
        )
        if gt_root.is_dir() and not load_masks:
            masks = None
            layout += f", masks in {str(gt_root)!r} not read"
        elif gt_root.is_dir():
            masks = _load_masks(filenames, labels, gt_root, extensions)
            layout += f", masks from {str(gt_root)!r}"
        else:
            masks = None
            layout += ", no ground_truth masks"
    else:
        filenames = _image_files_recursive(root, extensions)
        if not filenames:
            raise ValueError(
                f"No image files ({', '.join(sorted(extensions))}) found in {str(root)!r}."
            )
        layout = f"plain folder {str(root)!r} (searched recursively, no labels)"
        target = target_names = masks = None

    images = [_read_image(f) for f in filenames] if load_images else None

    descr = f"Texture images: {len(filenames)} files; {layout}."
    if target_names is not None:
        counts = np.bincount(target, minlength=len(target_names))
        descr += "\nClasses: " + ", ".join(
            f"{n} ({c})" for n, c in zip(target_names, counts, strict=True)
        )
        descr += "."
    return Bunch(
        filenames=[str(f) for f in filenames],
        target=target,
        target_names=target_names,
        masks=masks,
        images=images,
        DESCR=descr,
    )
