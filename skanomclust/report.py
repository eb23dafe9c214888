"""A self-contained HTML report of a clustering run, for people who inspect the parts.

One page, one file: every picture is embedded (base64 thumbnails, inline SVG), so the
report can be mailed, archived or opened on a machine without the data. It shows

- summary figures and, when class labels are known, the clustering scores and the
  contingency table of classes against clusters;
- a 2-D map of the image descriptors (t-SNE) coloured by cluster (and by class);
- one gallery per cluster, most anomalous images first: each image with its anomaly
  region outlined, next to its anomaly map (a colour scale shared by all images).

Only NumPy, SciPy, Pillow and scikit-learn are used (no plotting library), so writing the
report needs nothing beyond the package's own dependencies.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image
from scipy import ndimage

from ._utils import progress_bar

__all__ = ["write_report"]

# Matplotlib's "inferno" colour map sampled at 17 points (dark = normal, bright = anomalous).
_INFERNO = np.array(
    [
        (0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
        (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49),
        (241, 115, 29), (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105),
        (252, 255, 164),
    ],
    dtype=np.float64,
)  # fmt: skip
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_INFERNO)), c) for c in _INFERNO.T],
    axis=1,
).astype(np.uint8)
# Clusters: matplotlib's "tab10" then "tab20"'s light tones.
_CLUSTER_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip
# Classes (kept apart from the cluster colours): "good" grey, defects Okabe-Ito.
_NORMAL_COLOUR = "#b8bec6"
_CLASS_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442"]
_OUTLINE = (255, 32, 80)
_GALLERY_OPEN = 60  # images shown per cluster before "show more"


def _colour(palette, index):
    return palette[index % len(palette)]


def _text_colour(background):
    """Black or white, whichever reads better on ``background`` ("#rrggbb")."""
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#1d2733" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _class_colours(target_names):
    colours, defect = [], 0
    for name in target_names:
        if str(name).lower() in ("good", "normal", "ok"):
            colours.append(_NORMAL_COLOUR)
        else:
            colours.append(_colour(_CLASS_COLOURS, defect))
            defect += 1
    return colours


# ------------------------------------------------------------------------------ pictures
def _thumbnail(item, size):
    """An RGB uint8 array whose longer side is ``size`` (aspect ratio kept)."""
    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(image)
    array = np.asarray(item)
    if array.dtype != np.uint8:
        array = np.clip(np.asarray(array, dtype=np.float64) * 255.0 + 0.5, 0, 255)
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., : array.shape[-1] - 1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if max(image.size) < size:  # small inputs are enlarged so that all thumbnails match
        scale = size / max(image.size)
        new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new, Image.Resampling.BILINEAR)
    return np.asarray(image)


def _resize_map(amap, shape):
    image = Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _outline(picture, amap, threshold):
    """``picture`` with the boundary of ``amap > threshold`` drawn 2 pixels wide."""
    region = amap > threshold
    if not region.any():
        return picture
    edge = region & ~ndimage.binary_erosion(region, border_value=0)
    edge = ndimage.binary_dilation(edge, iterations=1) & (region | ndimage.binary_dilation(region))
    out = picture.copy()
    out[edge] = _OUTLINE
    return out


def _heatmap(amap, vmin, vmax):
    scaled = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return _LUT[np.rint(scaled * 255).astype(np.intp)]


def _data_uri(array, fmt="JPEG"):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if fmt == "JPEG":  # 4:4:4 keeps the thin red outline sharp
        image.save(buffer, format="JPEG", quality=85, subsampling=0, optimize=True)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------ 2-D map
def embed_descriptors(descriptors, *, random_state=0):
    """2-D coordinates of the descriptors for the report's map.

    t-SNE (:class:`sklearn.manifold.TSNE`, PCA initialisation, fixed seed) from 5 images
    on, PCA below (t-SNE needs more points than its perplexity).

    Parameters
    ----------
    descriptors : array-like of shape (n_images, n_features)
    random_state : int, default=0

    Returns
    -------
    coordinates : ndarray of shape (n_images, 2)
    """
    X = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1)
    n = len(X)
    if n >= 5 and np.ptp(X, axis=0).max(initial=0.0) > 0:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=random_state
        ).fit_transform(X)
    coordinates = np.zeros((n, 2))
    if n >= 2 and np.ptp(X, axis=0).max(initial=0.0) > 0:
        from sklearn.decomposition import PCA

        k = min(2, n - 1, X.shape[1])
        coordinates[:, :k] = PCA(n_components=k).fit_transform(X)
    return coordinates


def _scatter_svg(coordinates, colours, titles, *, aria_label, width=520, height=400):
    pad = 18
    xy = np.asarray(coordinates, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    px = pad + (xy[:, 0] - low[0]) / span[0] * (width - 2 * pad)
    py = height - pad - (xy[:, 1] - low[1]) / span[1] * (height - 2 * pad)
    if np.all(high - low == 0):
        px[:], py[:] = width / 2, height / 2
    radius = 4.5 if len(xy) <= 300 else 3.2
    points = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{c}">'
        f"<title>{html.escape(t)}</title></circle>"
        for x, y, c, t in zip(px, py, colours, titles, strict=True)
    )
    return (
        f'<svg class="scatter" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(aria_label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="6" '
        f'fill="#fbfcfd" stroke="#dde2e8"/>'
        f'<g stroke="#ffffff" stroke-width="0.8" fill-opacity="0.9">{points}</g></svg>'
    )


# ------------------------------------------------------------------------------ HTML parts
_CSS = """
:root { --ink:#1d2733; --muted:#5c6b7a; --line:#dde2e8; --bg:#f3f5f8; --card:#ffffff;
        --accent:#1f5fbf; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#17212e; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:26px; font-weight:600; letter-spacing:.2px; }
header p { margin:0; color:#b9c4d0; }
nav { position:sticky; top:0; z-index:2; background:#ffffffee; border-bottom:1px solid var(--line);
      padding:8px 40px; display:flex; flex-wrap:wrap; gap:6px 14px; align-items:center;
      font-size:14px; }
nav a { color:var(--ink); text-decoration:none; }
nav a:hover { color:var(--accent); }
nav .chip { display:inline-flex; align-items:center; gap:5px; }
main { padding:8px 40px 40px; max-width:1500px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px;
          padding:18px 22px 20px; margin:18px 0; }
h2 { font-size:19px; margin:0 0 10px; font-weight:600; }
h2 .count { color:var(--muted); font-weight:400; font-size:15px; margin-left:6px; }
p.caption, figcaption { color:var(--muted); font-size:13px; margin:6px 0 0; max-width:980px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:130px;
        background:#fafbfc; }
.card .value { font-size:24px; font-weight:600; }
.card .label { color:var(--muted); font-size:12.5px; text-transform:uppercase;
               letter-spacing:.4px; }
table { border-collapse:collapse; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left;
         vertical-align:middle; }
th { color:var(--muted); font-weight:600; font-size:12.5px; text-transform:uppercase;
     letter-spacing:.3px; }
table a { color:inherit; text-decoration:none; }
table a:hover { color:var(--accent); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.matched { font-weight:700; outline:2px solid var(--ink); outline-offset:-3px; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:3px;
          vertical-align:-1px; }
.bar { display:flex; height:14px; width:240px; border-radius:3px; overflow:hidden;
       background:#eef1f4; }
.bar span { display:block; height:100%; }
.sizebar { height:10px; background:var(--accent); border-radius:2px; opacity:.75; }
.maps { display:flex; flex-wrap:wrap; gap:28px; align-items:flex-start; }
.maps figure { margin:0; }
.legend { display:flex; flex-wrap:wrap; gap:4px 14px; font-size:13px; margin-top:6px;
          max-width:520px; }
.colourbar { display:inline-block; width:180px; height:10px; border-radius:2px;
             vertical-align:middle; margin:0 6px;
             background:linear-gradient(to right, GRADIENT); }
.gallery { display:flex; flex-wrap:wrap; gap:10px; margin-top:12px; }
.item { border:1px solid var(--line); border-radius:8px; padding:6px; background:#fafbfc;
        width:274px; }
.item .pair { display:flex; gap:4px; }
.item img { width:128px; height:128px; object-fit:contain; background:#e9edf1;
            border-radius:4px; display:block; }
.item .meta { font-size:12px; color:var(--muted); margin-top:5px; line-height:1.35;
              overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.item .meta b { color:var(--ink); font-weight:600; }
.tag { display:inline-block; padding:0 6px; border-radius:8px; font-size:11.5px;
       color:#1d2733; margin-left:4px; }
details summary { cursor:pointer; color:var(--accent); margin-top:12px; font-size:14px; }
.settings td:first-child { color:var(--muted); white-space:nowrap; }
.settings td { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
               font-size:13px; word-break:break-all; }
footer { color:var(--muted); font-size:12.5px; padding:0 40px 30px; }
"""


def _fmt(value, digits=3):
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _card(value, label):
    return (
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
    )


def _name_of(item, index):
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"image {index}"


def _short(name, root):
    if root:
        try:
            return Path(name).relative_to(root).as_posix()
        except ValueError:
            pass
    return name


def _common_root(names):
    paths = [n for n in names if os.path.sep in n or "/" in n]
    if len(paths) != len(names) or not paths:
        return None
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths]) or None
    except ValueError:
        return None


def _composition_bar(counts, colours, names):
    total = max(int(np.sum(counts)), 1)
    spans = "".join(
        f'<span style="width:{100 * c / total:.2f}%;background:{col}" '
        f'title="{html.escape(str(name))}: {int(c)}"></span>'
        for c, col, name in zip(counts, colours, names, strict=True)
        if c
    )
    return f'<div class="bar">{spans}</div>'


def _settings_rows(settings):
    rows = []
    for key, value in settings.items():
        if (
            isinstance(value, dict)
            and value
            and all(not isinstance(v, dict) for v in value.values())
        ):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, default=str)
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(text)}</td></tr>")
    return "".join(rows)


def _contingency_html(metrics, class_colours):
    table = metrics["contingency"]
    classes, clusters, counts = table["classes"], table["clusters"], np.asarray(table["counts"])
    matching = {str(k): str(v) for k, v in metrics.get("matching", {}).items() if v is not None}
    top = max(int(counts.max(initial=0)), 1)
    head = "".join(
        f'<th class="num"><span class="swatch" style="background:'
        f'{_colour(_CLUSTER_COLOURS, j)}"></span> {html.escape(str(c))}</th>'
        for j, c in enumerate(clusters)
    )
    rows = []
    for i, cls in enumerate(classes):
        cells = []
        for j, cluster in enumerate(clusters):
            count = int(counts[i, j])
            shade = 0.08 + 0.6 * count / top if count else 0.0
            style = f' style="background:rgba(31,95,191,{shade:.2f})"' if count else ""
            cls_match = " matched" if matching.get(str(cls)) == str(cluster) else ""
            cells.append(f'<td class="num{cls_match}"{style}>{count}</td>')
        swatch = f'<span class="swatch" style="background:{class_colours[i]}"></span>'
        rows.append(
            f"<tr><td>{swatch} {html.escape(str(cls))}</td>{''.join(cells)}"
            f'<td class="num">{int(counts[i].sum())}</td></tr>'
        )
    return (
        '<table class="contingency"><tr><th>class \\ cluster</th>'
        f'{head}<th class="num">total</th></tr>{"".join(rows)}</table>'
    )


def _item_html(run, i, item, amap, threshold, vmin, vmax, size):
    """One gallery entry: the outlined thumbnail, its anomaly map, score, class, name."""
    picture = _thumbnail(item, size)
    amap = _resize_map(amap, picture.shape[:2])
    outlined = _data_uri(_outline(picture, amap, threshold))
    heat = _data_uri(_heatmap(amap, vmin, vmax))
    label = html.escape(run.names[i])
    klass = ""
    if run.target is not None:
        t = run.target[i]
        colour = run.class_colours[t]
        klass = (
            f'<span class="tag" style="background:{colour};color:{_text_colour(colour)}">'
            f"{html.escape(str(run.target_names[t]))}</span>"
        )
    return (
        f'<div class="item" title="{label}"><div class="pair">'
        f'<img src="{outlined}" alt="{label}, anomaly region outlined" loading="lazy">'
        f'<img src="{heat}" alt="anomaly map of {label}" loading="lazy"></div>'
        f'<div class="meta"><b>{run.scores[i]:.3f}</b>{klass} {label}</div></div>'
    )


def _cards_html(run, threshold, metrics):
    share = float(np.mean(run.scores > threshold))
    cards = [
        _card(run.n, "images"),
        _card(len(run.clusters), "clusters"),
        _card(f"{100 * share:.0f}%", "images with an outlined region"),
    ]
    if metrics and "nmi" in metrics:
        cards += [
            _card(_fmt(metrics["nmi"]), "NMI"),
            _card(_fmt(metrics["ari"]), "ARI"),
            _card(_fmt(metrics["f1"]), "F1 (matched accuracy)"),
        ]
    localization = (metrics or {}).get("localization") or {}
    if "pixel_auroc" in localization:
        cards.append(_card(_fmt(localization["pixel_auroc"]), "pixel AUROC"))
    if "au_pro" in localization:
        cards.append(_card(_fmt(localization["au_pro"]), "AU-PRO (FPR &le; 0.3)"))
    return "".join(cards)


def _overview_html(run):
    """The cluster table: size, scores and, with classes, composition."""
    largest = max(int(np.sum(run.labels == c)) for c in run.clusters)
    rows = []
    for c in run.clusters:
        members = run.labels == c
        size = int(members.sum())
        composition = ""
        if run.target is not None:
            counts = np.bincount(run.target[members], minlength=len(run.target_names))
            bar = _composition_bar(counts, run.class_colours, run.target_names)
            composition = f"<td>{bar}</td>"
        rows.append(
            f'<tr><td><a href="#{run.anchor[c]}"><span class="swatch" '
            f'style="background:{run.colour[c]}"></span> cluster {html.escape(str(c))}</a>'
            f'</td><td class="num">{size}</td><td class="num">{100 * size / run.n:.1f}%</td>'
            f'<td><div class="sizebar" style="width:{120 * size / largest:.0f}px"></div></td>'
            f'<td class="num">{np.median(run.scores[members]):.3f}</td>'
            f'<td class="num">{np.max(run.scores[members]):.3f}</td>{composition}</tr>'
        )
    composition_head = "<th>class composition</th>" if run.target is not None else ""
    return (
        '<table class="overview"><tr><th>cluster</th><th class="num">images</th>'
        '<th class="num">share</th><th></th><th class="num">median score</th>'
        f'<th class="num">max score</th>{composition_head}</tr>{"".join(rows)}</table>'
    )


def _legend(entries):
    return (
        '<div class="legend">'
        + "".join(
            f'<span><span class="swatch" style="background:{colour}"></span> '
            f"{html.escape(str(text))}</span>"
            for text, colour in entries
        )
        + "</div>"
    )


def _maps_html(run, coordinates, method):
    """The descriptor map coloured by cluster and, with classes, by class."""
    titles = [
        f"{run.names[i]}\ncluster {run.labels[i]}, score {run.scores[i]:.3f}"
        + (f", class {run.target_names[run.target[i]]}" if run.target is not None else "")
        for i in range(run.n)
    ]
    by_cluster = [run.colour[c.item() if hasattr(c, "item") else c] for c in run.labels]
    figures = [
        "<figure>"
        + _scatter_svg(
            coordinates,
            by_cluster,
            titles,
            aria_label=f"{method} map of the descriptors coloured by cluster",
        )
        + "<figcaption>Coloured by cluster</figcaption>"
        + _legend((f"cluster {c}", run.colour[c]) for c in run.clusters)
        + "</figure>"
    ]
    if run.target is not None:
        figures.append(
            "<figure>"
            + _scatter_svg(
                coordinates,
                [run.class_colours[t] for t in run.target],
                titles,
                aria_label=f"{method} map of the descriptors coloured by class",
            )
            + "<figcaption>Coloured by class folder (not used for clustering)</figcaption>"
            + _legend(zip(run.target_names, run.class_colours, strict=True))
            + "</figure>"
        )
    return "".join(figures)


def _gallery_html(run, cluster, items_html):
    """One cluster's section, most anomalous images first."""
    members = np.flatnonzero(run.labels == cluster)
    members = members[np.argsort(-run.scores[members], kind="stable")]
    name = html.escape(str(cluster))
    shown = "".join(items_html[i] for i in members[:_GALLERY_OPEN])
    rest = ""
    if len(members) > _GALLERY_OPEN:
        rest = (
            f"<details><summary>Show the other {len(members) - _GALLERY_OPEN} images of "
            f'cluster {name}</summary><div class="gallery">'
            + "".join(items_html[i] for i in members[_GALLERY_OPEN:])
            + "</div></details>"
        )
    composition = ""
    if run.target is not None:
        counts = np.bincount(run.target[members], minlength=len(run.target_names))
        parts = [
            f"{html.escape(str(run.target_names[k]))} {counts[k]}"
            for k in np.argsort(-counts, kind="stable")
            if counts[k]
        ]
        composition = " Class folders: " + ", ".join(parts) + "."
    return (
        f'<section class="cluster-gallery" id="{run.anchor[cluster]}" '
        f'data-cluster="{name}" data-size="{len(members)}">'
        f'<h2><span class="swatch" style="background:{run.colour[cluster]}"></span> '
        f'Cluster {name}<span class="count">{len(members)} images '
        f"({100 * len(members) / run.n:.1f}%)</span></h2>"
        f'<p class="caption">Sorted by anomaly score, highest first. Median score '
        f"{np.median(run.scores[members]):.3f}.{composition}</p>"
        f'<div class="gallery">{shown}</div>{rest}</section>'
    )


# ------------------------------------------------------------------------------ main entry
def _check_inputs(filenames_or_images, labels, anomaly_maps, scores, descriptors, target):
    if isinstance(filenames_or_images, (str, os.PathLike)):
        raise TypeError("filenames_or_images must be a list of paths or images, not one path")
    items = (
        list(filenames_or_images)
        if not isinstance(filenames_or_images, np.ndarray)
        else filenames_or_images
    )
    n = len(items)
    if n == 0:
        raise ValueError("The report needs at least one image")
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    descriptors = np.asarray(descriptors, dtype=np.float64)
    descriptors = descriptors.reshape(len(descriptors), -1)
    if isinstance(anomaly_maps, np.ndarray):
        maps = list(anomaly_maps.astype(np.float32, copy=False))
    else:
        maps = [np.asarray(m, dtype=np.float32) for m in anomaly_maps]
    lengths = {
        "labels": len(labels),
        "anomaly_maps": len(maps),
        "scores": len(scores),
        "descriptors": len(descriptors),
    }
    if target is not None:
        target = np.asarray(target).ravel()
        lengths["target"] = len(target)
    for name, length in lengths.items():
        if length != n:
            raise ValueError(f"{name} has {length} entries for {n} images")
    for i, amap in enumerate(maps):
        if amap.ndim != 2:
            raise ValueError(f"anomaly_maps[{i}] must be 2-D, got shape {amap.shape}")
    return items, labels, maps, scores, descriptors, target


def write_report(
    path,
    filenames_or_images,
    labels,
    anomaly_maps,
    scores,
    descriptors,
    *,
    target=None,
    target_names=None,
    metrics=None,
    settings=None,
    threshold=None,
    names=None,
    title="Anomaly clustering report",
    thumbnail_size=128,
    random_state=0,
    verbose=False,
):
    """Write a self-contained HTML report of a clustering run.

    Parameters
    ----------
    path : str or path-like
        The HTML file to write (written to ``path + ".tmp"`` first, then renamed, so an
        interrupted run leaves no half-written report).
    filenames_or_images : list of path-like, list of arrays or ndarray
        The images: file paths, or arrays (H, W), (H, W, 3) (uint8 0-255 or float 0-1).
    labels : array-like of shape (n_images,)
        Cluster of each image.
    anomaly_maps : ndarray of shape (n_images, h, w) or list of 2-D arrays
        Anomaly map of each image at any resolution (e.g. the feature resolution);
        they are upsampled to the thumbnails. Higher = more anomalous.
    scores : array-like of shape (n_images,)
        Image anomaly score (e.g. ``BlindAnomalyLocalizer.decision_function``);
        galleries show the highest scores first.
    descriptors : array-like of shape (n_images, n_features)
        Image descriptors (e.g. ``ContrastiveRefiner`` output), drawn as a 2-D t-SNE map.
    target : array-like of shape (n_images,), optional
        True class index of each image (into ``target_names``), if known.
    target_names : list of str, optional
        Class names; required with ``target`` unless ``target`` holds names.
    metrics : dict, optional
        A :func:`skanomclust.metrics.clustering_report` (keys ``nmi``, ``ari``, ``f1``,
        ``contingency``, ``matching``), optionally with ``localization``
        (``{"pixel_auroc": ..., "au_pro": ...}``) and ``timings_seconds``.
    settings : dict, optional
        Run settings shown in a table at the end (backbone, weights, image size, ...).
    threshold : float, optional
        Anomaly-map value above which a pixel is outlined (e.g. the refiner's
        ``threshold_``). Default: the 99th percentile of all map values.
    names : list of str, optional
        How to label each image. Default: the file paths relative to their common
        folder, or ``"image <i>"`` for arrays.
    title : str, default="Anomaly clustering report"
    thumbnail_size : int, default=128
        Longer side of the thumbnails, in pixels.
    random_state : int, default=0
        Seed of the t-SNE map.
    verbose : bool, default=False
        Show a progress bar while the thumbnails are drawn.

    Returns
    -------
    path : pathlib.Path
        The report written.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from skanomclust.report import write_report
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> maps = rng.random((4, 8, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_report(os.path.join(tmp, "report.html"), images, [0, 0, 1, 1], maps,
    ...                        maps.max(axis=(1, 2)), rng.random((4, 3)))
    ...     text = out.read_text()
    >>> text.count('class="cluster-gallery"')
    2
    """
    items, labels, maps, scores, descriptors, target = _check_inputs(
        filenames_or_images, labels, anomaly_maps, scores, descriptors, target
    )
    n = len(items)
    if target is not None and target_names is None:
        target_names = [str(t) for t in np.unique(target)]
        target = np.searchsorted(np.asarray(target_names), target.astype(str))
    if names is None:
        full = [_name_of(item, i) for i, item in enumerate(items)]
        root = _common_root(full)
        names = [_short(name, root) for name in full]
    else:
        names, root = [str(name) for name in names], None
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} images")
    clusters = [c.item() if hasattr(c, "item") else c for c in np.unique(labels)]
    run = SimpleNamespace(  # what every part of the page needs to know
        n=n,
        labels=labels,
        scores=scores,
        names=names,
        target=None if target is None else target.astype(np.intp),
        target_names=target_names,
        class_colours=_class_colours(target_names) if target is not None else [],
        clusters=clusters,
        anchor={c: f"cluster-{j}" for j, c in enumerate(clusters)},
        colour={c: _colour(_CLUSTER_COLOURS, j) for j, c in enumerate(clusters)},
    )

    all_values = np.concatenate([m.ravel() for m in maps])
    if threshold is None:
        threshold = float(np.quantile(all_values, 0.99))
        threshold_note = "the 99th percentile of all anomaly-map values"
    else:
        threshold = float(threshold)
        threshold_note = "the pixel threshold of the run"
    vmin = float(np.quantile(all_values, 0.01))
    vmax = float(max(np.quantile(all_values, 0.999), threshold * 1.05, vmin + 1e-6))
    bar = progress_bar(n, verbose, "report")
    items_html = []
    for i, item in enumerate(items):
        items_html.append(_item_html(run, i, item, maps[i], threshold, vmin, vmax, thumbnail_size))
        bar.update(1)
    bar.close()
    coordinates = embed_descriptors(descriptors, random_state=random_state)
    method = "t-SNE" if n >= 5 else "PCA"
    galleries = "".join(_gallery_html(run, c, items_html) for c in clusters)
    nav = "".join(
        f'<a class="chip" href="#{run.anchor[c]}"><span class="swatch" '
        f'style="background:{run.colour[c]}"></span>{html.escape(str(c))} '
        f"({int(np.sum(labels == c))})</a>"
        for c in clusters
    )
    metrics_section = ""
    if metrics and "contingency" in metrics:
        metrics_section = (
            '<section id="agreement"><h2>Agreement with the class folders</h2>'
            + _contingency_html(
                metrics,
                run.class_colours or _class_colours(metrics["contingency"]["classes"]),
            )
            + '<p class="caption">Rows: class folders (used only for scoring, never for '
            "fitting); columns: clusters. Outlined cells: the one-to-one matching of classes "
            "to clusters (Hungarian) behind F1, the share of images in matched cells. NMI "
            "and ARI are 1 for a perfect clustering and about 0 for a random one.</p></section>"
        )
    settings_all = dict(settings or {})
    timings = (metrics or {}).get("timings_seconds")
    if timings and "timings_seconds" not in settings_all:
        settings_all["timings_seconds"] = {k: f"{v:.1f}" for k, v in timings.items()}
    settings_section = ""
    if settings_all:
        settings_section = (
            '<section id="settings"><h2>Run settings</h2><table class="settings">'
            f"{_settings_rows(settings_all)}</table></section>"
        )
    generated = datetime.now().strftime("%Y-%m-%d %H:%M")
    origin = root or (settings or {}).get("input")
    source = f" from {html.escape(str(origin))}" if origin else ""
    gradient = ", ".join(f"rgb{tuple(int(v) for v in _LUT[k])}" for k in range(0, 256, 32))
    gradient += f", rgb{tuple(int(v) for v in _LUT[255])}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS.replace("GRADIENT", gradient)}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<p>{n} images{source} in {len(clusters)} clusters &middot; generated {generated}
by skanomclust</p></header>
<nav><a href="#summary">Summary</a><a href="#map">Descriptor map</a>
{'<a href="#agreement">Classes</a>' if metrics_section else ""}
<span style="color:var(--muted)">Clusters:</span>{nav}</nav>
<main>
<section id="summary"><h2>Summary</h2>
<div class="cards">{_cards_html(run, threshold, metrics)}</div>
<p class="caption">Each image got an anomaly map (where it looks unlike the rest of the set)
and an image descriptor pooled from its most anomalous region; images with similar
descriptors were grouped. The cluster with the lowest scores usually holds the defect-free
images. Scores are the maxima of the anomaly maps.</p>
<div style="margin-top:14px">{_overview_html(run)}</div></section>
<section id="map"><h2>Descriptor map</h2>
<div class="maps">{_maps_html(run, coordinates, method)}</div>
<p class="caption">{method} projection of the image descriptors; nearby points are images
the method finds similar. Hover a point for its file. Well separated colour groups in the
left map mean distinct clusters; compare with the right map, when present, to see which
classes they capture.</p></section>
{metrics_section}
<section id="how-to-read"><h2>Reading the galleries</h2>
<p class="caption" style="margin-top:0">Left of each pair: the image, with the region where
its anomaly map exceeds {threshold:.3f} ({threshold_note}) outlined in
<b style="color:rgb{_OUTLINE}">red</b>. Right: the anomaly map, on one colour scale for all
images: {vmin:.3f}<span class="colourbar"></span>{vmax:.3f}. Below: anomaly score
(bold){", class folder" if run.target is not None else ""} and file.</p></section>
{galleries}
{settings_section}
</main>
<footer>Blind localization and clustering of anomaly types (Ardelean &amp; Weyrich, CVPRW
2024), implemented by skanomclust.</footer>
</body></html>
"""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
