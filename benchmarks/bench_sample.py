"""Fit on a sample, assign the rest: the clustering's quality against fitting on all images.

Issue 20, point 4. ``cluster_images(..., sample_size=s)`` fits the method on a
random sample of the images and assigns the others with the fitted model.
This benchmark measures what that costs in quality on the quality suite's sets
(``load_protocol`` of ``bench_suite.py``: ``mtd-6``, ``mtd-5``, ``xsdd``,
``pv``, ``synthetic``), for samples of 25%, 50% and 100% of each set and seeds
0, 1 and 2.

What runs, per set: the backbone features of all images once
(``TextureFeatureExtractor(image_size=256, dtype="float16")``, offline
MobileNetV2, as ``make_blind_pipeline``; the features do not depend on the
seed or the sample). Then, per seed and share, exactly what
``cluster_images(images, k, sample_size=share, random_state=seed)`` computes
after the features: the sample drawn as it draws it
(``skanomclust.run._sample_indices``), the steps of ``make_blind_pipeline(k,
random_state=seed)`` after the extractor (localizer, pooling, Ward) fitted on
the sample's features, the sample's labels those of the fit, and every other
image assigned in chunks of 256 (localizer and pooling ``transform``, Ward
``predict``). At 100% this is the ordinary fit on all images.

Recorded per set, seed and share: NMI / ARI / F1 against the classes, NMI
between these labels and the 100% labels of the same seed (``agreement``),
seconds of the fit and of the assignment. The tables give the mean and the
spread (max - min) over seeds, and the loss: NMI at 100% minus NMI at the
share, per seed, averaged.

Usage::

    python benchmarks/bench_sample.py [--protocols mtd-6 mtd-5 xsdd pv synthetic]
        [--seeds 0 1 2] [--shares 0.25 0.5 1.0] [--output benchmarks/results/sample_size.json]
        [--param STEP__NAME=VALUE ...]

``--param`` changes a pipeline parameter (e.g. ``localizer__n_steps=50`` for a
quick check of the script); the results are meant for the defaults.

Writes ``--output`` (JSON, rewritten after every set) and the same name with
``.md``.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine, stage, write_markdown
from bench_suite import PROTOCOLS, load_protocol, score
from sklearn.metrics import normalized_mutual_info_score

from skanomclust import TextureFeatureExtractor, make_blind_pipeline
from skanomclust._random import Seeds
from skanomclust.run import _sample_indices

CHUNK = 256


def fit_on_sample(features, k, share, seed, params=None):
    """Labels of every image: the sample's from the fit, the others assigned; seconds."""
    n = len(features)
    sample = _sample_indices(n, float(share) if share < 1 else n, Seeds(seed))
    model = make_blind_pipeline(k, random_state=seed).set_params(**(params or {}))
    steps = [step for _, step in model.steps[1:]]
    *transformers, clustering = steps
    labels = np.empty(n, dtype=np.int64)
    start = time.perf_counter()
    data = features[sample]  # a copy: the localizer writes its maps into its input's buffer
    for step in transformers:
        data = step.fit_transform(data)
    labels[sample] = clustering.fit_predict(data)
    fit_seconds = time.perf_counter() - start
    del data
    rest = np.setdiff1d(np.arange(n), sample)
    start = time.perf_counter()
    for s in range(0, len(rest), CHUNK):
        chunk = rest[s : s + CHUNK]
        data = features[chunk]
        for step in transformers:
            data = step.transform(data)
        labels[chunk] = clustering.predict(data)
    assign_seconds = time.perf_counter() - start
    return labels, len(sample), fit_seconds, assign_seconds


def run_protocol(name, seeds, shares, params=None):
    items, target, k = load_protocol(name)
    print(f"== {name}: {len(items)} images, k = {k}", flush=True)
    timings = {}
    with stage(timings, "features"):
        features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(items)
    result = {"n_images": len(items), "k": k, "features": timings["features"], "seeds": {}}
    for seed in seeds:
        rows, full = {}, None
        for share in sorted(shares, reverse=True):  # 100% first: the reference
            labels, n_sample, fit_s, assign_s = fit_on_sample(features, k, share, seed, params)
            if share >= 1:
                full = labels
            rows[str(share)] = {
                **score(target, labels),
                "agreement": (
                    None
                    if full is None
                    else round(float(normalized_mutual_info_score(full, labels)), 4)
                ),
                "sample_size": n_sample,
                "fit_seconds": round(fit_s, 2),
                "assign_seconds": round(assign_s, 2),
            }
            row = rows[str(share)]
            print(
                f"  {name} seed {seed} share {share:4.2f} ({n_sample:4d} fitted): NMI "
                f"{row['nmi']:.3f} ARI {row['ari']:.3f} F1 {row['f1']:.3f} agreement "
                f"{row['agreement'] if row['agreement'] is not None else '-'} fit "
                f"{fit_s:.1f} s assign {assign_s:.1f} s",
                flush=True,
            )
        result["seeds"][str(seed)] = rows
    return result


def _mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.ptp(values):.3f}"


def tables(results):
    shares = [str(s) for s in results["shares"]]
    header = " | ".join(f"{float(s):.0%}" for s in shares)
    lines = [
        "NMI against the classes (mean ± spread over seeds); loss = NMI at 100% - NMI at the "
        "share, per seed, averaged; agreement = NMI between the share's and the 100% labels.",
        "",
        f"| set | images | k | NMI {header} | loss {header} | agreement {header} "
        f"| fit s {header} |",
        "|---|---:|---:|" + "---:|" * 4 * len(shares),
    ]
    worst = dict.fromkeys(shares, 0.0)
    for name, result in results["protocols"].items():
        seeds = list(result["seeds"].values())
        nmi, loss, agree, fit = [], [], [], []
        for s in shares:
            values = [r[s]["nmi"] for r in seeds if s in r]
            nmi.append(_mean_spread(values))
            reference = [r.get("1.0", {}).get("nmi") for r in seeds if s in r]
            losses = [ref - v for ref, v in zip(reference, values, strict=True) if ref is not None]
            loss.append(f"{np.mean(losses):+.3f}" if losses else "-")
            if losses:
                worst[s] = max(worst[s], float(np.mean(losses)))
            agree.append(_mean_spread([r[s]["agreement"] for r in seeds if s in r]))
            fit.append(f"{np.mean([r[s]['fit_seconds'] for r in seeds if s in r]):.0f}")
        lines.append(
            f"| {name} | {result['n_images']} | {result['k']} | {' | '.join(nmi)} | "
            f"{' | '.join(loss)} | {' | '.join(agree)} | {' | '.join(fit)} |"
        )
    lines += ["", "Largest mean loss over the sets (target: at most 0.02):", ""]
    for s in shares:
        verdict = "met" if worst[s] <= 0.02 else "NOT met"
        lines.append(f"- {float(s):.0%}: {worst[s]:+.3f} ({verdict})")
    return lines


def _param(text):
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--protocols", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS)
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--output", type=Path, default=RESULTS / "sample_size.json")
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        metavar="STEP__NAME=VALUE",
        help="a pipeline parameter other than the default (for quick checks only)",
    )
    args = parser.parse_args()
    shares = sorted(set(args.shares) | {1.0})
    if any(not 0 < s <= 1 for s in shares):
        parser.error("shares must be in (0, 1]")
    params = dict(args.param or [])
    results = {"shares": shares, "seeds": args.seeds, "params": params, "protocols": {}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for name in args.protocols:
        results["protocols"][name] = run_protocol(name, args.seeds, shares, params)
        results["machine"] = machine()
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    write_markdown(tables(results), args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
