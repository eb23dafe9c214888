"""Descriptor views compared on cached anomaly maps, over the whole quality suite.

``bench_descriptors.py`` compares settings that the estimators expose. This
script compares ways of building the descriptor that they do not all expose
(a mean-pooled third view, the appearance view at several scales with weights
of their own, both views standardised per channel), from the same features
and maps: it fits the default localizer once per protocol and seed, caches
the features and maps under ``--cache``, and then evaluates every variant
with Ward clustering at the protocol's k. Seeds 0-2 were used to pick a
candidate and seeds 3-5 to check it (``--seeds 0 1 2 3 4 5``); the table shows
both groups apart, so the check is not mixed with the choice.

Usage::

    python benchmarks/bench_views.py [--seeds 0 1 2 3 4 5] [--protocols ...]
        [--cache benchmarks/.views_cache] [--output benchmarks/results/descriptor_views.json]
        [--table-only]

On this 2-core machine the localizer fits take about 25 minutes per three
seeds over the five protocols (once; the cache, 1.7 GB, is then reused) and
the evaluation about 20 minutes for six seeds (seventeen Ward clusterings per
protocol and seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import HERE, RESULTS, machine, write_markdown
from bench_suite import PROTOCOLS, load_protocol, score

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.contract import image_scores
from skanomclust.nn.gate import apply_gate
from skanomclust.nn.pooling import anomaly_weighted_pooling, spread_weighted_pooling

SPREADS = (0.5, 0.7, 1.0, 1.5)


def cached_maps(name, seeds, cache: Path):
    """Features (float16) and the default localizer's maps of every seed, fitted once."""
    cache.mkdir(parents=True, exist_ok=True)
    features_file = cache / f"{name}_features.npy"
    missing = [seed for seed in seeds if not (cache / f"{name}_maps{seed}.npy").exists()]
    if features_file.exists():
        features = np.load(features_file)
    else:
        items, _, _ = load_protocol(name)
        features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(items)
        np.save(features_file, features)
    for seed in missing:
        start = time.perf_counter()
        localized = BlindAnomalyLocalizer(random_state=seed).fit_transform(np.asarray(features))
        np.save(cache / f"{name}_maps{seed}.npy", localized[:, -1].astype(np.float32))
        print(f"  {name} seed {seed}: maps in {time.perf_counter() - start:.0f} s", flush=True)
        del localized
    maps = {seed: np.load(cache / f"{name}_maps{seed}.npy") for seed in seeds}
    return np.asarray(features), maps


def views(features, maps, batch_size=64):
    """Anomaly view, appearance views at every spread of SPREADS, mean-pooled view."""
    anomaly, appearance, mean = [], {s: [] for s in SPREADS}, []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            chunk = torch.from_numpy(features[start : start + batch_size]).float()
            chunk_maps = torch.from_numpy(maps[start : start + batch_size])
            anomaly.append(anomaly_weighted_pooling(chunk, chunk_maps, blur_sigma=0))
            for spread in SPREADS:
                appearance[spread].append(
                    spread_weighted_pooling(chunk, chunk_maps, spread=spread, blur_sigma=0)
                )
            mean.append(chunk.mean(dim=(2, 3)))
    return (
        torch.cat(anomaly),
        {spread: torch.cat(parts) for spread, parts in appearance.items()},
        torch.cat(mean),
    )


def standard(view):
    """Standardised per channel over the images, then unit length per image."""
    scale = view.std(0, correction=0).clamp_min(1e-6)
    return F.normalize((view - view.mean(0)) / scale, dim=1)


def variants(anomaly, appearance, mean):
    """Every descriptor compared: name -> list of weighted blocks (the gate comes after)."""
    unit = F.normalize(anomaly, dim=1)
    a = {spread: standard(view) for spread, view in appearance.items()}
    return {
        "default (spread 1)": [unit, a[1.0]],
        "spread 1.5": [unit, a[1.5]],
        "spread 0.7": [unit, a[0.7]],
        "+ mean view x .5": [unit, a[1.0], 0.5 * standard(mean)],
        "+ mean view": [unit, a[1.0], standard(mean)],
        "spreads (1, 1.5)": [unit, a[1.0], a[1.5]],
        "spreads (1, 0.7)": [unit, a[1.0], a[0.7]],
        "spreads (1, 0.5)": [unit, a[1.0], a[0.5]],
        "spreads (1, 0.7 x .7)": [unit, a[1.0], 0.7 * a[0.7]],
        "spreads (0.7, 1, 1.5)": [unit, a[0.7], a[1.0], a[1.5]],
        "spreads (0.7, 1, 1.5) x 1/sqrt 3": [unit] + [a[s] / 3**0.5 for s in (0.7, 1.0, 1.5)],
        "spreads (0.7, 1, 1.5) x sqrt(2/3)": [unit]
        + [a[s] * (2 / 3) ** 0.5 for s in (0.7, 1.0, 1.5)],
        "spreads (0.7, 1.5)": [unit, a[0.7], a[1.5]],
        "spreads (0.7, 1.5) x 1/sqrt 2": [unit, a[0.7] / 2**0.5, a[1.5] / 2**0.5],
        "spreads (0.7, 1.5) x .85": [unit, 0.85 * a[0.7], 0.85 * a[1.5]],
        "spreads (0.5, 1.5)": [unit, a[0.5], a[1.5]],
        "both views standardised": [standard(anomaly), a[1.0]],
    }


