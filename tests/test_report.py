"""The HTML report: content, inputs, and how it renders in a headless browser."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report
from skanomclust.report import _OUTLINE, _outline, embed_descriptors, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run():
    """A small labelled run: synthetic images, masks as anomaly maps, 3 clusters."""
    data = make_synthetic_textures(
        n_normal=8, n_per_defect=4, defect_types=("hole", "spot"), image_size=64, random_state=0
    )
    rng = np.random.default_rng(0)
    maps = data.masks[:, ::4, ::4].astype(np.float32) + 0.05 * rng.random((16, 16, 16))
    labels = data.target.copy()
    labels[:2] = (labels[:2] + 1) % 3  # two mistakes
    descriptors = np.eye(3)[data.target] + 0.1 * rng.standard_normal((16, 3))
    return data, maps, labels, descriptors


def _write(tmp_path, run, **kwargs):
    data, maps, labels, descriptors = run
    return write_report(
        tmp_path / "report.html",
        data.images,
        labels,
        maps,
        maps.max(axis=(1, 2)),
        descriptors,
        **kwargs,
    )


def test_one_gallery_per_cluster_with_sizes(tmp_path, run):
    data, _, labels, _ = run
    metrics = clustering_report(data.target, labels, target_names=data.target_names)
    path = _write(
        tmp_path,
        run,
        target=data.target,
        target_names=data.target_names,
        metrics=metrics,
        settings={"backbone": "mobilenet_v2", "image_size": 64},
        threshold=0.5,
    )
    text = path.read_text()
    sizes = re.findall(
        r'class="cluster-gallery" id="cluster-\d+" data-cluster="(\d+)" '
        r'data-size="(\d+)"',
        text,
    )
    assert [(int(c), int(s)) for c, s in sizes] == [
        (c, int(np.sum(labels == c))) for c in np.unique(labels)
    ]
    assert text.count("data:image/") == 2 * 16  # outlined image + anomaly map per image
    assert "<svg" in text  # descriptor map
    assert f"{metrics['nmi']:.3f}" in text and "Agreement with the class folders" in text
    assert "mobilenet_v2" in text
    # self-contained: no scripts, no links to other files or servers
    assert "<script" not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert not (tmp_path / "report.html.tmp").exists()


def test_file_inputs_maps_of_any_size_and_few_images(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for i, size in enumerate([(40, 60), (50, 50), (30, 90)]):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(files[-1])
    maps = [rng.random((4, 6)), rng.random((5, 5)), rng.random((3, 9))]
    path = write_report(
        tmp_path / "r.html", files, [0, 1, 1], maps, [0.1, 0.5, 0.9], rng.random((3, 8))
    )
    text = path.read_text()
    assert text.count('class="cluster-gallery"') == 2
    assert "img2.png" in text and "PCA" in text  # fewer than 5 images: PCA map


def test_input_lengths_are_checked(tmp_path, run):
    data, maps, labels, descriptors = run
    with pytest.raises(ValueError, match="labels has 15 entries for 16 images"):
        write_report(tmp_path / "r.html", data.images, labels[1:], maps, labels, descriptors)
    with pytest.raises(ValueError, match="descriptors"):
        write_report(tmp_path / "r.html", data.images, labels, maps, labels, descriptors[:3])
    assert not list(tmp_path.iterdir())


def test_outline_follows_the_thresholded_map():
    picture = np.full((20, 20, 3), 128, dtype=np.uint8)
    amap = np.zeros((20, 20))
    amap[5:15, 5:15] = 1.0
    out = _outline(picture, amap, 0.5)
    red = np.all(out == _OUTLINE, axis=-1)
    assert red[5, 5:15].all() and red[5:15, 5].all()  # on the region's boundary
    assert not red[8:12, 8:12].any() and not red[0, 0]  # not inside, not far outside
    assert np.array_equal(_outline(picture, amap, 2.0), picture)  # nothing above threshold


def test_embedding_is_deterministic():
    X = np.random.default_rng(0).random((30, 5))
    np.testing.assert_array_equal(embed_descriptors(X), embed_descriptors(X))
    assert embed_descriptors(X[:1]).shape == (1, 2)


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium); the HTML is still "
    "checked by the other report tests",
)
def test_report_renders_in_headless_chromium(tmp_path, run):
    data, _, labels, _ = run
    metrics = clustering_report(data.target, labels, target_names=data.target_names)
    path = _write(
        tmp_path, run, target=data.target, target_names=data.target_names, metrics=metrics
    )
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,2000",
            path.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert screenshot.exists(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.int32)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20
    colours = np.unique(pixels.reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1]))
    assert len(colours) > 500  # thumbnails, heat maps and plots, not a blank page
    assert pixels[:60].mean() < 80  # the dark title band
    # the outline colour appears in the visible galleries
    assert np.any(np.all(np.abs(pixels - np.array(_OUTLINE)) < 30, axis=-1))


def test_names_label_the_images(tmp_path, run):
    data, maps, labels, descriptors = run
    names = [f"tile_{i:02d}.png" for i in range(16)]
    path = _write(tmp_path, run, names=names, settings={"input": "/data/tiles"})
    text = path.read_text()
    assert all(name in text for name in names)
    assert "16 images from /data/tiles" in text
    with pytest.raises(ValueError, match="names has 2 entries"):
        _write(tmp_path, run, names=names[:2])
