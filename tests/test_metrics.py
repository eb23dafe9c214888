import json

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from skanomclust.metrics import _histogram as metrics  # the counting engine
from skanomclust.metrics import (
    au_pro,
    clustering_f1_score,
    clustering_report,
    format_clustering_report,
    localization_report,
    pixel_auroc,
)


def _labels_from_contingency(counts):
    """Label vectors whose contingency table (rows: classes, columns: clusters) is ``counts``."""
    true, pred = [], []
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            true += [i] * count
            pred += [j] * count
    return true, pred


# -------------------------------------------------------------------------------------------------
# clustering_f1_score
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("permutation", [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
def test_f1_perfect_clustering_with_permuted_labels(permutation):
    true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array(permutation)[true] + 10
    assert clustering_f1_score(true, pred) == 1.0


def test_f1_hand_computed_3x3():
    # Contingency (rows classes, columns clusters), n = 20:
    #   [[5, 1, 0],
    #    [2, 3, 1],
    #    [0, 4, 4]]
    # Matched counts of the six one-to-one assignments: 5+3+4 = 12, 5+1+4 = 10, 1+2+4 = 7,
    # 1+1+0 = 2, 0+2+4 = 6, 0+3+0 = 3. Best: 12 / 20. (A greedy matcher taking 5, then the
    # 4 at (2, 1), would get 5+4+1 = 10.)
    true, pred = _labels_from_contingency([[5, 1, 0], [2, 3, 1], [0, 4, 4]])
    assert clustering_f1_score(true, pred) == pytest.approx(12 / 20, abs=1e-15)


def test_f1_more_clusters_than_classes():
    # class 0 -> clusters {0: 2, 1: 1}; class 1 -> clusters {2: 2, 3: 1}: match 0-0 and 1-2,
    # clusters 1 and 3 stay unmatched and their samples count as errors: 4 / 6.
    true = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 2, 2, 3]
    assert clustering_f1_score(true, pred) == pytest.approx(4 / 6, abs=1e-15)


def test_f1_fewer_clusters_than_classes():
    # class 0 -> {0: 2}; class 1 -> {0: 1, 1: 1}; class 2 -> {1: 2}: match 0-0, 2-1: 4 / 6.
    true = [0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 1, 1, 1]
    assert clustering_f1_score(true, pred) == pytest.approx(4 / 6, abs=1e-15)


def test_f1_string_labels():
    true = ["good", "good", "cut", "cut", "hole", "hole", "hole"]
    pred = ["x", "x", "y", "z", "z", "z", "y"]
    # good -> {x: 2}; cut -> {y: 1, z: 1}; hole -> {z: 2, y: 1}: good-x, cut-y, hole-z: 5 / 7.
    assert clustering_f1_score(true, pred) == pytest.approx(5 / 7, abs=1e-15)
    assert clustering_f1_score(np.array(true), np.array(pred)) == pytest.approx(5 / 7, abs=1e-15)


def test_f1_mixed_label_types_are_not_merged():
    # 1 and "1" are different labels: merging them would give a perfect score.
    true = [1, 1, "1", "1"]
    pred = [0, 0, 0, 0]
    assert clustering_f1_score(true, pred) == 0.5


def test_f1_one_cluster_equals_majority_share():
    true = ["good"] * 952 + ["break"] * 200 + ["fray"] * 192
    pred = [0] * len(true)
    assert clustering_f1_score(true, pred) == pytest.approx(952 / 1344, abs=1e-15)


@pytest.mark.parametrize(
    ("true", "pred", "match"),
    [
        ([0, 1, 2], [0, 1], "different lengths: 3 and 2"),
        ([], [], "empty"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "1-D"),
    ],
)
def test_f1_errors(true, pred, match):
    with pytest.raises(ValueError, match=match):
        clustering_f1_score(true, pred)


# -------------------------------------------------------------------------------------------------
# clustering_report / format_clustering_report
# -------------------------------------------------------------------------------------------------


def test_report_keys_json_and_contingency():
    true, pred = _labels_from_contingency([[5, 1, 0], [2, 3, 1], [0, 4, 4]])
    pred = np.array(pred) + 3  # clusters 3, 4, 5; numpy ints must become plain ints
    report = clustering_report(np.array(true), pred)
    assert set(report) == {
        "nmi",
        "ari",
        "f1",
        "n_samples",
        "n_clusters",
        "n_classes",
        "contingency",
        "matching",
    }
    assert json.loads(json.dumps(report))["contingency"] == report["contingency"]
    assert report["contingency"] == {
        "classes": [0, 1, 2],
        "clusters": [3, 4, 5],
        "counts": [[5, 1, 0], [2, 3, 1], [0, 4, 4]],
    }
    assert all(type(c) is int for c in report["contingency"]["clusters"])
    assert report["matching"] == {0: 3, 1: 4, 2: 5}
    assert report["f1"] == pytest.approx(0.6, abs=1e-15)
    assert (report["n_samples"], report["n_classes"], report["n_clusters"]) == (20, 3, 3)
    assert all(type(report[key]) is float for key in ("nmi", "ari", "f1"))


def test_report_scores_match_permutation_invariance():
    true = [0, 0, 1, 1, 2, 2]
    report = clustering_report(true, [7, 7, 8, 8, 9, 9])
    assert report["nmi"] == pytest.approx(1.0)
    assert report["ari"] == pytest.approx(1.0)
    assert report["f1"] == 1.0


def test_report_target_names_and_unmatched_class():
    true = [0, 0, 1, 1, 2, 2]
    pred = ["a", "a", "a", "b", "b", "b"]
    report = clustering_report(true, pred, target_names=["good", "cut", "hole"])
    assert report["contingency"] == {
        "classes": ["good", "cut", "hole"],
        "clusters": ["a", "b"],
        "counts": [[2, 0], [1, 1], [0, 2]],
    }
    assert report["matching"] == {"good": "a", "cut": None, "hole": "b"}
    assert report["f1"] == pytest.approx(4 / 6, abs=1e-15)
    json.dumps(report)


@pytest.mark.parametrize("true", [[0, 3], ["good", "cut"], [-1, 0]])
def test_report_target_names_need_integer_indices(true):
    with pytest.raises(ValueError, match="integer indices into target_names"):
        clustering_report(true, [0, 1], target_names=["good", "cut", "hole"])


def test_format_clustering_report():
    report = clustering_report(
        [0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1], target_names=["g", "c", "h"]
    )
    text = format_clustering_report(report)
    lines = text.splitlines()
    assert lines[0] == (
        f"NMI {report['nmi']:.3f}   ARI {report['ari']:.3f}   F1 {report['f1']:.3f}"
    )
    assert lines[1] == "n_samples 6   n_classes 3   n_clusters 2"
    assert lines[2] == ""
    assert lines[3].split() == ["class", "\\", "cluster", "0", "1"]
    assert [line.split() for line in lines[4:]] == [
        ["g", "2*", "0"],
        ["c", "1", "1"],
        ["h", "0", "2*"],
    ]


# -------------------------------------------------------------------------------------------------
# pixel_auroc
# -------------------------------------------------------------------------------------------------


def test_pixel_auroc_hand_computed():
    # Positives: 0.9, 0.6, 0.3; negatives: 0.2, 0.4, 0.1, 0.5, 0.3.
    # Pairs positive > negative: 0.9 -> 5, 0.6 -> 5, 0.3 -> 2 (0.2, 0.1) plus a tie with 0.3
    # counted 1/2. AUC = (5 + 5 + 2.5) / 15 = 5 / 6.
    masks = np.array([[[1, 0], [0, 0]], [[0, 1], [1, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.2], [0.4, 0.1]], [[0.5, 0.6], [0.3, 0.3]]])
    assert pixel_auroc(masks, maps) == pytest.approx(5 / 6, abs=1e-15)
    assert pixel_auroc(list(masks), list(maps)) == pytest.approx(5 / 6, abs=1e-15)


def test_pixel_auroc_perfect_and_images_of_different_shapes():
    masks = [np.array([[0, 1, 1]]), np.zeros((2, 2))]
    maps = [np.array([[0.0, 2.0, 3.0]]), np.full((2, 2), 1.0)]
    assert pixel_auroc(masks, maps) == 1.0
    assert pixel_auroc(masks, [-m for m in maps]) == 0.0


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (np.array([[0, 255, 100]], dtype=np.uint8), 1.0),  # uint8: > 127 -> [F, T, F]
        (np.array([[0.0, 0.9, 0.4]]), 1.0),  # float: > 0.5 -> [F, T, F]
        (np.array([[0, 1, 0]]), 1.0),  # other integers: > 0.5
        (np.array([[0, 1, 0]], dtype=np.uint8), None),  # uint8 0/1: no anomalous pixel
    ],
)
def test_pixel_auroc_mask_conventions(mask, expected):
    amap = np.array([[0.0, 1.0, 0.5]])
    if expected is None:
        with pytest.raises(ValueError, match="no anomalous pixel.*uint8"):
            pixel_auroc([mask], [amap])
    else:
        assert pixel_auroc([mask], [amap]) == expected


