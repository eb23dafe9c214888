"""Scale: time, throughput and peak memory of ``cluster_images`` on 1,000 to 50,000 images.

Issue 20's targets on this 2-core machine: wall time linear in N (within 20%),
peak RSS at 50,000 images within 1.2x that at 10,000, and throughput of the
streaming pass at least 80% of a bare feature-extraction pass.

Data (generated to disk once under ``--root``, default ``benchmarks/.scale_data``,
which holds its own ``.gitignore``; reused while the generator settings match):
the synthetic texture set, ``make_synthetic_textures(n_normal=60,
n_per_defect=15, image_size=round(1.25 * S), random_state=SEED)`` (135 base
images of 6 classes, ``S = --file-size``), re-sampled: image ``i`` takes its
own RNG ``numpy.random.default_rng([SEED, i])``, which draws a base image,
one of its 8 rotations / mirror images and an ``S x S`` crop at a random
offset (there are 135 x 8 x (S/4 + 1)^2 distinct images: 4.6 million at 256 px).
The crop keeps the base image's class folder as its label; a defect may be
partly cut off. Image ``i`` is the same whatever N, so the set of N images is
the first N of one pool, ``ROOT/pool/CLASS/IIIIII.jpg`` (JPEG, quality 95, as
most line cameras' images; ``--format png`` for lossless); ``ROOT/nN/`` holds
symbolic links to the first N for the command line
(``skanomclust cluster ROOT/n10000``).

Measurements, for each N, each in a fresh Python process:

- ``cluster``: ``skanomclust.run.cluster_images(files, "auto")`` with the
  default sample size (``sample_size="auto"``, 2,000 images) and chunk size,
  ``work_dir`` in ``ROOT/work`` (as the command line: anomaly maps go to disk)
  and ``on_chunk`` writing an ``assignments.csv`` as it goes; wall seconds of
  the call, images per second, the fit's and the streaming pass's seconds
  (streaming = call - fit) and the streaming pass's images per second
  (assigned images / streaming seconds), NMI against the class folders;
- ``bare features``: ``TextureFeatureExtractor(image_size, dtype="float16")``
  ``.transform`` over the same files in chunks of ``--chunk-size``, results
  dropped (the first ``--bare-max`` files, default all), with glibc's
  allocator set as ``cluster_images`` sets it (since 0.3.2);

with the peak RSS of the process (its ``VmHWM``; ``os.wait4``'s ``ru_maxrss``,
which also counts the parent's RSS at the fork, is kept as ``ru_maxrss_mb``).

Targets, printed and written: (1) linear time: the largest relative
deviation of the measured wall times from the least-squares line
``a + b N`` over all sizes (needs 3 sizes) is at most 20%; (2) peak RSS at
the largest size within 1.2x that at the second largest (50,000 and 10,000
by default); (3) streaming images/s at least 80% of the bare pass's, at the
largest size that streams (N above the sample size).

Usage::

    python benchmarks/bench_scale.py [--sizes 1000 10000 50000] [--root DIR]
        [--image-size 256] [--file-size 256] [--chunk-size 256] [--sample-size auto]
        [--weights offline] [--param STEP__NAME=VALUE ...] [--bare-max N]
        [--output benchmarks/results/scale.json]

Smoke test (seconds)::

    python benchmarks/bench_scale.py --sizes 60 120 --image-size 32 --file-size 32 \\
        --sample-size 40 --chunk-size 16 --weights none --param localizer__n_steps=5 \\
        --root /tmp/scale_smoke --output /tmp/scale_smoke/scale.json

Writes ``--output`` (JSON) and the same name with ``.md``; the JSON is rewritten
after every size, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE / ".scale_data"
GENERATOR_VERSION = 1
EXTENSIONS = {"jpg": ".jpg", "png": ".png"}


# ----------------------------------------------------------------------- data
def _generator_settings(args):
    return {
        "version": GENERATOR_VERSION,
        "file_size": args.file_size,
        "format": args.format,
        "seed": args.seed,
    }


def _base_set(settings):
    from skanomclust.datasets import make_synthetic_textures

    return make_synthetic_textures(
        n_normal=60,
        n_per_defect=15,
        image_size=int(round(1.25 * settings["file_size"])),
        random_state=settings["seed"],
    )


def _draws(settings, n_base, i):
    """Image ``i``'s base image, quarter turns, mirroring and crop offset (its own RNG)."""
    rng = np.random.default_rng([settings["seed"], i])
    margin = int(round(1.25 * settings["file_size"])) - settings["file_size"]
    base, turns, mirror = int(rng.integers(n_base)), int(rng.integers(4)), bool(rng.integers(2))
    top, left = (int(v) for v in rng.integers(margin + 1, size=2))
    return base, turns, mirror, top, left


