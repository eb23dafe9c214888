"""How much of the seed-to-seed spread comes from the FCA projection's pixel sample.

The default localizer projects the FCA input (the VAE's residuals) onto 96
principal directions, estimated from 65,536 pixels of 256 randomly drawn
images. Its seed draws both the VAE (initial weights, training pixels) and
that sample. This script separates the two: for every VAE seed it keeps the
trained VAE and recomputes the maps with the projection fitted on the sample
of each projection seed, and once with the exact principal directions of
every pixel of every image (no sampling at all). Each set of maps then goes
through the default pooling and Ward at the protocol's k. The cell where the
VAE seed equals the projection seed is the default localizer of that seed.

Usage::

    python benchmarks/bench_projection.py [--protocols ...] [--vae-seeds 0 1 2]
        [--projection-seeds 0 1 2] [--output benchmarks/results/projection_variance.json]

Features come from ``bench_views.py``'s cache (``--cache``; computed and stored
there on first use: offline MobileNetV2, 256 px, float16). On this
2-core machine, with cached features and three VAE seeds, PV (893 images) took
about 7 minutes and the five protocols of the suite 34 minutes (the committed
results were run as ``--protocols pv mtd-5``, then ``synthetic xsdd mtd-6``, and
merged in the suite's order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import HERE, RESULTS, machine, write_markdown
from bench_suite import PROTOCOLS, load_protocol, score
from bench_views import cached_maps

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    WardClustering,
)
from skanomclust._random import Seeds
from skanomclust.nn.localization import (
    fca_input,
    fit_fca_projection,
    position_baseline,
    principal_channels,
)

COMPONENTS = BlindAnomalyLocalizer().fca_components


def exact_projection(features, vae, batch_size=16):
    """Principal directions of every pixel of the FCA input of every image.

    Holds every pixel in float32 (about 1 GB for MTD's 1344 images): simple,
    and enough for the suite's sets; a package version would accumulate the
    covariance instead, as :func:`principal_channels` does internally.
    """
    n, channels, h, w = features.shape
    pixels = torch.empty((n * h * w, channels), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(features[start : start + batch_size]).float()
            rows = fca_input(batch, vae).permute(0, 2, 3, 1).reshape(-1, channels)
            pixels[start * h * w : start * h * w + len(rows)] = rows
        components, mean = principal_channels(pixels, COMPONENTS)
    return components.numpy(), mean.numpy()


def sampled_projection(features, localizer, seed):
    """The default localizer's projection, as fitted with the draws of ``seed``."""
    with torch.inference_mode():
        components, mean = fit_fca_projection(
            torch.from_numpy(features),
            localizer.vae_,
            COMPONENTS,
            generator=Seeds(seed).torch("projection"),
            batch_size=localizer.batch_size,
        )
    return components.numpy(), mean.numpy()


def nmi_of_projection(features, localizer, projection, target, k, seed):
    """NMI of the default pooling and Ward on the maps under ``projection``."""
    localizer.fca_components_, localizer.fca_mean_ = projection
    maps = localizer._raw_maps(features)
    maps -= position_baseline(torch.from_numpy(maps)).numpy()
    localized = np.concatenate([features, maps[:, None].astype(features.dtype)], axis=1)
    del maps
    descriptors = AnomalyWeightedPooling(random_state=seed).fit_transform(localized)
    labels = WardClustering(n_clusters=k).fit_predict(descriptors)
    return score(target, labels)


def run_protocol(name, vae_seeds, projection_seeds, cache):
    _, target, k = load_protocol(name)
    features, _ = cached_maps(name, [], cache)  # the features only, cached once
    result = {}
    for vae_seed in vae_seeds:
        # The VAE of the default localizer of this seed (the projection and the
        # baseline do not change its draws); both are then set here.
        localizer = BlindAnomalyLocalizer(
            random_state=vae_seed, fca_components=None, baseline=None
        ).fit(features)
        row = {}
        for seed in projection_seeds:
            start = time.perf_counter()
            projection = sampled_projection(features, localizer, seed)
            row[str(seed)] = nmi_of_projection(
                features, localizer, projection, target, k, vae_seed
            )
            print(
                f"  {name} VAE seed {vae_seed}, projection seed {seed}: "
                f"NMI {row[str(seed)]['nmi']:.3f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        row["exact"] = nmi_of_projection(
            features, localizer, exact_projection(features, localizer.vae_), target, k, vae_seed
        )
        print(f"  {name} VAE seed {vae_seed}, exact: NMI {row['exact']['nmi']:.3f}", flush=True)
        result[str(vae_seed)] = row
    return result


def summary(results):
    """One line per protocol: the default's cells, every sampled cell, the exact ones."""
    lines = [
        "**Summary**: NMI mean ± spread over the VAE seeds",
        "",
        "| protocol | default (diagonal) | every sampled projection (mean) | exact projection |",
        "|---|---|---|---|",
    ]
    for name, rows in results["protocols"].items():
        diagonal = [row[seed]["nmi"] for seed, row in rows.items() if seed in row]
        sampled = [row[c]["nmi"] for row in rows.values() for c in row if c != "exact"]
        exact = [row["exact"]["nmi"] for row in rows.values()]
        # The default's cells, only when every VAE seed's own projection was run.
        default = (
            f"{np.mean(diagonal):.3f} ± {np.ptp(diagonal):.3f}"
            if len(diagonal) == len(rows)
            else "-"
        )
        lines.append(
            f"| {name} | {default} | "
            f"{np.mean(sampled):.3f} | {np.mean(exact):.3f} ± {np.ptp(exact):.3f} |"
        )
    return [*lines, ""]


def table(results):
    lines = summary(results)
    for name, rows in results["protocols"].items():
        columns = list(next(iter(rows.values())))
        lines += [
            f"**{name}: NMI by VAE seed (rows) and projection sample (columns)**; "
            "the diagonal is the default localizer of that seed",
            "",
            "| VAE seed | "
            + " | ".join(
                f"projection seed {c}" if c != "exact" else "every pixel (exact)" for c in columns
            )
            + " | spread over sampled projections |",
            "|---" * (len(columns) + 2) + "|",
        ]
        for vae_seed, row in rows.items():
            sampled = [row[c]["nmi"] for c in columns if c != "exact"]
            lines.append(
                f"| {vae_seed} | "
                + " | ".join(f"{row[c]['nmi']:.3f}" for c in columns)
                + f" | {np.ptp(sampled):.3f} |"
            )
        means = [np.mean([row[c]["nmi"] for row in rows.values()]) for c in columns]
        spreads = [np.ptp([row[c]["nmi"] for row in rows.values()]) for c in columns]
        lines.append("| mean | " + " | ".join(f"{m:.3f}" for m in means) + " | |")
        spread_cells = " | ".join(f"{s:.3f}" for s in spreads)
        lines.append(f"| spread over VAE seeds | {spread_cells} | |")
        lines.append("")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--vae-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--projection-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=HERE / ".views_cache")
    parser.add_argument("--output", type=Path, default=RESULTS / "projection_variance.json")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {"vae_seeds": args.vae_seeds, "protocols": {}, "machine": machine()}
    for name in args.protocols:
        print(f"== {name}", flush=True)
        results["protocols"][name] = run_protocol(
            name, args.vae_seeds, args.projection_seeds, args.cache
        )
    results["minutes"] = round((time.perf_counter() - start) / 60, 1)
    with open(args.output, "w") as stream:
        json.dump(results, stream, indent=1)
    write_markdown(table(results), args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
