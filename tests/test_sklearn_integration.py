"""The pipeline in scikit-learn's machinery: GridSearchCV, caching, joblib, pickling, pandas."""

import os
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import make_scorer, normalized_mutual_info_score, silhouette_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
    _torch,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def textures(tiny_textures):
    """12 images: 6 normal, 3 scratches, 3 holes."""
    return tiny_textures.images, tiny_textures.target


def descriptor_silhouette(pipeline, X, y=None):
    """Unsupervised score: silhouette of the pipeline's own descriptors and clusters."""
    descriptors = pipeline[:-1].transform(X)
    labels = pipeline[-1].predict(descriptors)
    if not 1 < len(np.unique(labels)) < len(labels):
        return -1.0  # undefined: the worst silhouette
    return float(silhouette_score(descriptors, labels))


NMI = make_scorer(normalized_mutual_info_score)
# The default pipeline (pooling step); GRID_CONTRASTIVE searches the contrastive step.
GRID = {"clustering__n_clusters": [2, 3], "pooling__tau": [0.002, 0.05]}
GRID_CONTRASTIVE = {"clustering__n_clusters": [2, 3], "refiner__tau": [0.002, 0.05]}


# --------------------------------------------------------------------------- GridSearchCV
@pytest.mark.parametrize("contrastive", [False, True])
def test_grid_search_with_labels(textures, make_tiny_pipeline, contrastive):
    X, y = textures
    search = GridSearchCV(
        make_tiny_pipeline(contrastive=contrastive),
        GRID_CONTRASTIVE if contrastive else GRID,
        scoring=NMI,
        cv=KFold(2, shuffle=True, random_state=0),
    )
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all((scores >= 0) & (scores <= 1))
    assert search.best_score_ == scores.max()
    assert search.best_params_ == search.cv_results_["params"][int(np.argmax(scores))]
    # the refitted best pipeline, scored the way GridSearchCV scores it: predict, then NMI
    labels = search.predict(X)
    assert search.score(X, y) == pytest.approx(normalized_mutual_info_score(y, labels))
    assert len(np.unique(labels)) == search.best_params_["clustering__n_clusters"]


def test_grid_search_without_labels(textures, make_tiny_pipeline):
    X, _ = textures
    everything = [(np.arange(len(X)), np.arange(len(X)))]  # blind: score the fitted images
    search = GridSearchCV(
        make_tiny_pipeline(),
        {"clustering__n_clusters": [2, 3, 4], "localizer__n_steps": [0, 5]},
        scoring=descriptor_silhouette,
        cv=everything,
    )
    search.fit(X)
    best = search.best_estimator_
    descriptors = best[:-1].transform(X)
    # predict on the fitted images returns the fitted labels, so the score is reproducible
    np.testing.assert_array_equal(best.predict(X), best[-1].labels_)
    assert search.best_score_ == pytest.approx(silhouette_score(descriptors, best[-1].labels_))
    assert np.all(np.abs(search.cv_results_["mean_test_score"]) <= 1)


def _search(make_tiny_pipeline, n_jobs):
    return GridSearchCV(
        make_tiny_pipeline(),
        GRID,
        scoring=NMI,
        cv=KFold(2, shuffle=True, random_state=0),
        n_jobs=n_jobs,
    )


def _split_scores(search):
    return np.stack([search.cv_results_[f"split{i}_test_score"] for i in range(2)])


@pytest.fixture(scope="module")
def sequential_scores(textures, make_tiny_pipeline):
    return _split_scores(_search(make_tiny_pipeline, n_jobs=1).fit(*textures))


def test_grid_search_in_loky_worker_processes(textures, make_tiny_pipeline, sequential_scores):
    # every fit seeds itself from random_state: worker processes give the same scores
    search = _search(make_tiny_pipeline, n_jobs=2).fit(*textures)
    np.testing.assert_allclose(_split_scores(search), sequential_scores)


def test_grid_search_in_threads(textures, make_tiny_pipeline, sequential_scores):
    with joblib.parallel_backend("threading"):
        search = _search(make_tiny_pipeline, n_jobs=2).fit(*textures)
    np.testing.assert_allclose(_split_scores(search), sequential_scores)