def run_protocol(name, seeds, cache):
    items, target, k = load_protocol(name)
    del items
    features, maps = cached_maps(name, seeds, cache)
    result = {}
    for seed in seeds:
        localized = np.concatenate([features, maps[seed][:, None].astype(features.dtype)], 1)
        pooling = AnomalyWeightedPooling(random_state=seed).fit(localized)
        scores = image_scores(torch.from_numpy(maps[seed])).numpy()
        weights = pooling.gate_.weights(scores) if pooling.gate_.active_ else None
        anomaly, appearance, mean = views(features, maps[seed])
        result[seed] = {}
        for row, blocks in variants(anomaly, appearance, mean).items():
            descriptors = torch.cat(blocks, 1)
            if weights is not None:
                descriptors = apply_gate(descriptors, torch.from_numpy(weights))
            labels = WardClustering(n_clusters=k).fit_predict(descriptors.numpy())
            result[seed][row] = score(target, labels)
        default = pooling.transform(localized)  # the package's own default descriptor
        labels = WardClustering(n_clusters=k).fit_predict(default)
        assert score(target, labels) == result[seed]["default (spread 1)"], "not the default"
        print(
            f"  {name} seed {seed}: "
            + ", ".join(f"{row} {r['nmi']:.3f}" for row, r in result[seed].items()),
            flush=True,
        )
    return result


def table(results):
    protocols = list(results["protocols"])
    seeds = [str(seed) for seed in results["seeds"]]
    groups = [seeds[i : i + 3] for i in range(0, len(seeds), 3)]
    rows = list(next(iter(next(iter(results["protocols"].values())).values())))
    reference = rows[0]
    lines = []
    for group in groups:
        lines += [
            f"**NMI, seeds {', '.join(group)}**: mean (change against the default) and "
            "spread (max - min)",
            "",
            "| row | " + " | ".join(protocols) + " | mean | largest spread |",
            "|---" * (len(protocols) + 3) + "|",
        ]
        for row in rows:
            cells, means, spreads = [], [], []
            for p in protocols:
                runs = results["protocols"][p]
                values = [runs[s][row]["nmi"] for s in group]
                change = np.mean(values) - np.mean([runs[s][reference]["nmi"] for s in group])
                means.append(np.mean(values))
                spreads.append(max(values) - min(values))
                cells.append(
                    f"{np.mean(values):.3f}"
                    + ("" if row == reference else f" ({change:+.3f})")
                    + f" ± {spreads[-1]:.3f}"
                )
            lines.append(
                f"| {row} | "
                + " | ".join(cells)
                + f" | {np.mean(means):.3f} | {max(spreads):.3f} |"
            )
        lines.append("")
    return lines


def cached_maps_parser(description: str, output: str) -> argparse.ArgumentParser:
    """Arguments of the scripts that read this cache: seeds, protocols, cache, output."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--cache", type=Path, default=HERE / ".views_cache")
    parser.add_argument("--output", type=str, default=str(RESULTS / output))
    return parser


def main():
    parser = cached_maps_parser(__doc__.split("\n")[0], "descriptor_views.json")
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the markdown from --output's JSON"
    )
    args = parser.parse_args()
    if args.table_only:
        with open(args.output) as stream:
            write_markdown(table(json.load(stream)), args.output.replace(".json", ".md"))
        return
    run_and_write(run_protocol, args)


def run_and_write(run, args):
    """``run(protocol, seeds, cache)`` on every protocol of ``args``; the JSON and its table.

    The JSON is rewritten after every protocol (a long run keeps what it did).
    """
    start = time.perf_counter()
    results = {"seeds": args.seeds, "protocols": {}, "machine": machine()}
    for name in args.protocols:
        print(f"== {name}", flush=True)
        results["protocols"][name] = run(name, args.seeds, args.cache)
        results["minutes"] = round((time.perf_counter() - start) / 60, 1)
        with open(args.output, "w") as stream:
            json.dump(results, stream, indent=1)
    # the table reads the seeds as the JSON writes them (strings)
    write_markdown(table(json.loads(json.dumps(results))), args.output.replace(".json", ".md"))


if __name__ == "__main__":
    main()
