"""Where a folder's images, labels and masks are: the layouts of ``load_texture_folder``.

Split from :mod:`skanomclust.datasets._folder`, which reads what is found here:
the layout is told apart by listing folders, never by reading an image, and what
cannot be listed is noted in ``skipped`` for the loader to report.
"""

import os
from pathlib import Path, PurePosixPath

from .._image_decoding import ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NORMAL_CLASS = "good"
_GROUND_TRUTH = "ground_truth"
_MASK_SUFFIX = "_mask"
_LISTED = 10  # skipped entries named in a message; all are in ``skipped``


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


def _why(exc):
    """The reason of an error without the path (OSError repeats it in its message)."""
    if isinstance(exc, ImageReadError):
        return exc.reason
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    return getattr(exc, "strerror", None) or str(exc)


def _split(folder, extensions, skipped):
    """(image files, sub-folder entries) directly in ``folder``, sorted by name.

    None when ``folder`` cannot be listed. Symbolic links are followed; what cannot
    be classified (a broken link, a permission error) is noted in ``skipped``.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((str(folder), f"folder cannot be read: {_why(exc)}"))
        return None
    files, dirs = [], []
    for entry in entries:
        try:
            if entry.is_dir():
                dirs.append(entry)
            elif entry.is_file():
                if os.path.splitext(entry.name)[1].lower() in extensions:
                    files.append(Path(entry.path))
            elif entry.is_symlink():
                skipped.append((entry.path, "broken symbolic link"))
        except OSError as exc:
            skipped.append((entry.path, f"cannot be read: {_why(exc)}"))
    return files, dirs


def _image_files(folder, extensions, skipped):
    split = _split(folder, extensions, skipped)
    return None if split is None else split[0]


def _walk(root, extensions, skipped):
    """Image files below ``root`` (recursive, following symbolic links once), by relative path.

    Folders named ``ground_truth`` are not entered. A folder is read once: a link leading
    to a folder already read (an ancestor, which would loop, or a duplicate) is noted in
    ``skipped``. Real folders are read before linked ones, so files keep their real path.
    """
    seen = {}
    found = []
    stack, links = [], []

    def enter(path, rel):
        try:
            stat = path.stat()
        except OSError as exc:
            skipped.append((str(path), f"folder cannot be read: {_why(exc)}"))
            return
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            skipped.append(
                (str(path), f"link to a folder already read ({seen[key]!r}); not followed again")
            )
            return
        seen[key] = str(path)
        stack.append((path, rel))

    enter(root, PurePosixPath())
    while stack or links:
        if not stack:
            links.sort(key=lambda link: link[1])
            enter(*links.pop(0))
            continue
        folder, rel = stack.pop()
        split = _split(folder, extensions, skipped)
        if split is None:
            continue
        files, dirs = split
        found.extend((rel / f.name, f) for f in files)
        for entry in dirs:
            if entry.name == _GROUND_TRUTH:
                continue
            if entry.is_symlink():
                links.append((Path(entry.path), rel / entry.name))
            else:
                enter(Path(entry.path), rel / entry.name)
    return [path for _, path in sorted(found, key=lambda item: item[0].as_posix())]


def _class_folders(root, extensions, skipped):
    """The class layout of ``root``: ``{name: images}``, or None if it is not one.

    ``root`` holds class folders when it has no image files of its own and every visible
    sub-folder (other than ``ground_truth``) directly contains at least one image; a
    sub-folder that cannot be read is noted in ``skipped`` and does not count.
    """
    files, dirs = _split(root, extensions, skipped)
    if files:
        return None
    classes = {}
    for entry in dirs:
        if entry.name == _GROUND_TRUTH:
            continue
        images = _image_files(entry.path, extensions, skipped)
        if images is None:
            continue
        if not images:
            return None
        classes[entry.name] = images
    return classes or None


def _order_class_names(names):
    names = sorted(names)
    if NORMAL_CLASS in names:
        names.remove(NORMAL_CLASS)
        names.insert(0, NORMAL_CLASS)
    return names


def _listing(items):
    lines = [f"  {path!r}: {reason}" for path, reason in items[:_LISTED]]
    if len(items) > _LISTED:
        lines.append(f"  ... and {len(items) - _LISTED} more")
    return "\n".join(lines)


def _note(skipped):
    return f"\nNot read:\n{_listing(skipped)}" if skipped else ""


def _mask_index(folder, extensions, skipped):
    """``{image stem: mask path}`` for the ``<stem>_mask.<ext>`` files of a ground-truth folder."""
    index = {}
    if not folder.is_dir():
        return index
    for path in _image_files(folder, extensions | {".png"}, skipped) or []:
        stem = path.stem
        if stem.endswith(_MASK_SUFFIX):
            key = stem[: -len(_MASK_SUFFIX)]
            # Prefer the MVTec convention, <stem>_mask.png, if several extensions exist.
            if key not in index or path.suffix.lower() == ".png":
                index[key] = path
    return index


def _find(root, extensions, skipped):
    """(files, labels or None, ground-truth folder or None, layout description)."""
    classes, gt_root = None, None
    test = root / "test"
    if test.is_dir():
        layout = f"MVTec AD layout, classes in {str(test)!r}"
        dirs = (_split(test, extensions, skipped) or ([], []))[1]
        classes = {}
        for entry in dirs:
            if entry.name != _GROUND_TRUTH:
                files = _image_files(entry.path, extensions, skipped)
                if files:
                    classes[entry.name] = files
        if not classes:
            raise ValueError(
                f"No image files found in the class folders of {str(test)!r}.{_note(skipped)}"
            )
        gt_root = root / _GROUND_TRUTH
    else:
        classes = _class_folders(root, extensions, skipped)
        if classes is not None:
            layout = f"class folders in {str(root)!r}"
            gt_root = root / _GROUND_TRUTH
            if not gt_root.is_dir():
                gt_root = root.parent / _GROUND_TRUTH
    if classes is None:
        files = _walk(root, extensions, skipped)
        if not files:
            raise ValueError(
                f"No image files ({', '.join(sorted(extensions))}) found in {str(root)!r}."
                + _note(skipped)
            )
        return files, None, None, f"plain folder {str(root)!r} (searched recursively, no labels)"
    files, labels = [], []
    for name in _order_class_names(classes):
        files.extend(classes[name])
        labels.extend([name] * len(classes[name]))
    return files, labels, gt_root, layout
