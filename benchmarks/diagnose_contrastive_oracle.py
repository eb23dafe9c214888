"""Diagnostic: does the contrastive step help when its pixel labels are right?

Replaces the anomaly maps by the true defect masks (max-pooled to the feature
grid, plus 1% uniform noise to break ties) and compares, on MTD at 256 px with
the default offline MobileNetV2 features:

- anomaly-weighted pooling, without and with the normality gate;
- the contrastive refiner (pixels labelled by the masks), without and with it.

If the refiner beats pooling here but not with the method's own maps, its
shortfall comes from the maps (pixel labels), not from the contrastive step.

Usage::

    python benchmarks/diagnose_contrastive_oracle.py [--data PATH] [--size 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import MTD, mtd_or_exit
from torch.nn import functional as F

from skanomclust import (
    AnomalyWeightedPooling,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.metrics import clustering_report


def report(name, descriptors, target):
    full = clustering_report(target, WardClustering(6).fit_predict(descriptors))
    defective = target > 0
    five = clustering_report(
        target[defective], WardClustering(5).fit_predict(descriptors[defective])
    )
    print(
        f"{name:44s} 6-class NMI {full['nmi']:.3f} ARI {full['ari']:.3f} F1 {full['f1']:.3f}"
        f" | 5-class NMI {five['nmi']:.3f} ARI {five['ari']:.3f}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = mtd_or_exit(args.data)
    target = np.asarray(data.target)
    if data.target_names.index("good") != 0:
        raise SystemExit("expected 'good' as the first class")
    features = TextureFeatureExtractor(image_size=args.size).fit_transform(data.filenames)
    h, w = features.shape[-2:]
    masks = np.zeros((len(target), h, w), np.float32)
    for i, mask in enumerate(data.masks):
        if mask is not None and np.any(mask):
            grid = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
            masks[i] = F.adaptive_max_pool2d(grid, (h, w))[0, 0].numpy()
    noise = np.random.default_rng(args.seed).random(masks.shape, dtype=np.float32) * 0.01
    X = np.concatenate([features, (masks + noise)[:, None]], axis=1)
    del features
    print(f"images with defect pixels: {int((masks.reshape(len(masks), -1).max(1) > 0).sum())}")
    report(
        "oracle maps, pooling, no gate", AnomalyWeightedPooling(gate=None).fit_transform(X), target
    )
    report("oracle maps, pooling, gate", AnomalyWeightedPooling(gate=0.5).fit_transform(X), target)
    for gate in (None, 0.5):
        start = time.perf_counter()
        refiner = ContrastiveRefiner(threshold=0.5, gate=gate, random_state=args.seed)
        descriptors = refiner.fit_transform(X)
        seconds = time.perf_counter() - start
        report(f"oracle maps, contrastive, gate={gate} ({seconds:.0f} s)", descriptors, target)


if __name__ == "__main__":
    main()