# --------------------------------------------------------------------------- caching
class CountingFeatureExtractor(TextureFeatureExtractor):
    """Counts its forward passes (module level so that joblib can hash and pickle it)."""

    n_transforms = 0

    def transform(self, X):
        type(self).n_transforms += 1
        return super().transform(X)


def test_memory_caches_the_feature_extraction(textures, make_tiny_pipeline, tmp_path, monkeypatch):
    X, _ = textures
    monkeypatch.setattr(CountingFeatureExtractor, "n_transforms", 0)
    pipeline = make_tiny_pipeline(memory=joblib.Memory(tmp_path, verbose=0))
    pipeline.steps[0] = ("features", CountingFeatureExtractor(**pipeline[0].get_params()))
    first = pipeline.fit_predict(X)
    assert CountingFeatureExtractor.n_transforms == 1

    pipeline.set_params(clustering__n_clusters=2, pooling__tau=0.01, localizer__n_steps=3)
    second = pipeline.fit_predict(X)
    assert CountingFeatureExtractor.n_transforms == 1  # features came from the cache
    assert not np.array_equal(first, second)

    pipeline.set_params(features__image_size=40)  # a new feature step: computed again
    pipeline.fit(X)
    assert CountingFeatureExtractor.n_transforms == 2

    # the cached pipeline gives what an uncached one gives
    uncached = clone(pipeline).set_params(memory=None, features__image_size=32)
    pipeline.set_params(features__image_size=32).fit(X)
    assert CountingFeatureExtractor.n_transforms == 2
    np.testing.assert_array_equal(pipeline.predict(X), uncached.fit(X).predict(X))


# --------------------------------------------------------------------------- persistence
def test_pickled_pipelines_predict_the_same_in_a_new_process(
    textures, make_tiny_pipeline, tmp_path
):
    X, _ = textures
    np.save(tmp_path / "X.npy", X)
    # the default pipeline, and the contrastive one, which holds every torch module
    pipelines = {
        name: make_tiny_pipeline(contrastive=contrastive).fit(X)
        for name, contrastive in (("default", False), ("contrastive", True))
    }
    for name, pipeline in pipelines.items():
        joblib.dump(pipeline, tmp_path / f"{name}.joblib")
    script = (
        "import sys, joblib, numpy as np, torch\n"
        "torch.set_num_threads(int(sys.argv[2]))\n"
        "X = np.load(sys.argv[1] + '/X.npy')\n"
        "for name in sys.argv[3:]:\n"
        "    pipeline = joblib.load(f'{sys.argv[1]}/{name}.joblib')\n"
        "    np.save(f'{sys.argv[1]}/{name}-labels.npy', pipeline.predict(X))\n"
        "    np.save(f'{sys.argv[1]}/{name}-descriptors.npy', pipeline[:-1].transform(X))\n"
    )
    # The same number of torch threads as here: the float rounding of the features depends
    # on it (tests/test_random.py), and this test compares the descriptors closely.
    threads = str(torch.get_num_threads())
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), threads, *pipelines],
        check=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": threads},
    )
    for name, pipeline in pipelines.items():
        np.testing.assert_array_equal(
            np.load(tmp_path / f"{name}-labels.npy"), pipeline.predict(X)
        )
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}-descriptors.npy"),
            pipeline[:-1].transform(X),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.fixture(scope="module")
def fitted_torch_estimators(textures, tiny_backbone, tiny_localizer, tiny_refiner):
    """(estimator, fitted module attribute or None, its input) for every estimator on torch."""
    X, _ = textures
    features = TextureFeatureExtractor(**tiny_backbone).fit(X)
    maps = features.transform(X)
    localizer = BlindAnomalyLocalizer(random_state=0, **tiny_localizer).fit(maps)
    localized = localizer.transform(maps)
    refiner = ContrastiveRefiner(random_state=0, **tiny_refiner).fit(localized)
    pooling = AnomalyWeightedPooling(random_state=0).fit(localized)
    return {
        "features": (features, "extractor_", X),
        "localizer": (localizer, "vae_", maps),
        "refiner": (refiner, "head_", localized),
        "pooling": (pooling, None, localized),  # computes with torch, holds no module
    }