def _resampled(base_set, settings, i):
    """Image ``i`` of the pool (see the module docstring)."""
    size = settings["file_size"]
    base, turns, mirror, top, left = _draws(settings, len(base_set.images), i)
    image = np.rot90(base_set.images[base], k=turns)
    if mirror:
        image = image[:, ::-1]
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def ensure_pool(root: Path, count: int, settings) -> list[Path]:
    """The first ``count`` images of the pool under ``root``, generated where missing."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("*\n")
    manifest = root / "manifest.json"
    found = json.loads(manifest.read_text()) if manifest.exists() else None
    if found is not None and found.get("settings") != settings:
        print(f"Generator settings changed: regenerating {root}", flush=True)
        manifest.unlink()
        for folder in [root / "pool", *root.glob("n[0-9]*")]:
            shutil.rmtree(folder, ignore_errors=True)
        found = None
    have = 0 if found is None else int(found["count"])
    base = _base_set(settings)
    ext = EXTENSIONS[settings["format"]]
    names = base.target_names

    def path(i):
        label = int(base.target[_draws(settings, len(base.images), i)[0]])
        return root / "pool" / names[label] / f"{i:06d}{ext}"

    if have < count:
        print(f"Generating images {have}..{count - 1} into {root / 'pool'}", flush=True)
        for name in names:
            (root / "pool" / name).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for i in range(have, count):
            options = {"quality": 95} if settings["format"] == "jpg" else {}
            Image.fromarray(_resampled(base, settings, i)).save(path(i), **options)
            if (i + 1) % 5000 == 0:
                print(f"  {i + 1} images, {time.perf_counter() - start:.0f} s", flush=True)
            if (i + 1) % 1000 == 0 or i + 1 == count:  # progress survives an interruption
                manifest.write_text(json.dumps({"settings": settings, "count": i + 1}))
    return [path(i) for i in range(count)]


def link_folder(root: Path, files: list[Path]) -> Path:
    """``root/nN``: symbolic links to the N files, in class folders (for the command line)."""
    folder = root / f"n{len(files)}"
    if not folder.exists():
        tmp = root / f".n{len(files)}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for file in files:
            target = tmp / file.parent.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
        os.replace(tmp, folder)
    return folder


# ----------------------------------------------------------------------- children
def child_cluster(args):
    """In a fresh process: cluster_images on the listed files; print one JSON line."""
    import csv

    from skanomclust.metrics import clustering_report
    from skanomclust.run import cluster_images

    files = Path(args.files).read_text().splitlines()
    classes = [Path(f).parent.name for f in files]
    names = sorted(set(classes))
    target = np.array([names.index(c) for c in classes])
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = dict(args.param or [])
    with open(work / "assignments.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "cluster", "anomaly_score"])

        def on_chunk(indices, chunk):
            for i, label, score in zip(indices, chunk.labels, chunk.image_scores, strict=True):
                writer.writerow([files[i], int(label), f"{float(score):.6g}"])

        start = time.perf_counter()
        result = cluster_images(
            files,
            "auto",
            weights=args.weights,
            image_size=args.image_size,
            params=params or None,
            sample_size=args.sample_size,
            chunk_size=args.chunk_size,
            work_dir=work / "run",
            random_state=args.seed,
            on_chunk=on_chunk,
        )
        seconds = time.perf_counter() - start
    fit_seconds = sum(result.timings[s] for s in ("features", "localizer", "descriptors"))
    fit_seconds += result.timings["clustering"]
    n, n_sample = len(files), len(result.sample_indices)
    streaming = seconds - fit_seconds
    report = clustering_report(target, np.asarray(result.labels))
    shutil.rmtree(work, ignore_errors=True)
    return {
        "seconds": round(seconds, 2),
        "images_per_second": round(n / seconds, 2),
        "sample_size": n_sample,
        "fit_seconds": round(fit_seconds, 2),
        "streaming_seconds": round(streaming, 2),
        "streaming_images_per_second": (
            round((n - n_sample) / streaming, 2) if n > n_sample else None
        ),
        "n_clusters": int(result.n_clusters),
        "nmi": round(float(report["nmi"]), 4),
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
    }


def child_bare(args):
    """In a fresh process: the feature extractor over the listed files, in chunks."""
    from skanomclust import TextureFeatureExtractor
    from skanomclust._torch import keep_freed_blocks_for_reuse

    # The floor under the same allocator settings as cluster_images (see its Notes).
    keep_freed_blocks_for_reuse()

    files = Path(args.files).read_text().splitlines()
    extractor = TextureFeatureExtractor(
        weights=args.weights, image_size=args.image_size, dtype="float16", random_state=args.seed
    ).fit(files[:1])
    start = time.perf_counter()
    for s in range(0, len(files), args.chunk_size):
        extractor.transform(files[s : s + args.chunk_size])
    seconds = time.perf_counter() - start
    return {
        "n_images": len(files),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(files) / seconds, 2),
    }


def run_child(kind, files, args, root):
    """Run ``kind`` on ``files`` in a fresh process: its JSON result, wall time and peak RSS."""
    lists = root / "lists"
    lists.mkdir(exist_ok=True)
    listing = lists / f"{kind}_{len(files)}.txt"
    listing.write_text("\n".join(map(str, files)) + "\n")
    out = lists / f"{kind}_{len(files)}.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--files",
        str(listing),
        "--child-output",
        str(out),
        "--work",
        str(root / "work" / f"n{len(files)}"),
        "--image-size",
        str(args.image_size),
        "--chunk-size",
        str(args.chunk_size),
        "--sample-size",
        str(args.sample_size),
        "--weights",
        "none" if args.weights is None else args.weights,
        "--seed",
        str(args.seed),
    ]
    for name, value in args.param or []:
        command += ["--param", f"{name}={value!r}"]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{kind} on {len(files)} images failed (exit {process.returncode})")
    result = json.loads(out.read_text())
    result["process_seconds"] = round(wall, 2)
    # ru_maxrss (KiB on Linux) also counts this process's RSS when it forked the child
    result["ru_maxrss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def _peak_rss_mb():
    """This process's peak RSS (VmHWM: of its own memory since exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ----------------------------------------------------------------------- targets, tables
