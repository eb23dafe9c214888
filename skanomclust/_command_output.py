"""What the commands print and write once a run is done: its files, messages and summary.

Split from :mod:`skanomclust._commands`, which reads the input and starts the
run: :func:`_run_and_write` writes ``assignments.csv`` as chunks come, then the
report, ``run.json``, ``metrics.json`` and the model; progress goes to stderr
(unless ``--quiet``) and the summary to stdout.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np


def _log(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _plural(count, word):
    return f"{count} {word}{'' if count == 1 else 's'}"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _write_json(path, payload):
    Path(path).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _relative_names(filenames, root):
    out = []
    for name in filenames:
        try:
            out.append(Path(name).relative_to(root).as_posix())
        except ValueError:
            out.append(str(name))
    return out


def _auto_k_text(result):
    scores = result.n_clusters_scores
    if scores is None:  # k was given
        return None
    if result.n_clusters == 1:
        return (
            "automatic k = 1: the images' descriptors are identical or split no better than "
            "structureless data would (gap statistic), so they form one cluster"
        )
    listing = ", ".join(f"{k}: {v:.3g}" for k, v in sorted(scores.items()))
    return (
        f"automatic k = {result.n_clusters} (the knee of the within-cluster spread; score "
        f"per k, higher is better: {listing})"
    )


def _metrics(args, data, result):
    """Clustering scores against the class folders, pixel scores against the masks."""
    if data.target is None:
        return None
    from .metrics import clustering_report

    metrics = clustering_report(data.target, result.labels, target_names=data.target_names)
    masks = getattr(data, "masks", None)
    if masks is not None and not args.no_pixel_metrics and any(np.any(m) for m in masks):
        from .localization import resize_anomaly_maps
        from .metrics import localization_report

        start = time.perf_counter()
        maps = resize_anomaly_maps(np.asarray(result.anomaly_maps), [np.shape(m) for m in masks])
        metrics["localization"] = localization_report(masks, maps)
        result.timings["pixel metrics"] = time.perf_counter() - start
    return metrics


def _settings(args, result, extra):
    import torch

    from ._version import __version__

    features = result.model.steps[0][1]
    descriptor = result.model.steps[-2][1]
    return {
        "command": args.command,
        **extra,
        "n_clusters": getattr(result.model.steps[-1][1], "n_clusters", result.n_clusters),
        "n_clusters_found": result.n_clusters,
        "n_clusters_scores": result.n_clusters_scores,
        "backbone": features.backbone,
        "layers": features.layers_,
        "weights": features.weights_info_,
        "image_size": features.image_size,
        "device": str(features.device_),
        "seed": getattr(args, "seed", None),
        "parameters": dict(getattr(args, "param", None) or []),
        "sample_size": int(len(result.sample_indices)),
        "normality_gate": result.gate,
        "gate_bimodality": (
            None
            if not math.isfinite(descriptor.gate_bimodality_)
            else float(descriptor.gate_bimodality_)
        ),
        "gate_threshold": descriptor.gate_threshold_,
        "normal_cluster": result.normal_cluster,
        "skanomclust": __version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _run_and_write(
    args, output, data, names, items, run, title, extra_settings, save_model, model=None
):
    """Run (``run(on_chunk)`` returns the result), then write every output at once."""
    from .report import write_report
    from .run import embed_descriptors

    # skipped.csv names images the way assignments.csv does: relative to the input folder
    root = extra_settings.get("input")
    skipped = [
        (_relative_names([os.path.abspath(path)], Path(root))[0] if root else str(path), reason)
        for path, reason in (getattr(data, "skipped", None) or [])
    ]
    for path, reason in skipped[:5]:
        _log(args, f"skipped {path}: {reason}")
    if len(skipped) > 5:
        _log(args, f"... and {len(skipped) - 5} more skipped images (see skipped.csv)")
    start = time.perf_counter()
    with output as tmp:
        # A model refitted on a review (apply-review) assigns names: write them too.
        classes = None if model is None else getattr(model.steps[-1][1], "classes_", None)
        header = (
            ["path", "cluster"]
            + (["name"] if classes is not None else [])
            + ["anomaly_score"]
            + (["class"] if data.target is not None else [])
        )
        with open(tmp / "assignments.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(header)

            def write_rows(indices, chunk):
                for i, label, score in zip(indices, chunk.labels, chunk.image_scores, strict=True):
                    row = [names[i], int(label)]
                    row += [] if classes is None else [str(classes[int(label)])]
                    row.append(f"{float(score):.6g}")
                    if data.target is not None:
                        row.append(data.target_names[int(data.target[i])])
                    writer.writerow(row)

            result = run(write_rows)
        _log(args, result.gate)
        if (text := _auto_k_text(result)) is not None:
            _log(args, text)
        metrics = _metrics(args, data, result)
        settings = _settings(args, result, extra_settings)
        _log(args, "Writing the report ...")
        report_start = time.perf_counter()
        write_report(
            tmp / "report.html",
            result,
            items,
            names,
            coordinates=embed_descriptors(
                result.descriptors, random_state=getattr(args, "seed", 0)
            ),
            target=data.target,
            target_names=data.target_names,
            metrics=metrics,
            settings=settings,
            title=title,
            n_jobs=-1,
            verbose=not args.quiet,
        )
        result.timings["report"] = time.perf_counter() - report_start
        timings = {k: round(v, 3) for k, v in result.timings.items()}
        if save_model:
            import joblib

            joblib.dump(result.model, tmp / "model.joblib")
        # The images' descriptors, in the order of assignments.csv (apply-review refits on them)
        np.save(tmp / "descriptors.npy", np.asarray(result.descriptors, dtype=np.float32))
        _write_json(
            tmp / "run.json",
            {"settings": settings, "timings_seconds": timings, "skipped": skipped},
        )
        if metrics is not None:
            _write_json(
                tmp / "metrics.json", {**metrics, "settings": settings, "timings_seconds": timings}
            )
        if skipped:
            with open(tmp / "skipped.csv", "w", newline="", encoding="utf-8") as stream:
                csv.writer(stream).writerows([("path", "reason"), *skipped])
    _log(args, f"Done in {time.perf_counter() - start:.1f} s; wrote {output.path}")
    _print_result(metrics, output.path, result)
    return 0


def _print_result(metrics, output, result):
    from .metrics import format_clustering_report

    sizes = np.bincount(np.asarray(result.labels), minlength=result.n_clusters)
    normal = (
        ""
        if result.normal_cluster is None
        else f"; cluster {result.normal_cluster} holds the images that look normal"
    )
    if result.get("cluster_names"):
        groups = ", ".join(f"{n}: {s}" for n, s in zip(result.cluster_names, sizes, strict=True))
        print(f"{_plural(len(result.labels), 'image')} by reviewed name ({groups})")
    else:
        print(
            f"{_plural(len(result.labels), 'image')} in {_plural(result.n_clusters, 'cluster')} "
            f"(sizes {', '.join(map(str, sizes))}){normal}"
        )
    if metrics is not None:
        print(format_clustering_report(metrics))
        if "localization" in metrics:
            loc = metrics["localization"]
            print(
                f"Localization: pixel AUROC {loc['pixel_auroc']:.3f}   AU-PRO {loc['au_pro']:.3f}"
            )
    print(f"Report: {output / 'report.html'}")
