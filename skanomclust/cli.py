"""The ``skanomclust`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


class UserError(Exception):
    """A failure the user can fix; printed as one line, exit code 2."""


def _prepare_output(path: Path, overwrite: bool) -> Path:
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"--output {path} is not empty; pass --overwrite to replace its files")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json_atomically(path: Path, payload) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def run_demo(args) -> int:
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering

    from . import TextureFeatureExtractor
    from .datasets import make_synthetic_textures
    from .metrics import clustering_report, format_clustering_report

    output = _prepare_output(Path(args.output), args.overwrite)
    data = make_synthetic_textures(random_state=args.seed)
    k = len(data.target_names)
    print(
        f"Synthetic textures: {len(data.images)} images of {data.images.shape[1]}x"
        f"{data.images.shape[2]} px, {k} classes ({', '.join(data.target_names)})"
    )
    timings = {}
    start = time.perf_counter()
    extractor = TextureFeatureExtractor(
        args.backbone, weights=args.weights, image_size=args.image_size, device=args.device,
        verbose=not args.quiet,
    )
    features = extractor.fit_transform(data.images)
    timings["features"] = time.perf_counter() - start
    start = time.perf_counter()
    descriptors = features.mean(axis=(2, 3))
    labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(descriptors)
    timings["clustering"] = time.perf_counter() - start
    report = clustering_report(data.target, labels, target_names=data.target_names)
    print(format_clustering_report(report))
    payload = {
        "method": "mean-pooled features + Ward",
        "nmi": report["nmi"], "ari": report["ari"], "f1": report["f1"],
        "contingency": report["contingency"],
        "settings": {"backbone": args.backbone, "weights": extractor.weights_info_,
                     "image_size": args.image_size, "seed": args.seed},
        "timings_seconds": timings,
    }
    _write_json_atomically(output / "metrics.json", payload)
    np.savetxt(output / "labels.txt", labels, fmt="%d")
    print(f"Wrote {output / 'metrics.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skanomclust",
        description="Blind localization and clustering of anomaly types in texture images.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"skanomclust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run on the embedded synthetic texture set")
    demo.add_argument("--output", default="skanomclust_demo")
    demo.add_argument("--overwrite", action="store_true")
    demo.add_argument("--backbone", default="mobilenet_v2")
    demo.add_argument("--weights", default="offline")
    demo.add_argument("--image-size", type=int, default=256)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=run_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"skanomclust: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"skanomclust: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("skanomclust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