def targets(rows):
    """The three targets of issue 20 from the rows measured so far."""
    sizes = [r["n_images"] for r in rows]
    out = {}
    if len(rows) >= 3:
        n = np.array(sizes, dtype=float)
        t = np.array([r["cluster"]["seconds"] for r in rows])
        slope, intercept = np.polyfit(n, t, 1)
        deviation = np.abs(t - (intercept + slope * n)) / t
        out["linear_time"] = {
            "fit_seconds": [round(float(intercept), 2), round(float(slope), 6)],
            "max_relative_deviation": round(float(deviation.max()), 3),
            "target": 0.2,
            "met": bool(deviation.max() <= 0.2),
        }
    if len(rows) >= 2:
        by_size = {r["n_images"]: r for r in rows}
        large, small = (
            (50000, 10000) if {50000, 10000} <= set(by_size) else sorted(sizes)[-1:-3:-1]
        )
        ratio = by_size[large]["cluster"]["peak_rss_mb"] / by_size[small]["cluster"]["peak_rss_mb"]
        out["flat_memory"] = {
            "sizes": [small, large],
            "rss_ratio": round(ratio, 3),
            "target": 1.2,
            "met": bool(ratio <= 1.2),
        }
    streaming = [r for r in rows if r["cluster"]["streaming_images_per_second"]]
    if streaming:
        row = max(streaming, key=lambda r: r["n_images"])
        ratio = row["cluster"]["streaming_images_per_second"] / row["bare"]["images_per_second"]
        out["streaming_throughput"] = {
            "size": row["n_images"],
            "ratio_to_bare_features": round(ratio, 3),
            "target": 0.8,
            "met": bool(ratio >= 0.8),
        }
    return out