def test_pixel_auroc_no_normal_pixel():
    with pytest.raises(ValueError, match="no normal pixel"):
        pixel_auroc(np.ones((1, 2, 2), dtype=bool), np.zeros((1, 2, 2)))


_GOOD_MASKS = [np.array([[0, 1], [0, 0]], dtype=bool), np.zeros((3, 3), dtype=bool)]
_GOOD_MAPS = [np.zeros((2, 2)), np.zeros((3, 3))]


@pytest.mark.parametrize("metric", [pixel_auroc, au_pro, localization_report])
@pytest.mark.parametrize(
    ("masks", "maps", "match"),
    [
        (_GOOD_MASKS, _GOOD_MAPS[:1], "got 2 masks but 1 anomaly maps"),
        (_GOOD_MASKS, [_GOOD_MAPS[0], np.zeros((3, 2))], r"image 1: mask shape \(3, 3\)"),
        (_GOOD_MASKS, [_GOOD_MAPS[0], np.full((3, 3), np.inf)], r"anomaly_maps\[1\].*infinite"),
        ([], [], "masks is empty"),
        (np.zeros((0, 2, 2)), np.zeros((0, 2, 2)), "masks is empty"),
        (np.zeros((2, 2)), np.zeros((2, 2)), r"\(n_images, height, width\)"),
        ([np.zeros(4)], [np.zeros(4)], r"masks\[0\] must be 2-D"),
        (_GOOD_MASKS, [_GOOD_MAPS[0], np.zeros((3, 3, 1))], r"anomaly_maps\[1\] must be 2-D"),
    ],
)
def test_localization_input_errors(metric, masks, maps, match):
    with pytest.raises(ValueError, match=match):
        metric(masks, maps)


