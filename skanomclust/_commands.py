"""What each command of :mod:`skanomclust.cli` does: read the input, run, write the outputs.

The outputs themselves are written by :mod:`skanomclust._command_output`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ._command_output import _log, _plural, _relative_names, _run_and_write
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
        # Values are checked against the steps' constraints here too, not at fit time.
        try:
            probe.set_params(**params)
            for _, step in probe.steps:
                step._validate_params()
        except ValueError as exc:  # scikit-learn's InvalidParameterError
            raise UserError(f"--param: {exc}") from None
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
    except BaseException as exc:
        if work.is_dir() and any(work.iterdir()):
            # cli.main prints this after its one-line message about the failure
            exc.resume_hint = (
                f"the finished part of this run is kept in {work}; "
                "the same command with --resume continues it"
            )
        raise
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