def markdown(results):
    lines = [
        "| images | wall s | images/s | fit s (sample) | streaming s | streaming images/s "
        "| bare features images/s | peak RSS MB | bare peak RSS MB | k | NMI |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        c, b = r["cluster"], r["bare"]
        stream = c["streaming_images_per_second"]
        lines.append(
            f"| {r['n_images']} | {c['seconds']:.1f} | {c['images_per_second']:.2f} | "
            f"{c['fit_seconds']:.1f} ({c['sample_size']}) | {c['streaming_seconds']:.1f} | "
            f"{'-' if stream is None else f'{stream:.2f}'} | {b['images_per_second']:.2f} "
            f"({b['n_images']}) | {c['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | "
            f"{c['n_clusters']} | {c['nmi']:.3f} |"
        )
    lines += ["", "Targets (issue 20):", ""]
    t = results["targets"]
    if "linear_time" in t:
        x = t["linear_time"]
        lines.append(
            f"- time linear in N: largest deviation from the fitted line "
            f"{x['max_relative_deviation']:.1%} (target <= 20%): {_met(x)}"
        )
    else:
        lines.append("- time linear in N: needs 3 sizes")
    if "flat_memory" in t:
        x = t["flat_memory"]
        lines.append(
            f"- peak RSS at {x['sizes'][1]} / at {x['sizes'][0]} images: {x['rss_ratio']:.2f}x "
            f"(target <= 1.2x): {_met(x)}"
        )
    if "streaming_throughput" in t:
        x = t["streaming_throughput"]
        lines.append(
            f"- streaming throughput / bare feature pass at {x['size']} images: "
            f"{x['ratio_to_bare_features']:.0%} (target >= 80%): {_met(x)}"
        )
    else:
        lines.append("- streaming throughput: no size above the sample size")
    s = results["settings"]
    lines += [
        "",
        f"Settings: image size {s['image_size']} (files {s['file_size']} px {s['format']}), "
        f"sample size {s['sample_size']}, chunk size {s['chunk_size']}, weights "
        f"{s['weights']}, parameters {s['params'] or 'default'}; "
        f"{results['machine']['cpus']} CPUs, torch {results['machine']['torch']}.",
    ]
    return lines


def _met(x):
    return "met" if x["met"] else "NOT met"


# ----------------------------------------------------------------------- main
def _param(text):
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _sample_size(text):
    if text == "auto":
        return text
    value = float(text)
    return int(value) if value >= 1 else value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--image-size", type=int, default=256, help="pipeline image size")
    parser.add_argument("--file-size", type=int, default=256, help="size of the files on disk")
    parser.add_argument("--format", choices=sorted(EXTENSIONS), default="jpg")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--sample-size", type=_sample_size, default="auto")
    parser.add_argument(
        "--weights", default="offline", type=lambda s: None if s.lower() == "none" else s
    )
    parser.add_argument("--param", type=_param, action="append", metavar="STEP__NAME=VALUE")
    parser.add_argument("--bare-max", type=int, default=None, help="files of the bare pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "scale.json")
    # internal: one measurement in a fresh process
    parser.add_argument("--child", choices=("cluster", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        result = (child_cluster if args.child == "cluster" else child_bare)(args)
        result["peak_rss_mb"] = _peak_rss_mb()
        Path(args.child_output).write_text(json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    from _common import machine, write_markdown

    sizes = sorted(set(args.sizes))
    settings = _generator_settings(args)
    files = ensure_pool(args.root, max(sizes), settings)
    results = {
        "settings": {
            **settings,
            "image_size": args.image_size,
            "chunk_size": args.chunk_size,
            "sample_size": args.sample_size,
            "weights": args.weights,
            "params": dict(args.param or []),
            "root": str(args.root),
        },
        "rows": [],
        "targets": {},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        link_folder(args.root, files[:n])
        print(f"== {n} images", flush=True)
        cluster = run_child("cluster", files[:n], args, args.root)
        print(
            f"  cluster_images: {cluster['seconds']:.1f} s, {cluster['images_per_second']:.2f} "
            f"images/s, peak RSS {cluster['peak_rss_mb']:.0f} MB, streaming "
            f"{cluster['streaming_images_per_second']} images/s",
            flush=True,
        )
        bare = run_child("bare", files[: min(n, args.bare_max or n)], args, args.root)
        print(
            f"  bare features:  {bare['seconds']:.1f} s, {bare['images_per_second']:.2f} "
            f"images/s, peak RSS {bare['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        results["rows"].append({"n_images": n, "cluster": cluster, "bare": bare})
        results["targets"] = targets(results["rows"])
        results["machine"] = machine()
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(args.root / "work", ignore_errors=True)
    print()
    write_markdown(markdown(results), args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
