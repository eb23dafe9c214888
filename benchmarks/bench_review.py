"""The review loop, measured: a reviewed model on held-out images, and the page at scale.

1. ``model``: MTD (``../shared/data/mtd``), split in two halves stratified by class
   (seeded). The blind method is fitted on one half (``cluster_images``, k = 6, the
   defaults); its true classes play the reviewer's names. The final step is then
   refitted on those names (:class:`skanomclust.review.ReviewedClassifier`, both
   methods), and the other half is assigned with ``assign_images``: accuracy and
   macro-F1 of the names against the true classes. For comparison, the blind
   clusters named after their majority class in the fitted half ("blind, majority
   names"), which is what a reviewer who only renames clusters gets.
2. ``page``: a report of N images (default 5000; 16 synthetic texture files of 128 x 96 px,
   random maps, descriptors in 8 groups), written with ``write_report`` on every core; its HTML
   size, picture folder size, and the load time in headless chromium until the page
   has drawn (``body[data-ready]``), plus the time to move 100 selected images.

Usage::

    python benchmarks/bench_review.py [--parts model page] [--seeds 0 1 2] [--n-images 5000]

Writes ``benchmarks/results/review.json`` and ``review.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import MTD, RESULTS, machine, write_markdown
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from skanomclust.datasets import load_texture_folder, make_synthetic_textures
from skanomclust.review import ReviewedClassifier
from skanomclust.run import assign_images, cluster_images


def reviewed_model_on_held_out(seed):
    data = load_texture_folder(MTD, load_masks=False)
    files = np.array(data.filenames)
    fit, held = train_test_split(
        np.arange(len(files)), test_size=0.5, stratify=data.target, random_state=seed
    )
    start = time.perf_counter()
    result = cluster_images(list(files[fit]), 6, random_state=seed)
    seconds = time.perf_counter() - start
    names = np.array(data.target_names)
    truth_fit, truth_held = names[data.target[fit]], names[data.target[held]]
    rows = {}
    # blind clusters named after their majority class in the fitted half
    majority = {
        c: max(set(truth_fit[result.labels == c]), key=list(truth_fit[result.labels == c]).count)
        for c in np.unique(result.labels)
    }
    blind = assign_images(result.model, list(files[held]))
    predicted = np.array([majority.get(c, "?") for c in blind.labels])
    rows["blind, majority names"] = predicted
    for method in ("centroid", "logistic"):
        classifier = ReviewedClassifier(method=method, random_state=seed)
        classifier.fit(result.descriptors, truth_fit)
        # the held-out descriptors do not depend on the final step: reuse them
        predicted = classifier.predict(blind.descriptors)
        rows[f"reviewed, {method}"] = predicted
    scores = {
        row: {
            "accuracy": round(float(accuracy_score(truth_held, p)), 4),
            "macro_f1": round(float(f1_score(truth_held, p, average="macro")), 4),
        }
        for row, p in rows.items()
    }
    for row, s in scores.items():
        print(f"  seed {seed} {row:24s} accuracy {s['accuracy']:.3f} macro-F1 {s['macro_f1']:.3f}")
    return {"fit_seconds": round(seconds, 1), "n_fit": len(fit), "n_held": len(held), **scores}


def page_at_scale(n, seed=0):
    from playwright.sync_api import sync_playwright

    from skanomclust.report import write_report

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 8, n)
    centres = rng.normal(size=(8, 32))
    descriptors = centres[groups] + 0.5 * rng.normal(size=(n, 32))
    maps = rng.random((n, 12, 16)).astype(np.float32)
    base = make_synthetic_textures(8, 2, image_size=128, random_state=seed).images[:16, 16:112]
    result = Bunch(
        labels=groups,
        anomaly_maps=maps,
        image_scores=maps.max(axis=(1, 2)),
        descriptors=descriptors,
        region_threshold=0.9,
        n_clusters=8,
    )
    folder = Path(tempfile.mkdtemp())
    try:
        from PIL import Image

        for j, picture in enumerate(base):  # files, as in a CLI run: linked, not copied
            Image.fromarray(picture).save(folder / f"{j}.png")
        images = [folder / f"{i % 16}.png" for i in range(n)]
        start = time.perf_counter()
        path = write_report(  # on every core, as the command line writes it
            folder / "report.html",
            result,
            images,
            [f"img_{i:05d}.png" for i in range(n)],
            n_jobs=-1,
        )
        write_seconds = time.perf_counter() - start
        html_mb = path.stat().st_size / 2**20
        files_mb = sum(p.stat().st_size for p in (folder / "report_files").rglob("*")) / 2**20
        chromium = shutil.which("chromium")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            page.evaluate(
                """() => { const cards = [...document.querySelectorAll('#clusters .card')];
                cards.slice(0, 100).forEach(c => c.querySelector('input.select').click()); }"""
            )
            page.click("#move-button")
            page.click("#move-menu button[data-to='1']")
            move_seconds = time.perf_counter() - start
            browser.close()
    finally:
        shutil.rmtree(folder)
    record = {
        "n_images": n,
        "write_seconds": round(write_seconds, 1),
        "html_mb": round(html_mb, 2),
        "pictures_mb": round(files_mb, 1),
        "load_seconds": round(load_seconds, 2),
        "move_100_seconds": round(move_seconds, 2),
    }
    print(f"  page: {record}")
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["model", "page"], choices=["model", "page"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-images", type=int, default=5000)
    parser.add_argument("--output", type=Path, default=RESULTS / "review.json")
    args = parser.parse_args()
    results = {"machine": machine()}
    lines = []
    if "page" in args.parts:
        results["page"] = page = page_at_scale(args.n_images)
        lines += [
            f"**Review page with {page['n_images']} images** (headless chromium)",
            "",
            "| write report (s) | HTML (MB) | pictures (MB) | load until drawn (s) "
            "| select and move 100 (s) |",
            "|---|---|---|---|---|",
            f"| {page['write_seconds']} | {page['html_mb']} | {page['pictures_mb']} "
            f"| {page['load_seconds']} | {page['move_100_seconds']} |",
            "",
        ]
    if "model" in args.parts:
        results["model"] = {seed: reviewed_model_on_held_out(seed) for seed in args.seeds}
        runs = list(results["model"].values())
        lines += [
            "**Reviewed model on held-out MTD images** (fit on a stratified half, true "
            f"classes as the review; seeds {', '.join(map(str, args.seeds))}; mean ± spread)",
            "",
            "| final step | accuracy | macro-F1 |",
            "|---|---|---|",
        ]
        for row in ("blind, majority names", "reviewed, centroid", "reviewed, logistic"):
            cells = []
            for key in ("accuracy", "macro_f1"):
                values = [r[row][key] for r in runs]
                cells.append(f"{np.mean(values):.3f} ± {np.ptp(values):.3f}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(lines, args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
