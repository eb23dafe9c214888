"""From a reviewed report to a labelled data set and a model of the reviewed names.

The report's review page (:mod:`skanomclust.report`) lets a person rename,
merge and split clusters, move images and mark them as "no defect"; it exports
those decisions as ``review.json``: the name given to every image of the run.
:func:`apply_review` turns a run folder written by ``skanomclust cluster`` and
such a review into

- ``dataset/<name>/``: the images, grouped by reviewed name (symbolic links to
  the originals by default, or copies);
- ``labels.csv``: ``path,name,cluster`` for every image (``cluster``: the
  blind cluster it was in);
- ``model.joblib``: the run's model with its final step refitted on the
  reviewed names (:class:`ReviewedClassifier` on the image descriptors), so
  that ``skanomclust predict`` assigns new images to those names;
- ``review.json``: the review that was applied.

The refit needs no image to be read again: the run folder keeps every image's
descriptor (``descriptors.npy``, in the order of ``assignments.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["REVIEW_FORMAT", "ReviewedClassifier", "apply_review", "read_review"]

#: The ``format`` field of a review file (written by the report's review page).
REVIEW_FORMAT = "skanomclust-review"
#: What ``apply_review`` writes; an existing output folder has only these replaced.
REVIEW_OUTPUTS = ("dataset", "labels.csv", "model.joblib", "review.json")


class ReviewError(ValueError):
    """A review that does not fit its run, or a run folder that lacks a file."""


class ReviewedClassifier(ClassifierMixin, BaseEstimator):
    """Assign image descriptors to the names a person gave them in a review.

    The final step of a reviewed model, in place of the blind clustering:
    fitted on the descriptors of the reviewed images and their names, it
    predicts names (:func:`skanomclust.run.assign_images` numbers them by their
    position in ``classes_``, the names sorted, like cluster labels).

    Parameters
    ----------
    method : {"centroid", "logistic"}, default="centroid"
        ``"centroid"``: the nearest mean descriptor of each name, what Ward
        clustering's ``predict`` does with its clusters (and robust with a few
        images per name). ``"logistic"``: multinomial logistic regression,
        which can weigh the descriptor's dimensions.
    random_state : int, RandomState instance or None, default=None
        Used by ``"logistic"`` only.

    Attributes
    ----------
    classes_ : ndarray of str
        The reviewed names, sorted.
    estimator_ : estimator
        The fitted :class:`~sklearn.neighbors.NearestCentroid` or
        :class:`~sklearn.linear_model.LogisticRegression`.
    n_clusters_ : int
        Number of names (the run API and the report read it like a clustering's).
    n_clusters_scores_ : None
        No choice of k was made.
    n_features_in_ : int
    """

    _parameter_constraints = {
        "method": [StrOptions({"centroid", "logistic"})],
        "random_state": ["random_state"],
    }

    def __init__(self, method="centroid", random_state=None):
        self.method = method
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on descriptors ``X`` and their reviewed names ``y``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import NearestCentroid

        X, y = validate_data(self, X, y)
        names = np.asarray(y)
        if len(np.unique(names)) < 2:
            raise ValueError(
                f"A reviewed model needs at least two names (classes), got only one class: "
                f"{names[0]!r}"
            )
        if self.method == "centroid":
            self.estimator_ = NearestCentroid().fit(X, names)
        else:
            self.estimator_ = LogisticRegression(
                max_iter=2000, random_state=self.random_state
            ).fit(X, names)
        self.classes_ = self.estimator_.classes_
        self.n_clusters_ = len(self.classes_)
        self.n_clusters_scores_ = None
        return self

    def predict(self, X):
        """The reviewed name of each descriptor."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.estimator_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def paths_digest(paths):
    """The SHA-1 of the image paths, one per line: how a review names its run."""
    return hashlib.sha1("\n".join(paths).encode("utf-8")).hexdigest()


def read_review(path, paths=None):
    """Read and check a ``review.json``; return the reviewed name of every image.

    Parameters
    ----------
    path : path-like
        The review file downloaded from the report.
    paths : list of str, optional
        The run's image paths (``assignments.csv``); when given, the review must
        be of exactly these images.

    Returns
    -------
    review : dict
        The parsed review, with ``images`` mapping each path to its name.
    """
    path = Path(path)
    if path.is_dir():
        raise ReviewError(f"review {str(path)!r} is a folder, not a review.json file")
    try:
        review = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(f"review {str(path)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"review {str(path)!r} is not JSON ({exc})") from None
    if not isinstance(review, dict) or review.get("format") != REVIEW_FORMAT:
        raise ReviewError(
            f"{str(path)!r} is not a review (download it with 'Download review.json' "
            "from the report)"
        )
    images = review.get("images")
    if not isinstance(images, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in images.items()
    ):
        raise ReviewError(f"review {str(path)!r}: 'images' must map each path to a name")
    if paths is not None:
        missing = [p for p in paths if p not in images]
        extra = [p for p in images if p not in set(paths)]
        if missing or extra:
            example = (missing or extra)[0]
            raise ReviewError(
                f"review {str(path)!r} is of other images than this run: "
                f"{len(missing)} of the run's images are not in it, {len(extra)} of its "
                f"images are not in the run (e.g. {example!r})"
            )
        digest = (review.get("run") or {}).get("paths_sha1")
        if digest is not None and digest != paths_digest(paths):
            raise ReviewError(f"review {str(path)!r} was made for another run of these images")
    return review


def _folder_name(name):
    """A file-system-safe folder name for a reviewed name ("no defect" -> "no_defect")."""
    safe = re.sub(r"[^\w.-]+", "_", name.strip(), flags=re.UNICODE).strip("._")
    return safe or "unnamed"


def _read_run(run_folder):
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        raise ReviewError(f"run folder {str(run_folder)!r} does not exist or is not a folder")
    needed = ("assignments.csv", "descriptors.npy", "run.json", "model.joblib")
    for name in needed:
        if not (run_folder / name).is_file():
            raise ReviewError(
                f"{str(run_folder)!r} has no {name}: pass the output folder of "
                "'skanomclust cluster'"
            )
    with open(run_folder / "assignments.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    settings = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))["settings"]
    descriptors = np.load(run_folder / "descriptors.npy")
    if len(descriptors) != len(rows):
        raise ReviewError(
            f"{str(run_folder)!r}: descriptors.npy has {len(descriptors)} rows for "
            f"{len(rows)} images in assignments.csv"
        )
    return rows, settings, descriptors


def apply_review(
    run_folder,
    review,
    output,
    *,
    mode="link",
    method="centroid",
    overwrite=False,
    random_state=0,
):
    """Write the labelled data set and the reviewed model of a run.

    Parameters
    ----------
    run_folder : path-like
        Output folder of ``skanomclust cluster`` (``assignments.csv``,
        ``descriptors.npy``, ``run.json``, ``model.joblib``).
    review : path-like
        ``review.json`` downloaded from that run's report.
    output : path-like
        Folder to write (see the module docstring for its contents); replaced as
        a whole, or left as it was when anything fails.
    mode : {"link", "copy"}, default="link"
        Symbolic links to the original images, or copies of them.
    method : {"centroid", "logistic"}, default="centroid"
        How the reviewed model assigns new images (:class:`ReviewedClassifier`).
    overwrite : bool, default=False
        Replace the outputs of an earlier ``apply_review`` in ``output``.
    random_state : int, default=0
        Passed to the classifier.

    Returns
    -------
    summary : dict
        ``names`` (name -> number of images), ``output`` (the folder) and
        ``folders`` (name -> its folder under ``dataset``).
    """
    import joblib

    from ._output import OutputFolder
    from .model_io import load_model

    if mode not in ("link", "copy"):
        raise ValueError(f"mode must be 'link' or 'copy', got {mode!r}")
    rows, settings, descriptors = _read_run(run_folder)
    paths = [row["path"] for row in rows]
    review_data = read_review(review, paths)
    names = np.array([review_data["images"][p] for p in paths])
    source = Path(settings.get("input") or ".")
    missing = [p for p in paths if not (source / p).exists()]
    if missing:
        raise ReviewError(
            f"{len(missing)} images of the run are no longer in {str(source)!r} "
            f"(e.g. {missing[0]!r})"
        )
    model = load_model(Path(run_folder) / "model.joblib")
    classifier = ReviewedClassifier(method=method, random_state=random_state)
    classifier.fit(descriptors, names)
    model.steps[-1] = ("review", classifier)

    folders = {name: _folder_name(name) for name in np.unique(names)}
    if len(set(folders.values())) < len(folders):
        raise ReviewError(
            "two reviewed names map to the same folder name: "
            + ", ".join(f"{n!r} -> {f!r}" for n, f in folders.items())
        )
    out = OutputFolder(output, REVIEW_OUTPUTS, overwrite).check()
    with out as tmp:
        for folder in folders.values():
            (tmp / "dataset" / folder).mkdir(parents=True)
        used = {}
        with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "name", "cluster"])
            for row, name in zip(rows, names, strict=True):
                original = (source / row["path"]).resolve()
                target = _unique(tmp / "dataset" / folders[name], original.name, used)
                if mode == "copy":
                    shutil.copy2(original, target)
                else:
                    os.symlink(original, target)
                writer.writerow([row["path"], name, row["cluster"]])
        joblib.dump(model, tmp / "model.joblib")
        shutil.copyfile(review, tmp / "review.json")
    counts = {str(n): int((names == n).sum()) for n in np.unique(names)}
    return {"names": counts, "output": out.path, "folders": folders}


def _unique(folder, filename, used):
    """``folder / filename``, numbered when two images of a name share a file name."""
    stem, suffix = os.path.splitext(filename)
    key = (folder, filename)
    count = used.get(key, 0)
    used[key] = count + 1
    return folder / (filename if count == 0 else f"{stem}_{count}{suffix}")