def _fitted_on_cuda(estimator):
    """A pickle of a copy of ``estimator`` as if fitted with device="cuda"."""
    on_gpu = pickle.loads(pickle.dumps(estimator))
    on_gpu.device = "cuda"
    on_gpu.device_ = torch.device("cuda")  # what fit resolves the device parameter to
    return pickle.dumps(on_gpu)


def _tensors(module):
    return [*module.parameters(), *module.buffers()]


@pytest.mark.parametrize("step", ["features", "localizer", "refiner"])
def test_getstate_stores_modules_on_the_cpu(step, fitted_torch_estimators, monkeypatch):
    estimator, attribute, _ = fitted_torch_estimators[step]
    live = getattr(estimator, attribute)
    # Pretend the fitted module lives on a GPU: __getstate__ must then pickle a CPU copy.
    monkeypatch.setattr(_torch, "module_device", lambda module: torch.device("cuda", 0))
    state = estimator.__getstate__()
    assert state[attribute] is not live
    assert all(t.device.type == "cpu" for t in _tensors(state[attribute]))
    assert getattr(estimator, attribute) is live  # the estimator itself is untouched
    for a, b in zip(_tensors(state[attribute]), _tensors(live), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("step", ["features", "localizer", "refiner", "pooling"])
def test_model_fitted_on_cuda_loads_on_a_cpu_only_machine(
    step, fitted_torch_estimators, monkeypatch
):
    estimator, attribute, X = fitted_torch_estimators[step]
    expected = estimator.transform(X)
    blob = _fitted_on_cuda(estimator)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="device='cuda', which is not available here"):
        loaded = pickle.loads(blob)
    assert loaded.device_ == torch.device("cpu")
    if attribute is not None:
        assert all(t.device.type == "cpu" for t in _tensors(getattr(loaded, attribute)))
    np.testing.assert_allclose(loaded.transform(X), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("step", ["features", "localizer", "refiner"])
def test_model_goes_back_to_its_device_where_it_exists(step, fitted_torch_estimators, monkeypatch):
    estimator, _, _ = fitted_torch_estimators[step]
    blob = _fitted_on_cuda(estimator)
    moves = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", lambda module, device: moves.append(device))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(blob)
    assert moves == [torch.device("cuda")]
    assert loaded.device_ == torch.device("cuda")


def test_cpu_model_loads_without_warning_or_moves(fitted_torch_estimators):
    for estimator, _, X in fitted_torch_estimators.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = pickle.loads(pickle.dumps(estimator))
        np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


# --------------------------------------------------------------------------- pandas output
def test_localizer_names_its_channels_and_the_anomaly_score(tiny_localizer):
    X = pd.DataFrame(np.random.default_rng(0).random((6, 3)), columns=["a", "b", "c"])
    localizer = BlindAnomalyLocalizer(random_state=0, **tiny_localizer).fit(X)
    assert list(localizer.get_feature_names_out()) == ["a", "b", "c", "anomaly_score"]
    out = localizer.set_output(transform="pandas").transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["a", "b", "c", "anomaly_score"]
    np.testing.assert_allclose(out[["a", "b", "c"]].to_numpy(), X.to_numpy(), rtol=1e-6)
    # 4-D maps cannot be a DataFrame: they stay arrays whatever the configuration
    maps = np.random.default_rng(0).random((4, 3, 5, 5), dtype=np.float32)
    assert isinstance(clone(localizer).fit_transform(maps), np.ndarray)


@pytest.mark.parametrize("contrastive", [False, True])
def test_pandas_output_through_the_image_pipeline(
    textures, make_tiny_pipeline, tiny_refiner, contrastive
):
    X, _ = textures
    pipeline = make_tiny_pipeline(contrastive=contrastive).set_output(transform="pandas").fit(X)
    descriptors = pipeline[:-1].transform(X)
    assert isinstance(descriptors, pd.DataFrame)
    # the local view (C pooled channels, or the head's outputs), then the C appearance channels
    channels = pipeline[0].n_channels_out_
    if contrastive:
        names = [f"contrastiverefiner{i}" for i in range(tiny_refiner["out_channels"] + channels)]
    else:
        names = [f"anomalyweightedpooling{i}" for i in range(2 * channels)]
    assert list(descriptors.columns) == names
    assert list(pipeline[-1].feature_names_in_) == list(descriptors.columns)
    unwrapped = make_tiny_pipeline(contrastive=contrastive).fit(X)
    np.testing.assert_array_equal(pipeline.predict(X), unwrapped.predict(X))


@pytest.mark.parametrize("appearance_weight, n_out", [(1.0, 6), (0.0, 3)])
def test_pandas_output_of_a_two_dimensional_pipeline(tiny_localizer, appearance_weight, n_out):
    # three channels pooled; with the appearance view (the default) three more
    X = pd.DataFrame(np.random.default_rng(1).random((8, 3)), columns=["r", "g", "b"])
    pipeline = make_pipeline(
        BlindAnomalyLocalizer(random_state=0, **tiny_localizer),
        AnomalyWeightedPooling(appearance_weight=appearance_weight),
    ).set_output(transform="pandas")
    out = pipeline.fit_transform(X)
    assert isinstance(out, pd.DataFrame) and out.shape == (8, n_out)
    assert list(pipeline.get_feature_names_out()) == [
        f"anomalyweightedpooling{i}" for i in range(n_out)
    ]


def test_feature_names_are_checked_by_the_first_step(tiny_backbone):
    X = pd.DataFrame(np.random.default_rng(0).integers(0, 256, (5, 7)))
    X.columns = [f"px{i}" for i in range(7)]
    extractor = TextureFeatureExtractor(**{**tiny_backbone, "image_size": 16}).fit(X)
    assert list(extractor.feature_names_in_) == list(X.columns)
    with pytest.raises(ValueError, match="feature names should match"):
        extractor.transform(X[X.columns[::-1]])
    # refitting on images forgets the 2-D bookkeeping
    extractor.fit(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    assert not hasattr(extractor, "n_features_in_")
    assert not hasattr(extractor, "feature_names_in_")


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "estimator, X",
    [
        (WardClustering(n_clusters=0), np.zeros((4, 2))),
        (WardClustering(max_clusters=1), np.zeros((4, 2))),
        (WardClustering(criterion="elbow"), np.zeros((4, 2))),
        (TextureFeatureExtractor(image_size=4), np.zeros((2, 8, 8, 3))),
        (BlindAnomalyLocalizer(border="none"), np.zeros((2, 3, 4, 4))),
        (AnomalyWeightedPooling(tau=0), np.zeros((2, 3, 4, 4))),
        (ContrastiveRefiner(threshold="median"), np.zeros((2, 3, 4, 4))),
        (WardClustering(n_resamples=-1), np.zeros((4, 2))),
        (WardClustering(resample_fraction=0.0), np.zeros((4, 2))),
        (AnomalyWeightedPooling(gate="median"), np.zeros((2, 3, 4, 4))),
        (AnomalyWeightedPooling(appearance_spread=0), np.zeros((2, 3, 4, 4))),
        (AnomalyWeightedPooling(appearance_weight=-1), np.zeros((2, 3, 4, 4))),
        (ContrastiveRefiner(threshold_clusters=0), np.zeros((2, 3, 4, 4))),
        (ContrastiveRefiner(gate="median"), np.zeros((2, 3, 4, 4))),
    ],
)
def test_invalid_parameters_fail_at_fit_not_at_construction(estimator, X):
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        estimator.fit(X)


def test_cross_parameter_checks_at_fit():
    X = np.random.default_rng(0).random((3, 2))
    with pytest.raises(ValueError, match="n_clusters=4 is larger than the number of samples"):
        WardClustering(n_clusters=4).fit(X)
    with pytest.raises(ValueError, match="needs threshold_clusters"):
        ContrastiveRefiner(threshold="kmeans", n_epochs=1).fit(np.zeros((3, 3, 4, 4)))
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        TextureFeatureExtractor(layers=[], weights=None).fit(np.zeros((2, 8, 8, 3)))


@pytest.mark.parametrize("contrastive", [False, True])
def test_make_blind_pipeline_seeds_every_random_step(textures, make_tiny_pipeline, contrastive):
    X, _ = textures
    a = make_tiny_pipeline(contrastive=contrastive).fit(X)
    b = make_tiny_pipeline(contrastive=contrastive).fit(X)
    seeds = {k: v for k, v in a.get_params().items() if k.endswith("__random_state")}
    assert len(seeds) == 4 and set(seeds.values()) == {0}
    np.testing.assert_array_equal(a[:-1].transform(X), b[:-1].transform(X))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert isinstance(a, Pipeline)


# --------------------------------------------------------------------------- memory
def test_release_freed_memory_calls_malloc_trim_when_the_c_library_has_it(monkeypatch):
    calls = []
    monkeypatch.setattr(_torch, "_malloc_trim", lambda: calls.append)
    assert _torch.release_freed_memory() is None
    assert calls == [0]
    monkeypatch.setattr(_torch, "_malloc_trim", lambda: None)  # another C library
    _torch.release_freed_memory()
    assert calls == [0]


def test_malloc_trim_is_found_exactly_on_glibc():
    import platform

    on_glibc = platform.libc_ver()[0] == "glibc"
    assert (_torch._malloc_trim() is not None) == on_glibc


class _FakeLibc:
    """A C library whose ``mallopt`` accepts the listed mmap thresholds and any trim threshold."""

    def __init__(self, accepted_mmap_thresholds):
        self.accepted, self.calls = accepted_mmap_thresholds, []

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return int(parameter != _torch._M_MMAP_THRESHOLD or value in self.accepted)


@pytest.mark.parametrize(
    "accepted, expected_calls, expected",
    [
        ([48 << 20], [(-3, 48 << 20), (-1, 256 << 20)], True),
        # older glibc releases refuse mmap thresholds above 32 MiB: take the largest they allow
        ([32 << 20], [(-3, 48 << 20), (-3, 32 << 20), (-1, 256 << 20)], True),
        # the trim threshold alone would switch the adaptive mmap threshold off: not set
        ([], [(-3, 48 << 20), (-3, 32 << 20)], False),
    ],
)
def test_keep_freed_blocks_sets_the_mmap_threshold_before_the_trim_threshold(
    monkeypatch, accepted, expected_calls, expected
):
    libc = _FakeLibc(accepted)
    monkeypatch.setattr(_torch.ctypes, "CDLL", lambda name: libc)
    _torch.keep_freed_blocks_for_reuse.cache_clear()
    try:
        assert _torch.keep_freed_blocks_for_reuse() is expected
        assert _torch.keep_freed_blocks_for_reuse() is expected  # once per process
        assert libc.calls == expected_calls
    finally:
        _torch.keep_freed_blocks_for_reuse.cache_clear()


def test_keep_freed_blocks_does_nothing_without_mallopt(monkeypatch):
    def no_library(name):
        raise OSError("no C library")

    _torch.keep_freed_blocks_for_reuse.cache_clear()
    try:
        monkeypatch.setattr(_torch.ctypes, "CDLL", no_library)
        assert _torch.keep_freed_blocks_for_reuse() is False
        _torch.keep_freed_blocks_for_reuse.cache_clear()
        monkeypatch.setattr(_torch.ctypes, "CDLL", lambda name: object())  # no mallopt
        assert _torch.keep_freed_blocks_for_reuse() is False
    finally:
        _torch.keep_freed_blocks_for_reuse.cache_clear()


def test_keep_freed_blocks_is_set_exactly_on_glibc():
    import platform

    on_glibc = platform.libc_ver()[0] == "glibc"
    assert _torch.keep_freed_blocks_for_reuse() is on_glibc


def test_loading_a_gpu_model_without_the_gpu_warns_once(
    make_tiny_pipeline, tiny_textures, tmp_path, monkeypatch
):
    from skanomclust.model_io import load_model

    model = make_tiny_pipeline(3).fit(tiny_textures.images)
    for _, step in model.steps:
        if hasattr(step, "device_"):
            step.device, step.device_ = "cuda", torch.device("cuda")
    joblib.dump(model, tmp_path / "model.joblib")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every step warns; load_model says it once
        loaded = load_model(tmp_path / "model.joblib")
    assert [str(w.message)[:40] for w in caught] == ["This model was fitted with device='cuda'"]
    np.testing.assert_array_equal(loaded.predict(tiny_textures.images), model[-1].labels_)