@pytest.mark.parametrize("metric", [pixel_auroc, au_pro])
def test_nan_in_map_names_image(metric):
    maps = [_GOOD_MAPS[0], np.array([[0, 0, 0], [0, np.nan, 0], [0, 0, 0]])]
    with pytest.raises(ValueError, match=r"anomaly_maps\[1\] contains NaN"):
        metric(_GOOD_MASKS, maps)


# -------------------------------------------------------------------------------------------------
# au_pro
# -------------------------------------------------------------------------------------------------


def test_au_pro_one_region():
    # Normal pixels score 0.1, 0.6; the region (2 pixels) scores 0.8, 0.4.
    # Thresholds 0.8, 0.6, 0.4, 0.1 give (FPR, PRO) = (0, .5), (.5, .5), (.5, 1), (1, 1) after
    # the start (0, 0). Area up to 0.3: 0.3 * 0.5 = 0.15 -> 0.5. Up to 1: 0.25 + 0.5 = 0.75.
    mask = np.array([[0, 1, 1, 0]], dtype=bool)
    amap = np.array([[0.1, 0.8, 0.4, 0.6]])
    assert au_pro([mask], [amap]) == pytest.approx(0.5, abs=1e-15)
    assert au_pro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.75, abs=1e-15)


def test_au_pro_ties_between_region_and_normal_pixels():
    # Region (2 pixels) scores 0.5, 0.3; normal pixels (4) score 0.5, 0.2, 0.2, 0.0.
    # 0.5: one region pixel and one normal pixel enter together -> (0.25, 0.5), a sloped
    #      segment from (0, 0), not a step;
    # 0.3 -> (0.25, 1); 0.2 (two normal pixels at once) -> (0.75, 1); 0.0 -> (1, 1).
    # Up to 0.3: 0.25 * 0.5 / 2 + 0.05 * 1 = 0.1125 -> 0.375.
    # Up to 0.2 (interpolated on the sloped segment, PRO 0.4 there): 0.2 * 0.4 / 2 -> 0.2.
    mask = np.array([[1, 1, 0, 0, 0, 0]], dtype=bool)
    amap = np.array([[0.5, 0.3, 0.5, 0.2, 0.2, 0.0]])
    assert au_pro([mask], [amap]) == pytest.approx(0.375, abs=1e-15)
    assert au_pro([mask], [amap], fpr_limit=0.2) == pytest.approx(0.2, abs=1e-15)


