"""Every step on an accelerator: per-stage seconds against the feature-pass floor.

Runs the default pipeline (``make_blind_pipeline(6)``, seed 0) on MTD step by step
with ``device=DEVICE`` at each image size, and records for every stage the wall
seconds (the device synchronised before each clock reading), the peak accelerator
memory, and the ratio of the whole method to one feature pass (the physical floor
of the method: the backbone must see every image once). The feature pass is timed
twice: the first includes loading the backbone and warming the device up, the
second is the floor. NMI / ARI against MTD's classes, and the NMI of the device's
labels against the CPU labels of the same seed (``--cpu-reference``, at the first
size only: the CPU run is the slow part of this script).

Meant for a GPU machine, in under 5 minutes (``--data`` is a copy of MTD, since
``../shared`` does not travel; see the README of the device tool)::

    python benchmarks/bench_device.py --device cuda --sizes 256 512 --cpu-reference \
        --data data/mtd/magnetic_tile

On a CPU-only machine, ``--device cpu --quick`` checks that the script runs
(synthetic images). glibc's allocator is set as a whole job sets it
(:func:`skanomclust.run.cluster_images`, the command line); ``--malloc default``
leaves it as a bare Python process has it (the estimators alone).
Writes ``benchmarks/results/device_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import MTD, RESULTS, machine, write_markdown
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from skanomclust._torch import keep_freed_blocks_for_reuse
from skanomclust.datasets import load_texture_folder, make_synthetic_textures
from skanomclust.nn.localization import localize_images
from skanomclust.nn.vae_training import train_pixel_vae
from skanomclust.pipeline import make_blind_pipeline


def synchronise(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def split_localizer(device, seconds):
    """Time the localizer's two parts (VAE training, map computation) inside its stage.

    The localizer module calls ``train_pixel_vae`` and ``localize_images`` by name;
    both are wrapped with synchronised clocks that add into ``seconds``.
    """
    import skanomclust.localization as localization

    def wrap(name, function):
        def timed(*args, **kwargs):
            synchronise(device)
            start = time.perf_counter()
            out = function(*args, **kwargs)
            synchronise(device)
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 2)
            return out

        return timed

    localization.train_pixel_vae = wrap("  localizer: VAE training", train_pixel_vae)
    localization.localize_images = wrap("  localizer: maps (VAE + FCA)", localize_images)


def run(items, k, size, device, seed=0, vae_precision="float32"):
    """Fit the default pipeline step by step; per-stage seconds, peak memory, labels."""
    model = make_blind_pipeline(k, image_size=size, device=device, random_state=seed)
    model.set_params(localizer__vae_precision=vae_precision)
    steps = dict(model.steps)
    seconds, memory = {}, {}
    split_localizer(device, seconds)

    def timed(name, call, *arguments):
        synchronise(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = call(*arguments)
        synchronise(device)
        seconds[name] = round(time.perf_counter() - start, 2)
        if device.startswith("cuda"):
            memory[name] = round(torch.cuda.max_memory_allocated() / 2**20)
        return out

    timed("features (first pass)", steps["features"].fit_transform, items)
    features = timed("features", steps["features"].transform, items)
    maps = timed("localizer", steps["localizer"].fit_transform, features)
    del features
    descriptors = timed("pooling", steps["pooling"].fit_transform, maps)
    del maps
    labels = timed("clustering", steps["clustering"].fit_predict, descriptors)
    method = sum(
        v for key, v in seconds.items() if key != "features (first pass)" and key[0] != " "
    )
    return {
        "seconds": seconds,
        "peak_device_mb": memory,
        "method_over_feature_pass": round(method / max(seconds["features"], 1e-9), 2),
    }, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--data", type=Path, default=MTD)
    parser.add_argument("--cpu-reference", action="store_true")
    parser.add_argument(
        "--repeat", action="store_true", help="refit at the first size: are the labels the same?"
    )
    parser.add_argument("--quick", action="store_true", help="synthetic images, 64 px")
    parser.add_argument(
        "--malloc",
        choices=("job", "default"),
        default="job",
        help="glibc's allocator as cluster_images and the command line set it (job), "
        "or as a bare Python process has it (default)",
    )
    parser.add_argument(
        "--vae-precision",
        choices=("float32", "bfloat16", "auto"),
        default="float32",
        help="the localizer's vae_precision (default float32, the package's default)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.malloc == "job":
        keep_freed_blocks_for_reuse()
    if args.quick:
        data = make_synthetic_textures(random_state=0)
        items, target, k, sizes = list(data.images), data.target, 6, [64]
    else:
        data = load_texture_folder(args.data, load_masks=False)
        items, target, k, sizes = data.filenames, data.target, 6, args.sizes
    results = {
        "machine": machine(),
        "device": args.device,
        "malloc": args.malloc,
        "vae_precision": args.vae_precision,
        "n_images": len(items),
        "sizes": {},
    }
    if args.device.startswith("cuda"):
        results["device_name"] = torch.cuda.get_device_name()
    lines = [
        f"**Default pipeline on {'synthetic' if args.quick else 'MTD'} "
        f"({len(items)} images), device {args.device}, seed 0, malloc {args.malloc}, "
        f"vae_precision {args.vae_precision}**",
        "",
        "| size | stage | seconds | peak device MB |",
        "|---|---|---|---|",
    ]
    output = args.output or RESULTS / f"device_{args.device.split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        record, labels = run(items, k, size, args.device, vae_precision=args.vae_precision)
        record["nmi"] = round(normalized_mutual_info_score(target, labels), 4)
        record["ari"] = round(adjusted_rand_score(target, labels), 4)
        if args.cpu_reference and i == 0 and args.device != "cpu":
            cpu, cpu_labels = run(items, k, size, "cpu")
            record["cpu"] = cpu
            agreement = normalized_mutual_info_score(cpu_labels, labels)
            record["nmi_vs_cpu_labels"] = round(agreement, 4)
        if args.repeat and i == 0:
            _, again = run(items, k, size, args.device)
            record["same_labels_when_refitted"] = bool(np.array_equal(labels, again))
        results["sizes"][size] = record
        print(json.dumps({size: record}), flush=True)
        for stage, seconds in record["seconds"].items():
            mb = record["peak_device_mb"].get(stage, "")
            lines.append(f"| {size} | {stage} | {seconds} | {mb} |")
        lines.append(
            f"| {size} | **method / feature pass** | **{record['method_over_feature_pass']}x** "
            f"| NMI {record['nmi']} ARI {record['ari']}"
            + (f", NMI vs CPU labels {record['nmi_vs_cpu_labels']}" if "cpu" in record else "")
            + (
                f", same labels when refitted: {record['same_labels_when_refitted']}"
                if "same_labels_when_refitted" in record
                else ""
            )
            + " |"
        )
        # Written after every size, so that a run stopped at its time limit keeps what it measured.
        output.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(lines, output.with_suffix(".md"))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
