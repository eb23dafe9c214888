"""Localization quality, speed and memory of BlindAnomalyLocalizer on MTD.

For each image size, the offline MobileNetV2 features (the extractor's
default layers, float32) of all MTD images are extracted once; then each
localizer mode (``vae_fca``, ``fca``, ``vae``) is fitted on all images
(blind) and its maps, upsampled to each image's own size, are scored against
the pixel masks with pixel AUROC and AU-PRO (FPR <= 0.3). Every mode runs with the localizer's
defaults (position baseline, no border cleared: key ``baseline``);
``vae_fca`` is also scored as the paper post-processes its maps, without the
baseline and with each of ``--borders`` cleared (keys ``no baseline,
border=...``). Wall time and peak RSS of every stage are recorded.

``results/localization_256.json`` was measured this way;
``results/localization_512.json`` predates the position baseline and the
three-stage default layers (``features.6`` only; its keys ``border=...`` are
maps without a baseline).

Usage::

    python benchmarks/bench_localization.py [--sizes 256 512] [--data PATH]

Writes ``benchmarks/results/localization.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import MTD, RESULTS, machine, mtd_or_exit, stage

from skanomclust import BlindAnomalyLocalizer, TextureFeatureExtractor
from skanomclust.contract import split_localizer_output
from skanomclust.localization import resize_anomaly_maps
from skanomclust.metrics import au_pro, pixel_auroc


def score(maps, data):
    sizes = [m.shape for m in data.masks]
    resized = resize_anomaly_maps(maps, sizes)
    return {
        "pixel_auroc": round(pixel_auroc(data.masks, resized), 4),
        "au_pro": round(au_pro(data.masks, resized), 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(MTD))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--modes", nargs="+", default=["vae_fca", "fca", "vae"])
    parser.add_argument("--borders", nargs="+", default=["5", "auto", "0"])
    parser.add_argument(
        "--paper-vae",
        action="store_true",
        help="also run vae_fca with the paper's VAE size (512 hidden, 128 latent)",
    )
    parser.add_argument("--cache", default=None, help="folder to keep extracted features in")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "localization.json"))
    args = parser.parse_args()

    data = mtd_or_exit(args.data)
    print(f"MTD: {len(data.filenames)} images")
    results = {"data": args.data, "n_images": len(data.filenames), "runs": []}
    for size in args.sizes:
        timings = {}
        extractor = TextureFeatureExtractor("mobilenet_v2", weights="offline", image_size=size)
        cache = Path(args.cache) / f"mtd_mobilenet_v2_{size}.npy" if args.cache else None
        with stage(timings, f"features {size}px"):
            if cache is not None and cache.exists():
                features = np.load(cache)
                print(f"  (features read from {cache}; not a timing of the extractor)")
            else:
                features = extractor.fit_transform(data.filenames)
                if cache is not None:
                    np.save(cache, features)
        feature_mb = features.nbytes / 2**20
        print(f"{size}px: features {features.shape}, {feature_mb:.0f} MB")
        modes = list(args.modes) + (["vae_fca/paper-size"] if args.paper_vae else [])
        for mode in modes:
            vae_size = {}
            if mode.endswith("/paper-size"):
                vae_size = {"hidden_channels": 512, "latent_channels": 128}
            record = {
                "image_size": size,
                "mode": mode,
                "feature_shape": list(features.shape),
                "feature_mb": round(feature_mb, 1),
                "timings": dict(timings),
            }
            localizer = BlindAnomalyLocalizer(
                mode.split("/")[0], random_state=args.seed, **vae_size
            )
            with stage(record["timings"], f"{mode} fit"):
                localizer.fit(features)
            with stage(record["timings"], f"{mode} transform"):
                out = localizer.transform(features)
            maps = np.ascontiguousarray(split_localizer_output(out)[1])
            del out
            record["scores"] = {"baseline": score(maps, data)}
            fit_transform = (
                record["timings"][f"{mode} fit"]["seconds"]
                + record["timings"][f"{mode} transform"]["seconds"]
            )
            record["localizer_seconds"] = round(fit_transform, 2)
            record["features_seconds"] = timings[f"features {size}px"]["seconds"]
            if mode == "vae_fca":
                # The same VAE (same seed), maps post-processed as in the paper.
                paper = BlindAnomalyLocalizer(
                    "vae_fca", baseline=None, random_state=args.seed, **vae_size
                ).fit(features)
                for border in args.borders:
                    paper.set_params(border=border if border == "auto" else int(border))
                    start = time.perf_counter()
                    key = f"no baseline, border={border}"
                    record["scores"][key] = score(paper.anomaly_maps(features), data)
                    print(
                        f"  {key}: {record['scores'][key]} ({time.perf_counter() - start:.0f} s)"
                    )
            print(
                f"  {mode}: {record['scores']}  localizer {fit_transform:.1f} s vs features "
                f"{record['features_seconds']:.1f} s",
                flush=True,
            )
            results["runs"].append(record)
            _write(results, args.output)  # partial results survive an interrupted run
        del features
    _write(results, args.output)
    print(f"wrote {args.output}")


def _write(results, path):
    results["machine"] = machine()
    RESULTS.mkdir(exist_ok=True)
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