def test_au_pro_averages_regions_not_pixels():
    # Region A = pixel 0 (size 1), region B = pixels 2..4 (size 3); normal pixels 1, 5, 6, 7.
    # scores:    A 0.9 | normal 0.8 | B 0.7 0.2 0.2 | normal 0.3 0.1 0.1
    # 0.9 -> PRO (1 + 0) / 2 = 1/2, FPR 0        (pixel overlap would be 1/4)
    # 0.8 -> (1/4, 1/2); 0.7 -> PRO (1 + 1/3) / 2 = 2/3: (1/4, 2/3); 0.3 -> (1/2, 2/3);
    # 0.2 -> (1/2, 1); 0.1 -> (1, 1).
    # Up to 0.3: 1/4 * 1/2 + 0.05 * 2/3 = 19/120 -> 19/36. Up to 1: 1/8 + 1/6 + 1/2 = 19/24.
    mask = np.array([[1, 0, 1, 1, 1, 0, 0, 0]], dtype=bool)
    amap = np.array([[0.9, 0.8, 0.7, 0.2, 0.2, 0.3, 0.1, 0.1]])
    assert au_pro([mask], [amap]) == pytest.approx(19 / 36, abs=1e-15)
    assert au_pro([mask], [amap], fpr_limit=1.0) == pytest.approx(19 / 24, abs=1e-15)


def test_au_pro_uses_4_connectivity_and_pools_images():
    # Under 4-connectivity the diagonal neighbours form two regions: A = (0, 0) of size 1 and
    # B = (1, 1), (1, 2) of size 2 (8-connectivity would give one region of size 3).
    # A 0.9, B 0.5 0.4; of the 6 normal pixels one scores 0.8, the others 0. A second,
    # defect-free image adds 6 normal pixels at 0, so 12 normal pixels in all.
    # 0.9 -> (0, 1/2); 0.8 -> (1/12, 1/2); 0.5 -> (1/12, 3/4); 0.4 -> (1/12, 1); 0 -> (1, 1).
    # Up to 0.3: 1/12 * 1/2 + (0.3 - 1/12) * 1 = 1/24 + 13/60 = 31/120 -> 31/36.
    # (With 8-connectivity: 1/12 * 1/3 + 13/60 = 11/45 -> 22/27.)
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    amap = np.array([[0.9, 0.8, 0.0], [0.0, 0.5, 0.4], [0.0, 0.0, 0.0]])
    masks = [mask, np.zeros((2, 3), dtype=bool)]
    maps = [amap, np.zeros((2, 3))]
    assert au_pro(masks, maps) == pytest.approx(31 / 36, abs=1e-15)


