"""What each command of :mod:`skanomclust.cli` does: read the input, run, write the outputs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ._output import OutputFolder
from .cli import UserError

#: Files the commands write; ``--overwrite`` replaces only these.
OUTPUT_FILES = (
    "assignments.csv",
    "descriptors.npy",
    "report.html",
    "report_files",
    "model.joblib",
    "run.json",
    "metrics.json",
    "skipped.csv",
)


def _log(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _plural(count, word):
    return f"{count} {word}{'' if count == 1 else 's'}"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _write_json(path, payload):
    Path(path).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _load_folder(args, folder):
    from .datasets import load_texture_folder

    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"input folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise UserError(f"input {str(folder)!r} is not a folder")
    on_error = "skip" if args.on_error == "skip" else "raise"
    try:
        return load_texture_folder(folder, load_masks=not args.no_pixel_metrics, on_error=on_error)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _relative_names(filenames, root):
    out = []
    for name in filenames:
        try:
            out.append(Path(name).relative_to(root).as_posix())
        except ValueError:
            out.append(str(name))
    return out


def _client(args):
    if not args.scheduler:
        return None
    try:
        from dask.distributed import Client
    except ImportError:
        raise UserError("--scheduler needs Dask: pip install 'skanomclust[distributed]'") from None
    _log(args, f"Connecting to the Dask scheduler at {args.scheduler} ...")
    return Client(args.scheduler, timeout="30s")


def _work_dir(args, output: OutputFolder):
    """The folder of an unfinished run into ``output`` (kept only to resume it)."""
    work = output.path.parent / f".{output.path.name}.partial"
    if work.exists() and not args.resume:
        shutil.rmtree(work, ignore_errors=True)
        _log(
            args,
            f"Removed the results of an unfinished run in {work} "
            "(--resume continues such a run instead)",
        )
    elif args.resume and not work.exists():
        _log(args, "Nothing to resume: starting from the beginning")
    return work


def _auto_k_text(result):
    scores = result.n_clusters_scores
    if scores is None:  # k was given
        return None
    if result.n_clusters == 1:
        return (
            "automatic k = 1: the images' descriptors are identical or split no better than "
            "structureless data would (gap statistic), so they form one cluster"
        )
    listing = ", ".join(f"{k}: {v:.3g}" for k, v in sorted(scores.items()))
    return (
        f"automatic k = {result.n_clusters} (the knee of the within-cluster spread; score "
        f"per k, higher is better: {listing})"
    )


def _metrics(args, data, result):
    """Clustering scores against the class folders, pixel scores against the masks."""
    if data.target is None:
        return None
    from .metrics import clustering_report

    metrics = clustering_report(data.target, result.labels, target_names=data.target_names)
    masks = getattr(data, "masks", None)
    if masks is not None and not args.no_pixel_metrics and any(np.any(m) for m in masks):
        from .localization import resize_anomaly_maps
        from .metrics import localization_report

        start = time.perf_counter()
        maps = resize_anomaly_maps(np.asarray(result.anomaly_maps), [np.shape(m) for m in masks])
        metrics["localization"] = localization_report(masks, maps)
        result.timings["pixel metrics"] = time.perf_counter() - start
    return metrics


def _settings(args, result, extra):
    import torch

    from ._version import __version__

    features = result.model.steps[0][1]
    descriptor = result.model.steps[-2][1]
    return {
        "command": args.command,
        **extra,
        "n_clusters": getattr(result.model.steps[-1][1], "n_clusters", result.n_clusters),
        "n_clusters_found": result.n_clusters,
        "n_clusters_scores": result.n_clusters_scores,
        "backbone": features.backbone,
        "layers": features.layers_,
        "weights": features.weights_info_,
        "image_size": features.image_size,
        "device": str(features.device_),
        "seed": getattr(args, "seed", None),
        "parameters": dict(getattr(args, "param", None) or []),
        "sample_size": int(len(result.sample_indices)),
        "normality_gate": result.gate,
        "gate_bimodality": (
            None
            if not math.isfinite(descriptor.gate_bimodality_)
            else float(descriptor.gate_bimodality_)
        ),
        "gate_threshold": descriptor.gate_threshold_,
        "normal_cluster": result.normal_cluster,
        "skanomclust": __version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _run_and_write(
    args, output, data, names, items, run, title, extra_settings, save_model, model=None
):
    """Run (``run(on_chunk)`` returns the result), then write every output at once."""
    from .report import write_report
    from .run import embed_descriptors

    # skipped.csv names images the way assignments.csv does: relative to the input folder
    root = extra_settings.get("input")
    skipped = [
        (_relative_names([os.path.abspath(path)], Path(root))[0] if root else str(path), reason)
        for path, reason in (getattr(data, "skipped", None) or [])
    ]
    for path, reason in skipped[:5]:
        _log(args, f"skipped {path}: {reason}")
    if len(skipped) > 5:
        _log(args, f"... and {len(skipped) - 5} more skipped images (see skipped.csv)")
    start = time.perf_counter()
    with output as tmp:
        # A model refitted on a review (apply-review) assigns names: write them too.
        classes = None if model is None else getattr(model.steps[-1][1], "classes_", None)
        header = (
            ["path", "cluster"]
            + (["name"] if classes is not None else [])
            + ["anomaly_score"]
            + (["class"] if data.target is not None else [])
        )
        with open(tmp / "assignments.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(header)

            def write_rows(indices, chunk):
                for i, label, score in zip(indices, chunk.labels, chunk.image_scores, strict=True):
                    row = [names[i], int(label)]
                    row += [] if classes is None else [str(classes[int(label)])]
                    row.append(f"{float(score):.6g}")
                    if data.target is not None:
                        row.append(data.target_names[int(data.target[i])])
                    writer.writerow(row)

            result = run(write_rows)
        _log(args, result.gate)
        if (text := _auto_k_text(result)) is not None:
            _log(args, text)
        metrics = _metrics(args, data, result)
        settings = _settings(args, result, extra_settings)
        _log(args, "Writing the report ...")
        report_start = time.perf_counter()
        write_report(
            tmp / "report.html",
            result,
            items,
            names,
            coordinates=embed_descriptors(
                result.descriptors, random_state=getattr(args, "seed", 0)
            ),
            target=data.target,
            target_names=data.target_names,
            metrics=metrics,
            settings=settings,
            title=title,
            verbose=not args.quiet,
        )
        result.timings["report"] = time.perf_counter() - report_start
        timings = {k: round(v, 3) for k, v in result.timings.items()}
        if save_model:
            import joblib

            joblib.dump(result.model, tmp / "model.joblib")
        # The images' descriptors, in the order of assignments.csv (apply-review refits on them)
        np.save(tmp / "descriptors.npy", np.asarray(result.descriptors, dtype=np.float32))
        _write_json(
            tmp / "run.json",
            {"settings": settings, "timings_seconds": timings, "skipped": skipped},
        )
        if metrics is not None:
            _write_json(
                tmp / "metrics.json", {**metrics, "settings": settings, "timings_seconds": timings}
            )
        if skipped:
            with open(tmp / "skipped.csv", "w", newline="", encoding="utf-8") as stream:
                csv.writer(stream).writerows([("path", "reason"), *skipped])
    _log(args, f"Done in {time.perf_counter() - start:.1f} s; wrote {output.path}")
    _print_result(metrics, output.path, result)
    return 0


def _print_result(metrics, output, result):
    from .metrics import format_clustering_report

    sizes = np.bincount(np.asarray(result.labels), minlength=result.n_clusters)
    normal = (
        ""
        if result.normal_cluster is None
        else f"; cluster {result.normal_cluster} holds the images that look normal"
    )
    if result.get("cluster_names"):
        groups = ", ".join(f"{n}: {s}" for n, s in zip(result.cluster_names, sizes, strict=True))
        print(f"{_plural(len(result.labels), 'image')} by reviewed name ({groups})")
    else:
        print(
            f"{_plural(len(result.labels), 'image')} in {_plural(result.n_clusters, 'cluster')} "
            f"(sizes {', '.join(map(str, sizes))}){normal}"
        )
    if metrics is not None:
        print(format_clustering_report(metrics))
        if "localization" in metrics:
            loc = metrics["localization"]
            print(
                f"Localization: pixel AUROC {loc['pixel_auroc']:.3f}   AU-PRO {loc['au_pro']:.3f}"
            )
    print(f"Report: {output / 'report.html'}")


def _check_backbone(name):
    from .nn.features import BACKBONES

    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")


def _check_device(device):
    """A device that does not exist is a bad argument (exit 2), found before any work."""
    from ._torch import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise UserError(f"--device: {exc}") from None


def _cluster_params(args):
    from .pipeline import make_blind_pipeline

    params = dict(args.param or [])
    if params:  # unknown names fail here, before any work
        probe = make_blind_pipeline(
            2 if args.preset == "paper" else "auto", preset=args.preset, weights=None
        )
        valid = set(probe.get_params(deep=True))
        for name in params:
            if name not in valid:
                steps = ", ".join(name for name, _ in probe.steps)
                raise UserError(
                    f"--param: unknown parameter {name!r}; names are STEP__PARAMETER with "
                    f"STEP one of {steps}, e.g. localizer__n_steps (see the API reference)"
                )
    return params


def _fit_run(args, output, data, items, names, title, extra):
    from .run import cluster_images

    _check_backbone(args.backbone)
    _check_device(args.device)
    n = len(items)
    if n < 2:
        raise UserError(f"found {_plural(n, 'image')}; clustering needs at least 2")
    if args.n_clusters != "auto" and args.n_clusters > n:
        raise UserError(
            f"--n-clusters {args.n_clusters} is larger than the number of images ({n})"
        )
    params = _cluster_params(args)
    work = _work_dir(args, output)
    client = _client(args)
    sample = n if args.sample_size == "all" else args.sample_size

    def run(on_chunk):
        return cluster_images(
            items,
            args.n_clusters,
            preset=args.preset,
            backbone=args.backbone,
            weights=args.weights,
            image_size=args.image_size,
            device=args.device,
            params=params,
            sample_size=sample,
            chunk_size=args.chunk_size,
            client=client,
            work_dir=work,
            random_state=args.seed,
            on_chunk=on_chunk,
            verbose=not args.quiet,
        )

    try:
        status = _run_and_write(args, output, data, names, items, run, title, extra, True)
    finally:
        if client is not None:
            client.close()
    shutil.rmtree(work, ignore_errors=True)
    return status


def run_cluster(args) -> int:
    folder = Path(args.input)
    output = OutputFolder(args.output, OUTPUT_FILES, args.overwrite, folder).check()
    data = _load_folder(args, folder)
    _log(args, data.DESCR.replace("\n", " "))
    return _fit_run(
        args,
        output,
        data,
        data.filenames,
        _relative_names(data.filenames, folder),
        "Anomaly clustering report",
        {"input": str(folder.resolve()), "n_images": len(data.filenames)},
    )


def run_demo(args) -> int:
    from .datasets import make_synthetic_textures

    output = OutputFolder(args.output, OUTPUT_FILES, args.overwrite).check()
    data = make_synthetic_textures(random_state=args.seed)
    n, height, width = data.images.shape[:3]
    if args.n_clusters is None:
        args.n_clusters = len(data.target_names)
    data.skipped = []
    _log(
        args,
        f"Synthetic textures: {n} images of {height}x{width} px, "
        f"{len(data.target_names)} classes ({', '.join(data.target_names)}); the "
        "classes are used only for scoring.",
    )
    names = [f"synthetic/{i:03d}.png" for i in range(n)]
    return _fit_run(
        args,
        output,
        data,
        data.images,
        names,
        "Anomaly clustering report: synthetic textures (demo)",
        {"input": f"make_synthetic_textures(random_state={args.seed})", "n_images": n},
    )


def _load_model(args, path):
    from .model_io import load_model

    _log(
        args,
        f"Loading {path}: a model file can run code when loaded; load only models you "
        "trust (written by 'skanomclust cluster')",
    )
    try:
        return load_model(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def run_predict(args) -> int:
    from .run import assign_images

    model = _load_model(args, Path(args.model))
    folder = Path(args.input)
    # predict writes no model: a model.joblib in OUT (often the one just loaded) is kept
    names = tuple(name for name in OUTPUT_FILES if name != "model.joblib")
    output = OutputFolder(args.output, names, args.overwrite, folder).check()
    data = _load_folder(args, folder)
    _log(args, data.DESCR.replace("\n", " "))
    for _, step in model.steps[:-1]:
        if "verbose" in step.get_params():
            step.set_params(verbose=not args.quiet)
    if args.device != "cpu":
        _check_device(args.device)
        from .model_io import move_model

        move_model(model, args.device)
    work = _work_dir(args, output)
    client = _client(args)
    items = data.filenames

    def run(on_chunk):
        return assign_images(
            model,
            items,
            chunk_size=args.chunk_size,
            client=client,
            work_dir=work,
            on_chunk=on_chunk,
            verbose=not args.quiet,
        )

    try:
        status = _run_and_write(
            args,
            output,
            data,
            _relative_names(items, folder),
            items,
            run,
            "Anomaly cluster assignment of new images",
            {
                "model": str(Path(args.model).resolve()),
                "input": str(folder.resolve()),
                "n_images": len(items),
            },
            False,
            model=model,
        )
    finally:
        if client is not None:
            client.close()
    shutil.rmtree(work, ignore_errors=True)
    return status


def run_apply_review(args) -> int:
    from .review import ReviewError, apply_review

    try:
        summary = apply_review(
            args.run,
            args.review,
            args.output,
            mode="copy" if args.copy else "link",
            method=args.method,
            overwrite=args.overwrite,
        )
    except ReviewError as exc:
        raise UserError(str(exc)) from None
    names = ", ".join(f"{name}: {count}" for name, count in summary["names"].items())
    _log(args, f"Wrote {summary['output']}: {len(summary['names'])} names ({names})")
    return 0
