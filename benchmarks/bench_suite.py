"""The quality suite: every real data set under ../shared/data and the synthetic set.

Protocols (each set's README gives its own; class folders only score):

- ``mtd-6``: MTD, all 1344 images, k = 6 (the paper's protocol);
- ``mtd-5``: MTD's 392 defective images, k = 5 (AnomalyNCD's protocol);
- ``xsdd``: X-SDD, 1360 images, k = 7 (no normal class, large defects);
- ``pv``: PV-Multi-Defect, 893 images, k = 5 (no normal class);
- ``synthetic``: ``make_synthetic_textures(random_state=0)``, 135 images, k = 6.

Rows, for seeds 0, 1 and 2 (offline MobileNetV2 features at 256 px, float16,
computed once per set; they do not depend on the seed):

- ``mean-pooled + Ward``: spatially averaged backbone features (baseline);
- ``paper``: ``make_blind_pipeline(k, preset="paper")`` (FCA on every
  channel, the paper's frame, no baseline, no appearance view, no gate, the
  k-means threshold, contrastive step);
- ``paper w/o CL``: the same maps, the paper's Eq. 2 descriptors;
- ``default``: ``make_blind_pipeline(k)``;
- ``default - X``: the default with one of this package's additions off
  (appearance view, normality gate, mixture gate -> Otsu gate, position
  baseline -> the paper's frame, FCA projection -> every channel, consensus
  of 50 resampled Ward clusterings -> one Ward clustering);
- ``default + contrastive``: the default with the contrastive step;
- ``default, k auto``: the default with ``n_clusters="auto"`` (the chosen k
  is stored).

The rows share computations where the result is exactly the same: one
localizer fit with the default projection and one on every channel per seed;
the paper's frame is applied to (map + baseline_), which is the map that
``BlindAnomalyLocalizer(baseline=None, border="auto")`` computes with the same
seed (same VAE, same projection).

Usage::

    python benchmarks/bench_suite.py [--quick] [--seeds 0 1 2] [--protocols ...]
        [--output benchmarks/results/suite.json]

``--quick``: seed 0, the default and the cheap rows (one localizer fit per
set). Writes ``--output`` (JSON, every row of every seed) and the same name
with ``.md`` (tables: NMI / ARI / F1 as mean and spread over seeds; seconds
per stage and peak RSS; auto-k).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, machine, stage, write_markdown

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.contract import split_localizer_output
from skanomclust.datasets import load_texture_folder, make_synthetic_textures
from skanomclust.metrics import clustering_report
from skanomclust.nn import postprocess_anomaly_maps
from skanomclust.pipeline import PRESETS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PROTOCOLS = {
    "mtd-6": ("mtd/magnetic_tile", 6, False),
    "mtd-5": ("mtd/magnetic_tile", 5, True),
    "xsdd": ("xsdd", 7, False),
    "pv": ("pv_multi_defect", 5, False),
    "synthetic": (None, 6, False),
}
PAPER = {"fca_components": None}
ABLATIONS = {  # row -> AnomalyWeightedPooling parameters (on the default maps)
    "default - appearance view": {"appearance_weight": 0.0},
    "default - normality gate": {"gate": None},
    "default, Otsu gate instead of mixture": {"gate": "otsu"},
}


def load_protocol(name):
    folder, k, defective_only = PROTOCOLS[name]
    if folder is None:
        data = make_synthetic_textures(random_state=0)
        return list(data.images), data.target, k
    data = load_texture_folder(SHARED / folder, load_masks=False)
    items, target = data.filenames, data.target
    if defective_only:
        keep = target != data.target_names.index("good")
        items = [f for f, kept in zip(items, keep, strict=True) if kept]
        target = target[keep]
    return items, target, k


def paper_frame(output, baseline):
    """The localizer output with its maps as the paper post-processes them (a copy)."""
    features, maps = split_localizer_output(output)
    raw = torch.from_numpy(maps.astype(np.float32) + baseline)
    framed = np.empty_like(output)
    framed[:, :-1] = features
    framed[:, -1] = postprocess_anomaly_maps(
        raw, blur_sigma=None, border=int(round(5 * min(raw.shape[-2:]) / 64))
    ).numpy()
    return framed


def score(target, labels):
    report = clustering_report(target, labels)
    return {key: round(float(report[key]), 4) for key in ("nmi", "ari", "f1")}


def run_seed(name, features, target, k, seed, timings, quick):
    rows = {}

    def clustering_of(preset, n_clusters=k):
        return WardClustering(n_clusters, **PRESETS[preset]["clustering"], random_state=seed)

    def record(row, descriptors, stages, clustering=None):
        clustering = clustering or clustering_of("default")
        with stage(timings, f"{row}: clustering"):
            labels = clustering.fit_predict(descriptors)
        rows[row] = {
            **score(target, labels),
            "n_clusters": int(clustering.n_clusters_),
            "seconds": {s: timings[s]["seconds"] for s in [*stages, f"{row}: clustering"]},
            "peak_rss_mb": max(timings[s]["peak_rss_mb"] for s in stages),
        }
        print(
            f"  {name} seed {seed} {row:40s} NMI {rows[row]['nmi']:.3f} "
            f"ARI {rows[row]['ari']:.3f} F1 {rows[row]['f1']:.3f} k {rows[row]['n_clusters']}",
            flush=True,
        )

    localizer = BlindAnomalyLocalizer(random_state=seed)
    with stage(timings, "localizer (default)"):
        localized = localizer.fit_transform(features)
    with stage(timings, "pooling (default)"):
        default = AnomalyWeightedPooling(random_state=seed).fit_transform(localized)
    base = ["features", "localizer (default)"]
    record("default", default, [*base, "pooling (default)"])
    record(
        "default, k auto",
        default,
        [*base, "pooling (default)"],
        clustering_of("default", "auto"),
    )
    for row, params in ABLATIONS.items():
        with stage(timings, f"{row}: pooling"):
            descriptors = AnomalyWeightedPooling(random_state=seed, **params).fit_transform(
                localized
            )
        record(row, descriptors, [*base, f"{row}: pooling"])
    record(
        "default - consensus (one Ward clustering)",
        default,
        [*base, "pooling (default)"],
        WardClustering(n_clusters=k, random_state=seed),
    )
    if quick:
        return rows
    with stage(timings, "contrastive (default)"):
        descriptors = ContrastiveRefiner(random_state=seed).fit_transform(localized)
    record("default + contrastive", descriptors, [*base, "contrastive (default)"])
    framed = paper_frame(localized, localizer.baseline_)
    with stage(timings, "frame: pooling"):
        descriptors = AnomalyWeightedPooling(random_state=seed).fit_transform(framed)
    record("default - position baseline (paper frame)", descriptors, [*base, "frame: pooling"])
    del localized, framed

    every = BlindAnomalyLocalizer(random_state=seed, **PAPER)
    with stage(timings, "localizer (every channel)"):
        localized = every.fit_transform(features)
    base = ["features", "localizer (every channel)"]
    with stage(timings, "every channel: pooling"):
        descriptors = AnomalyWeightedPooling(random_state=seed).fit_transform(localized)
    record(
        "default - FCA projection (every channel)", descriptors, [*base, "every channel: pooling"]
    )
    framed = paper_frame(localized, every.baseline_)
    del localized
    with stage(timings, "paper: contrastive"):
        descriptors = ContrastiveRefiner(
            "kmeans", threshold_clusters=k, appearance_weight=0.0, gate=None, random_state=seed
        ).fit_transform(framed)
    record("paper", descriptors, [*base, "paper: contrastive"], clustering_of("paper"))
    with stage(timings, "paper w/o CL: pooling"):
        descriptors = AnomalyWeightedPooling(
            appearance_weight=0.0, gate=None, blur_sigma=2.0
        ).fit_transform(framed)
    record("paper w/o CL", descriptors, [*base, "paper w/o CL: pooling"], clustering_of("paper"))
    return rows


def run_protocol(name, seeds, quick):
    items, target, k = load_protocol(name)
    print(f"== {name}: {len(items)} images, k = {k}", flush=True)
    timings = {}
    with stage(timings, "features"):
        features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(items)
    with stage(timings, "mean-pooled + Ward: pooling"):
        means = features.mean(axis=(2, 3), dtype=np.float32)
    result = {"n_images": len(items), "k": k, "seeds": {}}
    for seed in seeds:
        seed_timings = dict(timings)
        rows = run_seed(name, features, target, k, seed, seed_timings, quick)
        labels = WardClustering(n_clusters=k).fit_predict(means)
        rows["mean-pooled + Ward"] = {
            **score(target, labels),
            "n_clusters": k,
            "seconds": {
                s: seed_timings[s]["seconds"] for s in ("features", "mean-pooled + Ward: pooling")
            },
            "peak_rss_mb": seed_timings["features"]["peak_rss_mb"],
        }
        result["seeds"][seed] = rows
        result.setdefault("timings", seed_timings)  # the first seed's, for the table
    return result


def _mean_spread(values):
    return (
        f"{np.mean(values):.3f} ± {np.ptp(values):.3f}"
        if len(values) > 1
        else (f"{values[0]:.3f}")
    )


def tables(results):
    protocols = list(results["protocols"])
    rows = []
    for proto in results["protocols"].values():
        for seed_rows in proto["seeds"].values():
            rows += [r for r in seed_rows if r not in rows]
    order = ["mean-pooled + Ward", "paper", "paper w/o CL", "default"]
    rows = [r for r in order if r in rows] + [r for r in rows if r not in order]
    lines = []
    for metric in ("nmi", "ari", "f1"):
        lines += [
            f"**{metric.upper()}** (mean ± spread over seeds "
            f"{', '.join(map(str, results['seeds']))})",
            "",
            "| row | " + " | ".join(protocols) + " | mean |",
            "|---" * (len(protocols) + 2) + "|",
        ]
        for row in rows:
            cells, means = [], []
            for p in protocols:
                values = [
                    s[row][metric] for s in results["protocols"][p]["seeds"].values() if row in s
                ]
                cells.append(_mean_spread(values) if values else "")
                means += [np.mean(values)] if values else []
            mean = f"{np.mean(means):.3f}" if len(means) == len(protocols) else ""
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    lines += [
        '**Chosen k with `n_clusters="auto"`** (per seed) and its NMI',
        "",
        "| protocol | true k | chosen k | NMI auto | NMI true k |",
        "|---|---|---|---|---|",
    ]
    for p, proto in results["protocols"].items():
        seeds = proto["seeds"].values()
        if not all("default, k auto" in s for s in seeds):
            continue
        chosen = ", ".join(str(s["default, k auto"]["n_clusters"]) for s in seeds)
        lines.append(
            f"| {p} | {proto['k']} | {chosen} | "
            f"{_mean_spread([s['default, k auto']['nmi'] for s in seeds])} | "
            f"{_mean_spread([s['default']['nmi'] for s in seeds])} |"
        )
    lines += [
        "",
        "**Seconds per stage and peak RSS** (seed 0)",
        "",
        "| protocol | stage | seconds | peak RSS (MB) |",
        "|---|---|---|---|",
    ]
    for p, proto in results["protocols"].items():
        for name, record in proto.get("timings", {}).items():
            lines.append(
                f"| {p} | {name} | {record['seconds']:.1f} | {record['peak_rss_mb']:.0f} |"
            )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    output = args.output or RESULTS / ("suite_quick.json" if args.quick else "suite.json")
    known = {folder.split("/")[0] for folder, _, _ in PROTOCOLS.values() if folder}
    for extra in sorted(p.name for p in SHARED.iterdir() if p.is_dir()) if SHARED.is_dir() else []:
        if extra not in known:
            print(f"warning: {SHARED / extra} has no protocol in this suite yet", flush=True)
    results = {"seeds": seeds, "quick": args.quick, "protocols": {}}
    start = time.perf_counter()
    for name in args.protocols:
        proto = run_protocol(name, seeds, args.quick)
        results["protocols"][name] = proto
        results["machine"] = machine()
        results["minutes"] = round((time.perf_counter() - start) / 60, 1)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(tables(results), output.with_suffix(".md"))


if __name__ == "__main__":
    main()