def test_au_pro_perfect_map_is_one():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = np.where(masks, 1.0 + rng.random(masks.shape), rng.random(masks.shape))
    assert au_pro(masks, maps) == pytest.approx(1.0, abs=1e-12)
    assert au_pro(masks, maps, fpr_limit=0.01) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_au_pro_constant_map_is_half_the_limit(fpr_limit):
    # Every pixel enters at the single threshold: the curve is the straight line from (0, 0) to
    # (1, 1), whose area up to fpr_limit is fpr_limit**2 / 2, i.e. fpr_limit / 2 once normalised.
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4, :] = True
    assert au_pro(masks, np.full(masks.shape, 0.7), fpr_limit=fpr_limit) == pytest.approx(
        fpr_limit / 2, abs=1e-15
    )


def test_au_pro_is_invariant_to_monotone_rescaling():
    rng = np.random.default_rng(1)
    masks = rng.random((2, 10, 10)) < 0.3
    maps = rng.random(masks.shape) + masks
    assert au_pro(masks, maps) == pytest.approx(au_pro(masks, np.exp(3 * maps) - 5), abs=1e-12)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        (np.zeros((2, 3, 3), dtype=bool), "no defect region"),
        (np.ones((2, 3, 3), dtype=bool), "no normal pixel"),
    ],
)
def test_au_pro_undefined(masks, match):
    with pytest.raises(ValueError, match=match):
        au_pro(masks, np.zeros(masks.shape))


@pytest.mark.parametrize("fpr_limit", [0, -0.1, 1.5, np.nan, "0.3", True])
def test_au_pro_bad_fpr_limit(fpr_limit):
    masks = np.zeros((1, 2, 2), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="fpr_limit"):
        au_pro(masks, np.zeros((1, 2, 2)), fpr_limit=fpr_limit)


