"""When does the normality gate pay? Its gain against the share of normal images, on MTD.

``gate="auto"`` (the default of ``AnomalyWeightedPooling`` and
``ContrastiveRefiner``) gates only when the bimodality coefficient of the
training images' scores exceeds 5/9. This benchmark checks that rule against
what the gate does to the clustering as the share of normal images varies.

The features of all 1344 MTD images (offline MobileNetV2, default layers,
256 px, float16, as ``make_blind_pipeline``) are computed once; for each seed
a localizer (the defaults) is fitted on all images and every image is pooled
once (anomaly-weighted pooling, no gate: pooling is per image, so a subset's
descriptors are the rows of the whole set's). Then, for each share of normal
images, ``--draws`` random sets are drawn: the 392 defective images plus as
many normal ones as give that share. For each set it records the coefficient
of its scores and the NMI / ARI of Ward (k = 6) on its descriptors with the
gate (Otsu's threshold fitted on that set) and without. The maps come from
the localizer fitted on all images, not refitted per set, and there is no
contrastive step: this isolates the gate.

Usage::

    python benchmarks/bench_gate.py [--seeds 0 1 2] [--draws 5]
        [--shares 0.1 0.2 0.3 0.4 0.5 0.6 0.7] [--output FILE.json]

Writes ``--output`` (default ``benchmarks/results/gate.json``) and the same
name with ``.md``.
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
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.metrics import clustering_report
from skanomclust.nn.pooling import (
    BIMODALITY_THRESHOLD,
    fit_normality_gate,
    normality_gate,
    score_bimodality,
)


def gate_rows(descriptors, scores, target, good, shares, draws, seed):
    """One row per (share, draw): coefficient and clustering with and without the gate."""
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(target == good)
    defective = np.flatnonzero(target != good)
    k = len(np.unique(target))
    rows = []
    for share in shares:
        n_normal = int(round(share * len(defective) / (1 - share)))
        if n_normal > len(normal):
            raise SystemExit(f"share {share} needs {n_normal} normal images ({len(normal)})")
        for draw in range(draws):
            chosen = np.concatenate([rng.choice(normal, n_normal, replace=False), defective])
            chosen_scores = torch.from_numpy(scores[chosen])
            threshold, scale = fit_normality_gate(chosen_scores, "otsu", 0.1)
            gated = normality_gate(
                torch.from_numpy(descriptors[chosen]), chosen_scores, threshold, scale
            ).numpy()
            row = {"seed": seed, "share": share, "draw": draw, "n_images": len(chosen)}
            row["bimodality"] = score_bimodality(chosen_scores)
            for name, data in (("gate", gated), ("no_gate", descriptors[chosen])):
                report = clustering_report(target[chosen], WardClustering(k).fit_predict(data))
                row[f"nmi_{name}"], row[f"ari_{name}"] = report["nmi"], report["ari"]
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument(
        "--shares", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    )
    parser.add_argument("--output", default=str(RESULTS / "gate.json"))
    args = parser.parse_args()

    data = mtd_or_exit(args.data)
    target = np.asarray(data.target)
    good = data.target_names.index("good")
    timings = {}
    with stage(timings, "features"):
        features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(
            data.filenames
        )
    rows = []
    for seed in args.seeds:
        with stage(timings, f"maps and pooling, seed {seed}"):
            localized = BlindAnomalyLocalizer(random_state=seed).fit_transform(features)
            descriptors = AnomalyWeightedPooling(gate=None).fit_transform(localized)
            scores = localized[:, -1].reshape(len(localized), -1).max(axis=1)
            scores = scores.astype(np.float32)
            del localized
        rows += gate_rows(descriptors, scores, target, good, args.shares, args.draws, seed)
        save_rows(args.output, args.data, rows)
    write_table(rows, Path(args.output).with_suffix(".md"))


def write_table(rows, path):
    """Means over seeds and draws, one line per share."""
    lines = [
        "| normal share | images | bimodality | gated by 'auto' | NMI gate | NMI no gate "
        "| gain | ARI gate | ARI no gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for share in sorted({r["share"] for r in rows}):
        group = [r for r in rows if r["share"] == share]

        def mean(key, group=group):
            return float(np.mean([r[key] for r in group]))

        auto = np.mean([r["bimodality"] > BIMODALITY_THRESHOLD for r in group])
        lines.append(
            f"| {share:.2f} | {group[0]['n_images']} | {mean('bimodality'):.3f} | "
            f"{auto:.0%} | {mean('nmi_gate'):.3f} | {mean('nmi_no_gate'):.3f} | "
            f"{mean('nmi_gate') - mean('nmi_no_gate'):+.3f} | {mean('ari_gate'):.3f} | "
            f"{mean('ari_no_gate'):.3f} |"
        )
    write_markdown(lines, path)


if __name__ == "__main__":
    main()
