"""The VAE's training settings (precision, steps, learning rate) on every protocol of the suite.

``BlindAnomalyLocalizer(vae_precision=...)`` decides the dtype of the matrix
products of the VAE's training on the CPU. This script measures what bfloat16
does to the clusters and to the localizer's fit time: for every protocol of
``bench_suite.py`` (MTD-6, MTD-5, X-SDD, PV, synthetic) and every seed, the
default localizer (``random_state=seed``) with each precision, then the
default pooling and clustering of that seed; NMI / ARI / F1 against the class
folders and the localizer's ``fit_transform`` seconds. The features (offline
MobileNetV2, 256 px, float16) are computed once per protocol, as in the suite.
The baselines beside these rows (mean-pooled features + Ward, the paper's
configuration) are the suite's (``results/suite.md``): they do not involve
this parameter.

With ``--precisions float32`` alone it measures the default pipeline on every
protocol and seed, which is how a change that moves the features' rounding is
checked against the figures before it (0.3.7's folded batch norms:
``--seeds 0 1 2 3 4 5 --output benchmarks/results/folded_batch_norms.json``,
against the float32 rows of ``vae_precision.json``, measured with 0.3.6).

``--settings`` adds rows of other localizer parameters, each row a
comma-separated list of ``name=value`` (``n_steps=1000,learning_rate=0.003``),
with the default precision: how the VAE's budget was checked on every set
(``--settings n_steps=1000 n_steps=1000,learning_rate=0.003
n_steps=1500,learning_rate=0.0015 hidden_channels=96 --precisions float32
--output benchmarks/results/vae_budget.json``). The row label is the text given.

The output is rewritten after every run and read back at the start: runs
already in it are skipped, so an interrupted run resumes, and rows can be
added one precision at a time (``--precisions bfloat16`` first, then
``float32``).

Usage::

    python benchmarks/bench_vae_precision.py [--precisions float32 bfloat16]
        [--settings NAME=VALUE[,NAME=VALUE ...] ...] [--seeds 0 1 2]
        [--protocols mtd-6 mtd-5 xsdd pv synthetic]
        [--output benchmarks/results/vae_precision.json]

Writes ``--output`` (JSON) and the same name with ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine, write_markdown
from bench_suite import PROTOCOLS, _mean_spread, load_protocol, score

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    TextureFeatureExtractor,
    WardClustering,
)
from skanomclust.pipeline import PRESETS

METRICS = ("nmi", "ari", "f1")


def localizer_params(row):
    """The localizer parameters of a row: a precision name or ``name=value,...``."""
    if "=" not in row:
        return {"vae_precision": row}
    params = {}
    for item in row.split(","):
        name, _, text = item.partition("=")
        try:  # numbers, null, true/false
            params[name.strip()] = json.loads(text)
        except json.JSONDecodeError:  # a word, e.g. vae_precision=bfloat16
            params[name.strip()] = text
    return params


def run(protocol, rows, seeds, runs, save):
    """Every missing (row, seed) run of one protocol, saved as it finishes."""
    missing = [(r, s) for s in seeds for r in rows if f"{protocol}|{r}|{s}" not in runs]
    if not missing:
        return
    items, target, k = load_protocol(protocol)
    features = TextureFeatureExtractor(image_size=256, dtype="float16").fit_transform(items)
    for row, seed in missing:
        localizer = BlindAnomalyLocalizer(**localizer_params(row), random_state=seed)
        start = time.perf_counter()
        localized = localizer.fit_transform(features)
        seconds = time.perf_counter() - start
        descriptors = AnomalyWeightedPooling(random_state=seed).fit_transform(localized)
        clustering = WardClustering(k, **PRESETS["default"]["clustering"], random_state=seed)
        labels = clustering.fit_predict(descriptors)
        key = f"{protocol}|{row}|{seed}"
        runs[key] = {
            **score(target, labels),
            "localizer_seconds": round(seconds, 1),
            "vae_precision_": localizer.vae_precision_,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        print(key, runs[key], flush=True)
        save()
        del localized, descriptors


def tables(runs, protocols, rows, seeds):
    lines = []
    for metric in METRICS:
        lines += [
            f"**{metric.upper()}** (mean ± spread max - min over seeds "
            f"{', '.join(map(str, seeds))}; per seed in brackets)",
            "",
            "| setting | " + " | ".join(protocols) + " | mean |",
            "|---|" + "---|" * (len(protocols) + 1),
        ]
        for row in rows:
            cells, means = [], []
            for protocol in protocols:
                values = [runs.get(f"{protocol}|{row}|{s}", {}).get(metric) for s in seeds]
                if None in values:
                    cells.append("-")
                    continue
                means.append(np.mean(values))
                per_seed = ", ".join(f"{v:.3f}" for v in values)
                cells.append(f"{_mean_spread(values)} ({per_seed})")
            mean = f"{np.mean(means):.3f}" if len(means) == len(protocols) else "-"
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    lines += [
        "**Localizer fit seconds** (`fit_transform`, mean over seeds)",
        "",
        "| setting | " + " | ".join(protocols) + " |",
        "|---|" + "---|" * len(protocols),
    ]
    for row in rows:
        cells = []
        for protocol in protocols:
            values = [
                runs[key]["localizer_seconds"]
                for key in (f"{protocol}|{row}|{s}" for s in seeds)
                if key in runs
            ]
            cells.append(f"{np.mean(values):.1f}" if values else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--settings", nargs="+", default=[], metavar="NAME=VALUE[,...]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--output", type=Path, default=RESULTS / "vae_precision.json")
    args = parser.parse_args()
    data = json.loads(args.output.read_text()) if args.output.exists() else {"runs": {}}
    runs = data["runs"]

    def save():
        data["machine"] = machine()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(data, indent=1))

    for protocol in args.protocols:
        run(protocol, args.precisions + args.settings, args.seeds, runs, save)
    lines = tables(runs, args.protocols, args.precisions + args.settings, args.seeds)
    write_markdown(lines, args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
