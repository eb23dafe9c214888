"""Descriptor and clustering settings on the default maps, over the whole quality suite.

For every protocol of ``bench_suite.py`` and seeds 0, 1 and 2, the default
localizer is fitted once; each row then changes only the pooling step's or the
clustering step's parameters on the same maps (so rows differ by their
settings, not by the localizer's randomness). The rows are candidates for a
default: one is kept only if its mean NMI is at least the reference row's on
every protocol (within ``--tolerance``) and higher on average. The table prints,
per protocol, the mean NMI over seeds and the change against the default, the
spread over seeds, and, with more than three seeds, the means of seeds 0-2 and
of the others apart (the seeds a candidate was chosen on, and its check).

Usage::

    python benchmarks/bench_descriptors.py [--round 1|2|3|4] [--seeds 0 1 2] [--protocols ...]
        [--output benchmarks/results/descriptors_roundN.json] [--table-only]

Writes ``--output`` (JSON: every row, protocol and seed) and the same name
with ``.md`` (``--table-only`` rewrites the markdown from an existing JSON).
About 25 minutes (round 1), 18 (rounds 2 and 3) or 30 (round 4, six seeds)
on this 2-core machine (the localizer fits dominate; each row costs one
pooling and one clustering).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import RESULTS, machine, write_markdown
from bench_suite import PROTOCOLS, load_protocol, score

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    TextureFeatureExtractor,
    WardClustering,
)

# A pooling "parameter" of round 3: appearance_weight used only when the fitted
# normality gate is inactive (the default weight otherwise).
NO_GATE_WEIGHT = "appearance_weight if the gate is inactive"

# Rounds of candidates: row -> (AnomalyWeightedPooling parameters, WardClustering
# parameters); the first row of a round is its reference. Round 1 compared
# changes of single settings with the 0.2.0 default (features blurred before
# pooling, sigma 2, as in the paper); "no blur" won on every protocol and became
# the default (blur_sigma=0). Round 2 tries the other round-1 gains on top of it.
ROUNDS = {
    "1": {
        "0.2.0 default (blur_sigma 2)": ({"blur_sigma": 2.0}, {}),
        "appearance_weight 0.5": ({"blur_sigma": 2.0, "appearance_weight": 0.5}, {}),
        "appearance_weight 2": ({"blur_sigma": 2.0, "appearance_weight": 2.0}, {}),
        "appearance_spread 0.5": ({"blur_sigma": 2.0, "appearance_spread": 0.5}, {}),
        "appearance_spread 2": ({"blur_sigma": 2.0, "appearance_spread": 2.0}, {}),
        "tau 0.01": ({"blur_sigma": 2.0, "tau": 0.01}, {}),
        "tau 0.0005": ({"blur_sigma": 2.0, "tau": 0.0005}, {}),
        "no blur": ({"blur_sigma": 0.0}, {}),
        "blur_sigma 4": ({"blur_sigma": 4.0}, {}),
        "no mean subtraction": ({"blur_sigma": 2.0, "subtract_mean": False}, {}),
        "consensus Ward (50)": ({"blur_sigma": 2.0}, {"n_resamples": 50}),
    },
    "2": {
        "default (no blur)": ({}, {}),
        "+ no mean subtraction": ({"subtract_mean": False}, {}),
        "+ tau 0.01": ({"tau": 0.01}, {}),
        "+ appearance_weight 2": ({"appearance_weight": 2.0}, {}),
        "+ consensus Ward (50)": ({}, {"n_resamples": 50}),
        "default (no blur), k auto": ({}, {"n_clusters": "auto"}),
    },
    # Round 3: a heavier appearance view, always or only where the normality
    # gate found no group of normal images (every image defective: MTD-5,
    # X-SDD, PV), where the anomaly view has no normal images to contrast with.
    "3": {
        "default (no blur)": ({}, {}),
        "appearance_weight 1.5": ({"appearance_weight": 1.5}, {}),
        "appearance_weight 1.5 without gate": ({NO_GATE_WEIGHT: 1.5}, {}),
        "appearance_weight 2 without gate": ({NO_GATE_WEIGHT: 2.0}, {}),
        "appearance_weight 1.5 without gate, consensus (20)": (
            {NO_GATE_WEIGHT: 1.5},
            {"n_resamples": 20},
        ),
    },
    # Round 4: the appearance view at two scales instead of one, chosen among
    # fourteen pooling variants on seeds 0-2 and checked on seeds 3-5 (run with
    # --seeds 0 1 2 3 4 5).
    "4": {
        "default (no blur)": ({}, {}),
        "appearance_spread (0.7, 1.5)": ({"appearance_spread": (0.7, 1.5)}, {}),
    },
}


def run_protocol(name, seeds, rows, features_cache):
    items, target, k = load_protocol(name)
    key = PROTOCOLS[name][0]
    print(f"== {name}: {len(items)} images, k = {k}", flush=True)
    if key in features_cache and name == "mtd-5":  # MTD-5 is MTD's defective images
        every_item, features = features_cache[key]
        index = {item: i for i, item in enumerate(every_item)}
        features = features[[index[item] for item in items]]
    else:
        features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(items)
        if key is not None:
            features_cache[key] = (list(items), features)
    result = {}
    for seed in seeds:
        start = time.perf_counter()
        localized = BlindAnomalyLocalizer(random_state=seed).fit_transform(features)
        result[seed] = {}
        gate_active = None
        for row, (pooling, clustering) in rows.items():
            pooling = dict(pooling)
            no_gate_weight = pooling.pop(NO_GATE_WEIGHT, None)
            pool = AnomalyWeightedPooling(random_state=seed, **pooling)
            descriptors = pool.fit_transform(localized)
            gate_active = bool(pool.gate_.active_)
            if no_gate_weight is not None and not gate_active:
                pool.set_params(appearance_weight=no_gate_weight)
                descriptors = pool.fit_transform(localized)
            ward = WardClustering(**{"n_clusters": k, "random_state": seed, **clustering})
            labels = ward.fit_predict(descriptors)
            result[seed][row] = {
                **score(target, labels),
                "n_clusters": int(ward.n_clusters_),
                "gate_active": gate_active,
            }
        print(
            f"  seed {seed} (gate {'on' if gate_active else 'off'}, "
            f"{time.perf_counter() - start:.0f} s): "
            + ", ".join(f"{row} {r['nmi']:.3f}" for row, r in result[seed].items()),
            flush=True,
        )
        del localized
    return result


def table(results, rows, tolerance):
    protocols = list(results["protocols"])
    lines = [
        "**NMI, mean over seeds "
        + ", ".join(map(str, results["seeds"]))
        + "** (change against the first row in brackets; the same maps for every row)",
        "",
        "| row | " + " | ".join(protocols) + " | mean | kept? |",
        "|---" * (len(protocols) + 3) + "|",
    ]

    def mean_nmi(protocol, row):
        seeds = results["protocols"][protocol].values()
        return float(np.mean([s[row]["nmi"] for s in seeds]))

    reference = next(iter(rows))
    base = {p: mean_nmi(p, reference) for p in protocols}
    for row in rows:
        values = {p: mean_nmi(p, row) for p in protocols}
        changes = {p: values[p] - base[p] for p in protocols}
        cells = [
            f"{values[p]:.3f}" + ("" if row == reference else f" ({changes[p]:+.3f})")
            for p in protocols
        ]
        average = np.mean(list(values.values()))
        kept = (
            "-"
            if row == reference
            else (
                "yes"
                if min(changes.values()) >= -tolerance and np.mean(list(changes.values())) > 0
                else "no"
            )
        )
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {average:.3f} | {kept} |")
    lines += ["", f"Kept: no protocol lower by more than {tolerance} and higher on average."]
    lines += ["", "**NMI spread (max - min) over the seeds**", ""]
    lines += [
        "| row | " + " | ".join(protocols) + " | largest |",
        "|---" * (len(protocols) + 2) + "|",
    ]
    for row in rows:
        spreads = {}
        for p in protocols:
            values = [s[row]["nmi"] for s in results["protocols"][p].values()]
            spreads[p] = max(values) - min(values)
        cells = [f"{spreads[p]:.3f}" for p in protocols]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {max(spreads.values()):.3f} |")
    seeds = [str(seed) for seed in results["seeds"]]
    if len(seeds) > 3:  # the seeds a choice was made on, and the others
        halves = {
            "seeds " + ", ".join(seeds[:3]): seeds[:3],
            "seeds " + ", ".join(seeds[3:]): seeds[3:],
        }
        lines += ["", "**Mean NMI per group of seeds** (change against the first row)", ""]
        lines += [
            "| row | seeds | " + " | ".join(protocols) + " |",
            "|---" * (len(protocols) + 2) + "|",
        ]
        for row in rows:
            for label, group in halves.items():
                cells = []
                for p in protocols:
                    runs = results["protocols"][p]
                    value = np.mean([runs[s][row]["nmi"] for s in group])
                    change = value - np.mean([runs[s][reference]["nmi"] for s in group])
                    cells.append(
                        f"{value:.3f}" + ("" if row == reference else f" ({change:+.3f})")
                    )
                lines.append(f"| {row} | {label} | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--round", choices=ROUNDS, default="2")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--output", type=str, default=None)
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the markdown from --output's JSON"
    )
    args = parser.parse_args()
    rows = ROUNDS[args.round]
    args.output = args.output or str(RESULTS / f"descriptors_round{args.round}.json")
    if args.table_only:
        with open(args.output) as stream:
            results = json.load(stream)
        write_markdown(table(results, rows, args.tolerance), args.output.replace(".json", ".md"))
        return
    start = time.perf_counter()
    results = {"round": args.round, "seeds": args.seeds, "protocols": {}, "machine": machine()}
    cache = {}
    for name in args.protocols:
        results["protocols"][name] = run_protocol(name, args.seeds, rows, cache)
        results["minutes"] = round((time.perf_counter() - start) / 60, 1)
        with open(args.output, "w") as stream:
            json.dump(results, stream, indent=1)
    write_markdown(table(results, rows, args.tolerance), args.output.replace(".json", ".md"))


if __name__ == "__main__":
    main()
