"""The HTML report: what the page carries, its inputs, pictures and all-or-nothing writing."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.utils import Bunch

from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report
from skanomclust.report import _page, _pictures, write_report
from skanomclust.run import embed_descriptors


@pytest.fixture(scope="module")
def run():
    """A small labelled run: synthetic images, masks as anomaly maps, 3 clusters of 4."""
    data = make_synthetic_textures(
        n_normal=8, n_per_defect=4, defect_types=("hole", "spot"), image_size=64, random_state=0
    )
    rng = np.random.default_rng(0)
    maps = data.masks[:, ::4, ::4].astype(np.float32) + 0.05 * rng.random((16, 16, 16))
    labels = data.target.copy()
    labels[:2] = (labels[:2] + 1) % 3  # two mistakes
    result = Bunch(
        labels=labels,
        anomaly_maps=maps,
        image_scores=maps.max(axis=(1, 2)),
        descriptors=np.eye(3)[data.target] + 0.1 * rng.standard_normal((16, 3)),
        region_threshold=0.5,
        n_clusters=3,
        n_clusters_scores={2: 0.1, 3: 0.5, 4: 0.2},
        normal_cluster=0,
        gate="normality gate: on",
    )
    return data, result


def payload(path):
    text = path.read_text(encoding="utf-8")
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return json.loads(found.group(1))


def names(n):
    return [f"img_{i}.png" for i in range(n)]


def test_page_carries_clusters_scores_and_choice_of_k(tmp_path, run):
    data, result = run
    metrics = clustering_report(data.target, result.labels, target_names=data.target_names)
    path = write_report(
        tmp_path / "report.html",
        result,
        data.images,
        names(16),
        target=data.target,
        target_names=data.target_names,
        metrics=metrics,
        settings={"backbone": "mobilenet_v2", "input": "/data"},
    )
    page = payload(path)
    assert page["format"] == "skanomclust-report"
    sizes = {c["id"]: c["size"] for c in page["clusters"]}
    assert sizes == {c: int((result.labels == c).sum()) for c in range(3)}
    assert [c["normal"] for c in page["clusters"]] == [True, False, False]
    assert page["auto_k"] == {"scores": [[2, 0.1], [3, 0.5], [4, 0.2]], "chosen": 3}
    assert page["images"]["path"] == names(16)
    assert page["images"]["cluster"] == result.labels.tolist()
    assert page["classes"]["names"] == list(data.target_names)
    assert page["metrics"]["nmi"] == pytest.approx(metrics["nmi"], abs=1e-4)
    assert all(0 <= c <= 1 for c in page["images"]["confidence"])
    assert all(u.startswith("data:image/jpeg;base64,") for u in page["images"]["thumb"])
    assert "http://" not in path.read_text() and "https://" not in path.read_text()


def test_empty_clusters_keep_their_ids_and_colours(tmp_path, run):
    data, result = run
    predicted = Bunch(**{**result, "labels": np.where(result.labels == 1, 2, result.labels)})
    predicted["n_clusters"] = 5
    page = payload(write_report(tmp_path / "r.html", predicted, data.images, names(16)))
    assert [c["id"] for c in page["clusters"]] == [0, 1, 2, 3, 4]
    assert [c["size"] for c in page["clusters"]][1] == 0
    assert page["clusters"][2]["colour"] == page["palette"][2]


def test_files_are_linked_maps_of_any_size_and_one_image(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "a b.png"
    Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)).save(path)
    one = Bunch(
        labels=np.array([0]),
        anomaly_maps=rng.random((1, 5, 7)).astype(np.float32),
        image_scores=np.array([0.3]),
        descriptors=np.ones((1, 4)),
        region_threshold=0.5,
    )
    page = payload(write_report(tmp_path / "r.html", one, [path], ["a b.png"]))
    assert page["images"]["original"] == [path.resolve().as_uri()]
    assert page["images"]["width"][0] > page["images"]["height"][0]  # aspect ratio kept


def test_inputs_are_checked(tmp_path, run):
    data, result = run
    with pytest.raises(ValueError, match="names has 15 entries for 16 images"):
        write_report(tmp_path / "r.html", result, data.images, names(15))
    with pytest.raises(ValueError, match="no 'descriptors'"):
        bad = Bunch(**{k: v for k, v in result.items() if k != "descriptors"})
        write_report(tmp_path / "r.html", bad, data.images, names(16))
    with pytest.raises(ValueError, match="target_names is required"):
        write_report(tmp_path / "r.html", result, data.images, names(16), target=data.target)
    with pytest.raises(TypeError, match="not one path"):
        write_report(tmp_path / "r.html", result, "folder", names(16))
    assert list(tmp_path.iterdir()) == []


def test_large_runs_put_pictures_in_a_folder(tmp_path, run, monkeypatch):
    data, result = run
    monkeypatch.setattr(_page, "EMBED_LIMIT", 4)
    path = write_report(tmp_path / "report.html", result, data.images, names(16))
    page = payload(path)
    assert page["pictures"]["folder"] == "report_files"
    assert len(list((tmp_path / "report_files").glob("*t.jpg"))) == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report_files"]


@pytest.mark.parametrize("n_jobs", [None, 3])
def test_failure_leaves_nothing_half_written(tmp_path, run, monkeypatch, n_jobs):
    data, result = run
    monkeypatch.setattr(_page, "EMBED_LIMIT", 4)
    render = _pictures.render
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return render(*args, **kwargs)

    monkeypatch.setattr(_pictures, "render", failing)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path / "report.html", result, data.images, names(16), n_jobs=n_jobs)
    assert list(tmp_path.iterdir()) == []


def test_pictures_drawn_on_threads_are_the_same_and_in_order(tmp_path, run, monkeypatch):
    data, result = run
    pages = {}
    for n_jobs in (1, 3):
        pages[n_jobs] = payload(
            write_report(
                tmp_path / f"r{n_jobs}.html", result, data.images, names(16), n_jobs=n_jobs
            )
        )
        pages[n_jobs].pop("generated")
    assert pages[1] == pages[3]
    assert len(set(pages[1]["images"]["thumb"])) == 16  # one distinct picture per image
    monkeypatch.setattr(_page, "EMBED_LIMIT", 4)  # pictures written as files by the threads
    for n_jobs in (1, 3):
        write_report(
            tmp_path / f"f{n_jobs}" / "r.html", result, data.images, names(16), n_jobs=n_jobs
        )
    for i in range(16):
        for kind in "tmo":
            one = (tmp_path / "f1" / "r_files" / f"{i}{kind}.jpg").read_bytes()
            assert one == (tmp_path / "f3" / "r_files" / f"{i}{kind}.jpg").read_bytes()


def test_outline_follows_the_thresholded_map():
    picture = np.zeros((20, 20, 3), dtype=np.uint8)
    amap = np.zeros((20, 20), dtype=np.float32)
    amap[5:15, 5:15] = 1.0
    drawn = _pictures.outline(picture, amap, 0.5)
    changed = np.any(drawn != 0, axis=2)
    assert changed.any() and not changed[0:3, 0:3].any() and not changed[9:11, 9:11].any()


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 3), (31, 47)])
def test_outline_is_the_boundary_scipy_morphology_finds(shape):
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    picture = np.zeros((*shape, 3), dtype=np.uint8)
    for density in (0.2, 0.6, 0.95, 1.0):
        region = rng.random(shape) < density
        edge = region & ~ndimage.binary_erosion(region, border_value=0)
        edge |= ndimage.binary_dilation(edge) & ~region
        drawn = _pictures.outline(picture, region.astype(np.float32), 0.5)
        np.testing.assert_array_equal(np.any(drawn != 0, axis=2), edge)


def test_grainy_pictures_encode():
    # Huffman-optimised encoding (Pillow's optimize=True) failed on such pictures with
    # "Suspension not allowed here": its buffer holds one byte per pixel.
    grain = np.random.default_rng(0).integers(0, 256, (224, 320, 3), dtype=np.uint8)
    data = _pictures.jpeg(grain)
    assert len(data) > 224 * 320  # more than that buffer would have held
    assert Image.open(io.BytesIO(data)).size == (320, 224)


def test_embedding_is_seeded():
    X = np.random.default_rng(0).standard_normal((40, 5))
    a = embed_descriptors(X, random_state=3)
    np.testing.assert_array_equal(a, embed_descriptors(X, random_state=3))
    few = embed_descriptors(X[:3], random_state=0)
    assert few.shape == (3, 2) and np.isfinite(few).all()
    # beyond max_points, the seed picks which descriptors are embedded
    shown = [
        np.isfinite(embed_descriptors(X, random_state=s, max_points=10)).all(axis=1)
        for s in (0, 1)
    ]
    assert shown[0].sum() == shown[1].sum() == 10 and (shown[0] != shown[1]).any()