def _brute_force_au_pro(masks, maps, fpr_limit):
    """Direct definition: PRO and FPR recomputed at every distinct threshold."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labels, n = ndimage.label(mask)
        regions += [amap[labels == k] for k in range(1, n + 1)]
    normal_scores = np.concatenate([amap[~mask] for mask, amap in zip(masks, maps, strict=True)])
    thresholds = sorted({float(v) for amap in maps for v in amap.ravel()}, reverse=True)
    points = [(0.0, 0.0)]
    for t in thresholds:
        fpr = np.mean(normal_scores >= t)
        pro = np.mean([np.mean(region >= t) for region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def _random_case(rng, ties):
    masks, maps = [], []
    for i in range(4):
        h, w = rng.integers(6, 16, size=2)
        mask = np.zeros((h, w), dtype=bool)
        if i != 0:  # image 0 is defect-free
            for _ in range(rng.integers(1, 5)):
                top, left = rng.integers(0, h - 1), rng.integers(0, w - 1)
                rh, rw = rng.integers(1, 4, size=2)
                mask[top : top + rh, left : left + rw] = True
            mask |= rng.random((h, w)) < 0.03  # scattered single pixels, diagonal contacts
        amap = rng.random((h, w)) + 0.6 * mask
        if ties:
            amap = np.round(amap * 5) / 5
        masks.append(mask)
        maps.append(amap)
    return masks, maps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fpr_limit", [0.02, 0.3, 1.0])
def test_au_pro_matches_brute_force(seed, ties, fpr_limit):
    rng = np.random.default_rng(seed)
    masks, maps = _random_case(rng, ties)
    assert sum(ndimage.label(m)[1] for m in masks) >= 3
    expected = _brute_force_au_pro(masks, maps, fpr_limit)
    assert au_pro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_localization_report():
    masks = np.array([[[1, 0], [0, 0]], [[0, 1], [1, 0]]], dtype=np.uint8) * 255
    maps = np.array([[[0.9, 0.2], [0.4, 0.1]], [[0.5, 0.6], [0.3, 0.3]]])
    report = localization_report(masks, maps, fpr_limit=0.5)
    assert report == {
        "pixel_auroc": pixel_auroc(masks, maps),
        "au_pro": au_pro(masks, maps, fpr_limit=0.5),
    }
    assert report["pixel_auroc"] == pytest.approx(5 / 6, abs=1e-15)
    json.dumps(report)


# -------------------------------------------------------------------------------------------------
# Histogram path (inputs of more than metrics._EXACT_MAX_PIXELS pixels)
# -------------------------------------------------------------------------------------------------
# The histogram path is forced on small inputs by lowering _EXACT_MAX_PIXELS, and made coarse by
# lowering _N_BINS and _N_SUB_BINS, so that pixels of different scores share bins and the
# refinement steps run. Its documented guarantee is an absolute error of at most _TOLERANCE per
# metric (the bound on the error of the ties inside bins, computed from the histogram, is
# brought under it by refinement); the tests check exactly that, plus 1e-12 for the float
# rounding of sums over a few thousand pixels.


@pytest.fixture
def histogram_path(monkeypatch):
    """Force the histogram path; small chunks so that counts are accumulated over chunks.

    Fewer sub-bins than by default keep the refinement pass cheap on these small inputs.
    """
    monkeypatch.setattr(metrics, "_EXACT_MAX_PIXELS", 0)
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 400)
    monkeypatch.setattr(metrics, "_N_SUB_BINS", 2**12)
    return monkeypatch


def _exact_auroc(masks, maps):
    return roc_auc_score(
        np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps])
    )


def _check_against_exact(masks, maps, fpr_limit, tolerance):
    report = localization_report(masks, maps, fpr_limit=fpr_limit)
    assert report["pixel_auroc"] == pytest.approx(_exact_auroc(masks, maps), abs=tolerance)
    expected_pro = _brute_force_au_pro(masks, maps, fpr_limit)
    assert report["au_pro"] == pytest.approx(expected_pro, abs=tolerance)
    assert pixel_auroc(masks, maps) == pytest.approx(report["pixel_auroc"], abs=tolerance)
    assert au_pro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected_pro, abs=tolerance)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fpr_limit", [0.02, 0.3, 1.0])
def test_histogram_path_matches_exact_references(histogram_path, seed, ties, fpr_limit):
    # Default bins: scores of different values rarely share one of 2**20 bins.
    masks, maps = _random_case(np.random.default_rng(seed), ties)
    _check_against_exact(masks, maps, fpr_limit, metrics._TOLERANCE + 1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fpr_limit", [0.02, 0.3, 1.0])
@pytest.mark.parametrize(("n_bins", "n_sub_bins"), [(8, 16), (64, 4096)])
def test_coarse_histogram_is_refined_to_the_tolerance(
    histogram_path, seed, ties, fpr_limit, n_bins, n_sub_bins
):
    # With 8 bins and 16 sub-bins, most bins are refined twice and end up sorted; with 64 bins
    # and 4096 sub-bins, the sub-bins are mostly enough.
    histogram_path.setattr(metrics, "_N_BINS", n_bins)
    histogram_path.setattr(metrics, "_N_SUB_BINS", n_sub_bins)
    masks, maps = _random_case(np.random.default_rng(seed), ties)
    _check_against_exact(masks, maps, fpr_limit, metrics._TOLERANCE + 1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_zero_tolerance_is_exact(histogram_path, seed):
    histogram_path.setattr(metrics, "_N_BINS", 8)
    histogram_path.setattr(metrics, "_N_SUB_BINS", 16)
    histogram_path.setattr(metrics, "_TOLERANCE", 0.0)
    masks, maps = _random_case(np.random.default_rng(seed), ties=False)
    _check_against_exact(masks, maps, 0.3, 1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_unrefined_histogram_error_is_within_its_bound(histogram_path, seed):
    # Without refinement the pixels of a bin are tied; the error is not zero but within the
    # bound that the refinement relies on.
    histogram_path.setattr(metrics, "_N_BINS", 32)
    histogram_path.setattr(metrics, "_TOLERANCE", np.inf)
    masks, maps = _random_case(np.random.default_rng(seed), ties=False)
    groups = metrics._score_groups(
        masks, maps, metrics._region_weights(masks), auroc=True, fpr_limit=0.3
    )
    n_regions = metrics._region_weights(masks)[1]
    assert groups[0].size <= 32
    auroc_bound = metrics._auroc_error_terms(groups[0], groups[1]).sum()
    pro_bound = metrics._au_pro_error_terms(groups[0], groups[2], n_regions, 0.3).sum()
    auroc_error = abs(pixel_auroc(masks, maps) - _exact_auroc(masks, maps))
    pro_error = abs(au_pro(masks, maps) - _brute_force_au_pro(masks, maps, 0.3))
    assert 0 < auroc_error <= auroc_bound + 1e-12
    assert 0 < pro_error <= pro_bound + 1e-12
    # Far above the default tolerance (1e-5): the refinement tests above check something.
    assert max(auroc_error, pro_error) > 1e-4


def test_histogram_path_outlier_and_mass_of_ties(histogram_path):
    # An outlier squeezes all other scores into the first of 2**20 bins (refined into
    # sub-bins); half of the pixels share one score, in a bin with other scores (refined
    # again: only the pixels that differ from the tied score are sorted).
    rng = np.random.default_rng(3)
    masks, maps = _random_case(rng, ties=False)
    maps = [np.maximum(amap, np.median(amap)) for amap in maps]
    maps[1][0, 0] = 1e6
    for fpr_limit in (0.02, 0.3):
        _check_against_exact(masks, maps, fpr_limit, metrics._TOLERANCE + 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_path_exact_on_separated_scores(histogram_path, dtype):
    # No two pixels share a bin: the histogram path is exact (the documented examples, and
    # the hand-computed cases above).
    assert pixel_auroc([[[0, 1], [0, 1]]], np.array([[[0.1, 0.8], [0.4, 0.3]]], dtype)) == 0.75
    assert au_pro([[[0, 1, 1, 0]]], np.array([[[0.1, 0.8, 0.4, 0.6]]], dtype)) == 0.5
    assert localization_report([[[0, 1, 1, 0]]], np.array([[[0.1, 0.8, 0.4, 0.6]]], dtype)) == {
        "pixel_auroc": 0.75,
        "au_pro": 0.5,
    }
    masks = np.array([[[1, 0], [0, 0]], [[0, 1], [1, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.2], [0.4, 0.1]], [[0.5, 0.6], [0.3, 0.3]]], dtype)
    assert pixel_auroc(masks, maps) == pytest.approx(5 / 6, abs=1e-15)
    mask = np.array([[1, 0, 1, 1, 1, 0, 0, 0]], dtype=bool)
    amap = np.array([[0.9, 0.8, 0.7, 0.2, 0.2, 0.3, 0.1, 0.1]], dtype)
    assert au_pro([mask], [amap]) == pytest.approx(19 / 36, abs=1e-15)
    assert au_pro([mask], [amap], fpr_limit=1.0) == pytest.approx(19 / 24, abs=1e-15)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_histogram_path_constant_map(histogram_path, fpr_limit):
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4, :] = True
    maps = np.full(masks.shape, 0.7, dtype=np.float32)
    assert pixel_auroc(masks, maps) == 0.5
    assert au_pro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(fpr_limit / 2, abs=1e-15)


def test_histogram_path_float32_matches_exact_on_the_same_values(histogram_path):
    # float32 maps are binned in float32; the reference sees the same values in float64.
    masks, maps = _random_case(np.random.default_rng(5), ties=False)
    maps32 = [amap.astype(np.float32) for amap in maps]
    maps64 = [amap.astype(np.float64) for amap in maps32]
    _check_against_exact(masks, maps32, 0.3, metrics._TOLERANCE + 1e-12)
    assert au_pro(masks, maps32) == pytest.approx(au_pro(masks, maps64), abs=1e-12)
    mixed = maps32[:2] + maps64[2:]  # binned in float64
    assert localization_report(masks, mixed) == localization_report(masks, maps64)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.uint8, bool])
def test_other_map_dtypes(dtype):
    masks = np.array([[[0, 1, 1, 0]]], dtype=bool)
    maps = np.array([[[0, 3, 2, 1]]]).astype(dtype)
    expected = localization_report(masks, maps.astype(np.float64))
    assert localization_report(masks, maps) == expected
