"""Which offline backbone and layer cluster MTD best with the simplest descriptor?

For every backbone with offline ImageNet weights (plus a randomly initialised
MobileNetV2 as a control) and several layer choices, this computes the
spatially averaged feature map of every MTD image, clusters the averages with
Ward (k = number of classes) and scores them against the class folders.
Throughput (images/second, feature extraction alone, this machine's CPU) is
measured per configuration on the first ``--timing-images`` images.

Usage::

    python benchmarks/bench_backbones.py [--data ../shared/data/mtd/magnetic_tile]
        [--sizes 256 512] [--output benchmarks/results/backbones.json]

Writes a JSON file and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering

from skanomclust import TextureFeatureExtractor
from skanomclust._images import check_images
from skanomclust.datasets import load_texture_folder
from skanomclust.metrics import clustering_report

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mtd" / "magnetic_tile"

# backbone -> (weights, candidate single layers, candidate layer combinations)
CANDIDATES = {
    "mobilenet_v2": (
        "offline",
        ["features.6", "features.10", "features.13"],
        [["features.6", "features.13"]],
    ),
    "efficientnet_lite0": (
        "offline",
        ["blocks.2", "blocks.3", "blocks.4"],
        [["blocks.2", "blocks.4"]],
    ),
    "efficientnet_lite1": (
        "offline",
        ["blocks.2", "blocks.3", "blocks.4"],
        [["blocks.2", "blocks.4"]],
    ),
    "efficientnet_lite2": (
        "offline",
        ["blocks.2", "blocks.3", "blocks.4"],
        [["blocks.2", "blocks.4"]],
    ),
    "mobilenet_v2 (random weights)": (None, ["features.6", "features.13"], []),
}


def mean_pooled_layers(extractor, filenames, image_size, batch_size=16):
    """Spatial mean of every requested layer, from one pass over the images."""
    images = check_images(filenames)
    pooled = {layer: [] for layer in extractor.layers_}
    with torch.inference_mode():
        for batch in images.iter_batches(batch_size, image_size):
            for layer, out in extractor.extractor_.forward_layers(batch).items():
                pooled[layer].append(out.mean(dim=(2, 3)).numpy())
    return {layer: np.concatenate(chunks) for layer, chunks in pooled.items()}


def throughput(backbone, weights, layers, filenames, image_size):
    extractor = TextureFeatureExtractor(
        backbone, layers=layers, weights=weights, image_size=image_size, random_state=0
    ).fit(filenames[:1])
    start = time.perf_counter()
    extractor.transform(filenames)
    return len(filenames) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--timing-images", type=int, default=96)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "backbones.json")
    args = parser.parse_args()

    data = load_texture_folder(args.data)
    filenames, target = data.filenames, data.target
    k = len(data.target_names)
    print(
        f"{args.data}: {len(filenames)} images, {k} classes; torch threads "
        f"{torch.get_num_threads()}"
    )
    rows = []
    for image_size in args.sizes:
        for name, (weights, singles, combos) in CANDIDATES.items():
            backbone = name.split(" ")[0]
            extractor = TextureFeatureExtractor(
                backbone, layers=singles, weights=weights, image_size=image_size, random_state=0
            ).fit(filenames[:1])
            start = time.perf_counter()
            pooled = mean_pooled_layers(extractor, filenames, image_size)
            pass_seconds = time.perf_counter() - start
            for layers in [[layer] for layer in singles] + combos:
                descriptors = np.concatenate([pooled[layer] for layer in layers], axis=1)
                labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(
                    descriptors
                )
                report = clustering_report(target, labels)
                speed = throughput(
                    backbone, weights, layers, filenames[: args.timing_images], image_size
                )
                row = {
                    "backbone": name,
                    "weights": extractor.weights_info_["source"],
                    "layers": layers,
                    "image_size": image_size,
                    "channels": int(descriptors.shape[1]),
                    "nmi": report["nmi"],
                    "ari": report["ari"],
                    "f1": report["f1"],
                    "images_per_second": speed,
                    "all_layers_pass_seconds": pass_seconds,
                }
                rows.append(row)
                _write(args, filenames, k, rows)  # partial results survive interruption
                print(
                    f"{image_size:4d} {name:32s} {'+'.join(layers):24s} "
                    f"NMI {row['nmi']:.3f} ARI {row['ari']:.3f} F1 {row['f1']:.3f} "
                    f"{speed:6.1f} img/s",
                    flush=True,
                )

    _write(args, filenames, k, rows)
    print("\n| size | backbone | layers | C | NMI | ARI | F1 | img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['image_size']} | {r['backbone']} | {'+'.join(r['layers'])} | "
            f"{r['channels']} | {r['nmi']:.3f} | {r['ari']:.3f} | {r['f1']:.3f} | "
            f"{r['images_per_second']:.1f} |"
        )
    print(f"\nwrote {args.output}")


def _write(args, filenames, k, rows):
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "data": str(args.data),
        "n_images": len(filenames),
        "n_clusters": k,
        "descriptor": "spatial mean of the feature map, Ward linkage",
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
