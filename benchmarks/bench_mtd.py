"""Anomaly-type clustering on MTD: the ablation ladder, quality, time and memory.

Protocols (the class folders are used only for scoring):

- ``6-class``: all 1344 images, k = 6 (the paper's protocol);
- ``5-class``: the 392 defective images only, k = 5 (AnomalyNCD's protocol).

Variants, all with offline MobileNetV2 features (the extractor's default
layers unless ``--layers`` is given) and Ward:

1. ``mean``: spatially averaged features;
2. ``fca+pool``: plain FCA maps, anomaly-weighted pooling (Eq. 2);
3. ``vae_fca+pool``: VAE + FCA maps, pooling (the paper's "w/o CL");
4. ``full``: VAE + FCA maps, contrastive refiner, for each threshold rule
   (``otsu``: k-free; ``kmeans``: the paper's heuristic, needs k, and the
   default of ``make_blind_pipeline(n_clusters=k)``).

Steps 2 to 4 are run without (the paper) and with ``+gate`` (this package's
normality gate on the descriptors, always on in these rows). The default,
``gate="auto"``, equals the ``+gate`` rows when the image scores' bimodality
coefficient (printed and stored with the full rows) exceeds 5/9, and the rows
without the gate otherwise. Every map has the
localizer's position baseline subtracted (the default); the rows marked
``paper frame`` use the same VAE + FCA maps post-processed as the paper does
instead (no baseline, a 5-cell frame cleared). ``--quick`` runs only
``mean``, ``vae_fca+pool`` (both post-processings) and the default full
method (k-means threshold, ``gate="auto"``). Features are stored
as ``--dtype`` (float16 by default, as in ``make_blind_pipeline``).

``results/mtd.json`` holds the current rows at 256 px (seed 0) and
``results/mtd_512.json`` those at 512 px (``--sizes 512``, seed 0);
``results/mtd_5class_seed1.json`` and ``..._seed2.json`` repeat the 5-class
protocol with ``--seed 1`` and ``--seed 2``. Two earlier runs, before the
position baseline existed (every map post-processed with the paper's frame),
are kept for reference: ``results/mtd_paper_frame_float32.json`` (float32
features, 256 and 512 px, both protocols) and
``results/mtd_paper_frame_float16_256.json`` (float16, 256 px, ``--quick``).

Also reports the k chosen by ``WardClustering(n_clusters="auto")`` on the
full method's descriptors.

Usage::

    python benchmarks/bench_mtd.py [--sizes 256 512] [--protocols 6-class 5-class]
        [--quick] [--dtype float16|float32] [--seed N] [--output FILE.json]

Writes ``--output`` (JSON, default ``benchmarks/results/mtd.json``) and the
same name with ``.md`` (a markdown table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import MTD, RESULTS, mtd_or_exit, save_rows, stage, write_markdown

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.metrics import clustering_report
from skanomclust.nn import postprocess_anomaly_maps
from skanomclust.nn.pooling import BIMODALITY_THRESHOLD


def _tag(gate):
    return " +gate" if gate else ""


def _gate_label(gate):
    return {None: "", "otsu": ", gate", "auto": ", gate auto"}[gate]


def run_protocol(
    name, filenames, target, k, size, seed, layers=None, quick=False, dtype="float16"
):
    print(
        f"== {name}, {len(filenames)} images, k={k}, {size}px, layers {layers}, {dtype}",
        flush=True,
    )
    timings, rows = {}, []

    def record(variant, descriptors, stages, extra=None):
        labels = WardClustering(n_clusters=k).fit_predict(descriptors)
        report = clustering_report(target, labels)
        row = {
            "protocol": name,
            "image_size": size,
            "variant": variant,
            "layers": layers or "default",
            "dtype": dtype,
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

    def pooling_rows(variant, data, maps_stage, suffix=""):
        """Anomaly-weighted pooling + Ward, without and with the gate."""
        for gate in (None, "otsu"):
            step = f"{variant} pooling{suffix}{_tag(gate)}"
            with stage(timings, step):
                pooled = AnomalyWeightedPooling(gate=gate).fit_transform(data)
            record(f"{variant}+pool{_tag(gate)}{suffix}", pooled, ["features", maps_stage, step])

    with stage(timings, "features"):
        features = TextureFeatureExtractor(
            image_size=size, layers=layers, dtype=dtype
        ).fit_transform(filenames)
    with stage(timings, "mean pooling"):
        means = features.mean(axis=(2, 3))
    record("mean", means, ["features", "mean pooling"])

    if not quick:
        with stage(timings, "fca maps"):
            fca_out = BlindAnomalyLocalizer("fca", random_state=seed).fit_transform(features)
        pooling_rows("fca", fca_out, "fca maps")
        del fca_out

    localizer = BlindAnomalyLocalizer("vae_fca", random_state=seed)
    with stage(timings, "vae_fca maps"):  # VAE training, maps and their position baseline
        localized = localizer.fit_transform(features)
    del features
    pooling_rows("vae_fca", localized, "vae_fca maps")

    # The same maps as the paper post-processes them: no position baseline, a
    # 5-cell frame cleared (its value for 64-cell maps). Map + baseline_ is the
    # raw map; the map channel is swapped in place and restored afterwards.
    ours = localized[:, -1].copy()
    paper = torch.from_numpy(ours.astype(np.float32) + localizer.baseline_)
    localized[:, -1] = postprocess_anomaly_maps(paper, blur_sigma=None, border=5).numpy()
    pooling_rows("vae_fca", localized, "vae_fca maps", ", paper frame")
    if not quick:
        step = "contrastive (otsu, gate), paper frame"
        refiner = ContrastiveRefiner("otsu", gate="otsu", random_state=seed)
        with stage(timings, step):
            descriptors = refiner.fit_transform(localized)
        record(
            "full (otsu threshold, gate), paper frame",
            descriptors,
            ["features", "vae_fca maps", step],
        )
    localized[:, -1] = ours
    del ours, paper

    configs = [("kmeans", None), ("kmeans", "otsu"), ("otsu", None), ("otsu", "otsu")]
    for rule, gate in [("kmeans", "auto")] if quick else configs:
        step = f"contrastive ({rule}{_gate_label(gate)})"
        refiner = ContrastiveRefiner(threshold=rule, n_clusters=k, gate=gate, random_state=seed)
        with stage(timings, step):
            descriptors = refiner.fit_transform(localized)
        auto = WardClustering(n_clusters="auto").fit(descriptors)
        record(
            f"full ({rule} threshold{_gate_label(gate)})",
            descriptors,
            ["features", "vae_fca maps", step],
            {
                "threshold": refiner.threshold_,
                "anomalous_share": refiner.anomalous_share_,
                "auto_k": int(auto.n_clusters_),
                "gate_bimodality": refiner.gate_bimodality_,
                "gated": refiner.gate_threshold_ is not None,
            },
        )
        print(
            f"     threshold {refiner.threshold_:.4f}, images above it "
            f"{refiner.anomalous_share_:.2f}, auto k = {auto.n_clusters_}, score "
            f"bimodality {refiner.gate_bimodality_:.3f} (gate='auto' "
            f"{'gates' if refiner.gate_bimodality_ > BIMODALITY_THRESHOLD else 'does not gate'})"
        )
    return rows


def _layers(layers):
    return layers if isinstance(layers, str) else "+".join(layers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--protocols", nargs="+", default=["6-class", "5-class"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layers", nargs="+", default=None, help="backbone layers (default: the extractor's)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only mean, vae_fca+pool and the default full method (kmeans threshold, gate auto)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="storage type of the features (default float16, as make_blind_pipeline)",
    )
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
                    protocol,
                    list(filenames),
                    target,
                    len(data.target_names),
                    size,
                    args.seed,
                    args.layers,
                    args.quick,
                    args.dtype,
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
                    args.layers,
                    args.quick,
                    args.dtype,
                )
            save_rows(args.output, args.data, rows)
    write_table(rows, Path(args.output).with_suffix(".md"))


def write_table(rows, path):
    """Markdown table of the result rows."""
    lines = [
        "| protocol | size | layers | features | variant | NMI | ARI | F1 | time (s) "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['protocol']} | {r['image_size']} | {_layers(r['layers'])} | "
        f"{r.get('dtype', 'float32')} | {r['variant']} | "
        f"{r['nmi']:.3f} | {r['ari']:.3f} | {r['f1']:.3f} | {r['seconds']:.0f} | "
        f"{r['peak_rss_mb']:.0f} |"
        for r in rows
    ]
    write_markdown(lines, path)


if __name__ == "__main__":
    main()
