"""VAE schedule and FCA channel projection on MTD: time and quality of the maps.

Why ``BlindAnomalyLocalizer`` defaults to ``n_steps=2000`` and
``fca_components=96``. The features of all 1344 MTD images (offline
MobileNetV2, default layers, 256 px, float16, as ``make_blind_pipeline``) are
computed once; then, for each localizer setting and seed, the VAE + FCA maps
of all images (``fit_transform``, position baseline subtracted) are scored:

- ``image AUROC``: the maximum of each map against "defective or not";
- ``6c``: anomaly-weighted pooling with the normality gate + Ward, k = 6, on
  all images (NMI / ARI / F1);
- ``5c``: the same maps, pooling without the gate + Ward, k = 5, on the 392
  defective images only (their maps and baseline come from all images here,
  unlike ``bench_mtd.py``'s 5-class protocol, which fits on those 392 only).

No contrastive step: this isolates the maps. Usage::

    python benchmarks/bench_vae_schedule.py [--seeds 0 1 2]
        [--settings 500:none 2000:none 2000:96 2000:64] [--output FILE.json]

Writes ``--output`` (default ``benchmarks/results/vae_schedule.json``) and the
same name with ``.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import MTD, RESULTS, mtd_or_exit, save_rows, write_markdown
from sklearn.metrics import roc_auc_score

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.contract import split_localizer_output
from skanomclust.metrics import clustering_report


def _setting(text):
    steps, _, components = text.partition(":")
    return int(steps), None if components in ("", "none") else int(components)


def score(Xt, target, good):
    """Image AUROC, 6-class scores with the gate and 5-class scores without."""
    maps = split_localizer_output(Xt)[1].reshape(len(Xt), -1).astype(np.float32)
    defective = target != good
    row = {"image_auroc": float(roc_auc_score(defective, maps.max(axis=1)))}
    descriptors = AnomalyWeightedPooling(gate="otsu").fit_transform(Xt)
    labels = WardClustering(len(np.unique(target))).fit_predict(descriptors)
    row["6c"] = clustering_report(target, labels)
    plain = AnomalyWeightedPooling(gate=None).fit_transform(Xt[defective])
    labels = WardClustering(len(np.unique(target)) - 1).fit_predict(plain)
    row["5c"] = clustering_report(target[defective], labels)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["500:none", "2000:none", "2000:96"],
        help="n_steps:fca_components pairs ('none': FCA on every channel)",
    )
    parser.add_argument("--output", default=str(RESULTS / "vae_schedule.json"))
    args = parser.parse_args()

    data = mtd_or_exit(args.data)
    target = np.asarray(data.target)
    good = data.target_names.index("good")
    start = time.perf_counter()
    X = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(data.filenames)
    print(f"features {X.shape} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for text in args.settings:
        n_steps, components = _setting(text)
        for seed in args.seeds:
            localizer = BlindAnomalyLocalizer(
                n_steps=n_steps, fca_components=components, random_state=seed
            )
            start = time.perf_counter()
            Xt = localizer.fit_transform(X)
            seconds = time.perf_counter() - start
            row = {"n_steps": n_steps, "fca_components": components, "seed": seed}
            row.update(seconds=round(seconds, 1), **score(Xt, target, good))
            del Xt
            rows.append(row)
            print(
                f"n_steps {n_steps:5d} fca_components {str(components):4s} seed {seed}: "
                f"{seconds:5.0f} s, image AUROC {row['image_auroc']:.3f}, "
                f"6c NMI {row['6c']['nmi']:.3f} ARI {row['6c']['ari']:.3f}, "
                f"5c NMI {row['5c']['nmi']:.3f} ARI {row['5c']['ari']:.3f}",
                flush=True,
            )
            save_rows(args.output, args.data, rows)
    write_table(rows, Path(args.output).with_suffix(".md"))


def write_table(rows, path):
    """Markdown table: one line per setting and seed, then the mean per setting."""
    lines = [
        "| n_steps | fca_components | seed | VAE + maps (s) | image AUROC | 6c NMI | 6c ARI "
        "| 5c NMI | 5c ARI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def line(steps, comps, seed, r):
        return (
            f"| {steps} | {comps} | {seed} | {r['seconds']:.0f} | {r['image_auroc']:.3f} | "
            f"{r['nmi6']:.3f} | {r['ari6']:.3f} | {r['nmi5']:.3f} | {r['ari5']:.3f} |"
        )

    settings = {}
    for r in rows:
        flat = {
            "seconds": r["seconds"],
            "image_auroc": r["image_auroc"],
            "nmi6": r["6c"]["nmi"],
            "ari6": r["6c"]["ari"],
            "nmi5": r["5c"]["nmi"],
            "ari5": r["5c"]["ari"],
        }
        key = (r["n_steps"], str(r["fca_components"]))
        settings.setdefault(key, []).append(flat)
        lines.append(line(*key, r["seed"], flat))
    for key, group in settings.items():
        mean = {name: float(np.mean([g[name] for g in group])) for name in group[0]}
        lines.append(line(*key, "mean", mean))
    write_markdown(lines, path)


if __name__ == "__main__":
    main()
