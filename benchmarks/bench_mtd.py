"""Anomaly-type clustering on MTD: the ablation ladder, quality, time and memory.

Protocols (the class folders are used only for scoring):

- ``6-class``: all 1344 images, k = 6 (the paper's protocol);
- ``5-class``: the 392 defective images only, k = 5 (AnomalyNCD's protocol).

Variants, all with offline MobileNetV2 features (``features.6``) and Ward:

1. ``mean``: spatially averaged features;
2. ``fca+pool``: plain FCA maps, anomaly-weighted pooling (Eq. 2);
3. ``vae_fca+pool``: VAE + FCA maps, pooling (the paper's "w/o CL");
4. ``full``: VAE + FCA maps, contrastive refiner, for each threshold rule
   (``otsu``: k-free; ``kmeans``: the paper's heuristic, needs k).

Also reports the k chosen by ``WardClustering(n_clusters="auto")`` on the
full method's descriptors.

Usage::

    python benchmarks/bench_mtd.py [--sizes 256 512] [--protocols 6-class 5-class]

Writes ``benchmarks/results/mtd.json`` and ``benchmarks/results/mtd.md``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import MTD, RESULTS, machine, mtd_or_exit, stage

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.metrics import clustering_report


def run_protocol(name, filenames, target, k, size, seed):
    print(f"== {name}, {len(filenames)} images, k={k}, {size}px", flush=True)
    timings, rows = {}, []

    def record(variant, descriptors, stages, extra=None):
        labels = WardClustering(n_clusters=k).fit_predict(descriptors)
        report = clustering_report(target, labels)
        row = {
            "protocol": name,
            "image_size": size,
            "variant": variant,
            "nmi": round(report["nmi"], 4),
            "ari": round(report["ari"], 4),
            "f1": round(report["f1"], 4),
            "seconds": round(sum(timings[s]["seconds"] for s in stages), 1),
            "peak_rss_mb": max(timings[s]["peak_rss_mb"] for s in stages),
            "stages": {s: timings[s] for s in stages},
            "contingency": report["contingency"],
            **(extra or {}),
        }
        rows.append(row)
        print(
            f"  -> {variant:28s} NMI {row['nmi']:.3f} ARI {row['ari']:.3f} F1 {row['f1']:.3f}"
            f"  {row['seconds']:.0f} s, peak {row['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    with stage(timings, "features"):
        features = TextureFeatureExtractor(image_size=size).fit_transform(filenames)
    with stage(timings, "mean pooling"):
        means = features.mean(axis=(2, 3))
    record("mean", means, ["features", "mean pooling"])

    with stage(timings, "fca maps"):
        fca_out = BlindAnomalyLocalizer("fca").fit_transform(features)
    with stage(timings, "fca pooling"):
        pooled = AnomalyWeightedPooling().fit_transform(fca_out)
    del fca_out
    record("fca+pool", pooled, ["features", "fca maps", "fca pooling"])

    localizer = BlindAnomalyLocalizer("vae_fca", random_state=seed)
    with stage(timings, "vae fit"):
        localizer.fit(features)
    with stage(timings, "vae_fca maps"):
        localized = localizer.transform(features)
    del features
    with stage(timings, "vae_fca pooling"):
        pooled = AnomalyWeightedPooling().fit_transform(localized)
    record("vae_fca+pool", pooled, ["features", "vae fit", "vae_fca maps", "vae_fca pooling"])

    for rule in ("otsu", "kmeans"):
        refiner = ContrastiveRefiner(threshold=rule, n_clusters=k, random_state=seed)
        with stage(timings, f"contrastive ({rule})"):
            descriptors = refiner.fit_transform(localized)
        auto = WardClustering(n_clusters="auto").fit(descriptors)
        record(
            f"full ({rule} threshold)",
            descriptors,
            ["features", "vae fit", "vae_fca maps", f"contrastive ({rule})"],
            {
                "threshold": refiner.threshold_,
                "anomalous_share": refiner.anomalous_share_,
                "auto_k": int(auto.n_clusters_),
            },
        )
        print(
            f"     threshold {refiner.threshold_:.4f}, images above it "
            f"{refiner.anomalous_share_:.2f}, auto k = {auto.n_clusters_}"
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--protocols", nargs="+", default=["6-class", "5-class"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "mtd.json"))
    args = parser.parse_args()

    data = mtd_or_exit(args.data)
    filenames, target = np.array(data.filenames), np.asarray(data.target)
    good = data.target_names.index("good")
    rows = []
    for size in args.sizes:
        for protocol in args.protocols:
            if protocol == "6-class":
                rows += run_protocol(
                    protocol, list(filenames), target, len(data.target_names), size, args.seed
                )
            else:
                keep = target != good
                rows += run_protocol(
                    protocol,
                    list(filenames[keep]),
                    target[keep],
                    len(data.target_names) - 1,
                    size,
                    args.seed,
                )
            RESULTS.mkdir(exist_ok=True)
            with open(args.output, "w") as handle:
                json.dump(
                    {"data": args.data, "rows": rows, "machine": machine()}, handle, indent=2
                )
    lines = [
        "| protocol | size | variant | NMI | ARI | F1 | time (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['protocol']} | {r['image_size']} | {r['variant']} | {r['nmi']:.3f} | "
        f"{r['ari']:.3f} | {r['f1']:.3f} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    (RESULTS / "mtd.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
