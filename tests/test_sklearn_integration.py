"""The pipeline in scikit-learn's machinery: GridSearchCV, caching, joblib, pickling, pandas."""

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
    _utils,
    make_blind_pipeline,
)
from skanomclust.datasets import make_synthetic_textures

TINY_LOCALIZER = {
    "n_steps": 5,
    "pixels_per_step": 64,
    "hidden_channels": 8,
    "latent_channels": 4,
    "border": 0,
}
TINY_REFINER = {"n_epochs": 1, "hidden_channels": 8, "out_channels": 4}


def _tiny_pipeline(memory=None, n_clusters=3):
    """make_blind_pipeline with a random backbone, 32-pixel images and tiny torch parts."""
    pipeline = make_blind_pipeline(
        n_clusters, weights=None, image_size=32, random_state=0, memory=memory
    )
    return pipeline.set_params(
        **{f"localizer__{k}": v for k, v in TINY_LOCALIZER.items()},
        **{f"refiner__{k}": v for k, v in TINY_REFINER.items()},
    )


@pytest.fixture(scope="module")
def textures():
    """12 images: 6 normal, 3 scratches, 3 holes."""
    data = make_synthetic_textures(
        6, 3, defect_types=("scratch", "hole"), image_size=32, random_state=0
    )
    return data.images, data.target


def descriptor_silhouette(pipeline, X, y=None):
    """Unsupervised score: silhouette of the pipeline's own descriptors and clusters."""
    descriptors = pipeline[:-1].transform(X)
    labels = pipeline[-1].predict(descriptors)
    if not 1 < len(np.unique(labels)) < len(labels):
        return -1.0  # undefined: the worst silhouette
    return float(silhouette_score(descriptors, labels))


NMI = make_scorer(normalized_mutual_info_score)
GRID = {"clustering__n_clusters": [2, 3], "refiner__tau": [0.002, 0.05]}


# --------------------------------------------------------------------------- GridSearchCV
def test_grid_search_with_labels(textures):
    X, y = textures
    search = GridSearchCV(
        _tiny_pipeline(), GRID, scoring=NMI, cv=KFold(2, shuffle=True, random_state=0)
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


def test_grid_search_without_labels(textures):
    X, _ = textures
    everything = [(np.arange(len(X)), np.arange(len(X)))]  # blind: score the fitted images
    search = GridSearchCV(
        _tiny_pipeline(),
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


def _search(n_jobs):
    return GridSearchCV(
        _tiny_pipeline(),
        GRID,
        scoring=NMI,
        cv=KFold(2, shuffle=True, random_state=0),
        n_jobs=n_jobs,
    )


def _split_scores(search):
    return np.stack([search.cv_results_[f"split{i}_test_score"] for i in range(2)])


@pytest.fixture(scope="module")
def sequential_scores(textures):
    return _split_scores(_search(n_jobs=1).fit(*textures))


def test_grid_search_in_loky_worker_processes(textures, sequential_scores):
    # every fit seeds itself from random_state: worker processes give the same scores
    np.testing.assert_allclose(_split_scores(_search(n_jobs=2).fit(*textures)), sequential_scores)


def test_grid_search_in_threads(textures, sequential_scores):
    with joblib.parallel_backend("threading"):
        search = _search(n_jobs=2).fit(*textures)
    np.testing.assert_allclose(_split_scores(search), sequential_scores)


# --------------------------------------------------------------------------- caching
class CountingFeatureExtractor(TextureFeatureExtractor):
    """Counts its forward passes (module level so that joblib can hash and pickle it)."""

    n_transforms = 0

    def transform(self, X):
        type(self).n_transforms += 1
        return super().transform(X)


def test_memory_caches_the_feature_extraction(textures, tmp_path, monkeypatch):
    X, _ = textures
    monkeypatch.setattr(CountingFeatureExtractor, "n_transforms", 0)
    pipeline = _tiny_pipeline(memory=joblib.Memory(tmp_path, verbose=0))
    pipeline.steps[0] = ("features", CountingFeatureExtractor(**pipeline[0].get_params()))
    first = pipeline.fit_predict(X)
    assert CountingFeatureExtractor.n_transforms == 1

    pipeline.set_params(clustering__n_clusters=2, refiner__tau=0.01, localizer__n_steps=3)
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
def test_pickled_pipeline_predicts_the_same_in_a_new_process(textures, tmp_path):
    X, _ = textures
    pipeline = _tiny_pipeline().fit(X)
    joblib.dump(pipeline, tmp_path / "pipeline.joblib")
    np.save(tmp_path / "X.npy", X)
    script = (
        "import sys, joblib, numpy as np\n"
        "pipeline = joblib.load(sys.argv[1] + '/pipeline.joblib')\n"
        "X = np.load(sys.argv[1] + '/X.npy')\n"
        "np.save(sys.argv[1] + '/labels.npy', pipeline.predict(X))\n"
        "np.save(sys.argv[1] + '/descriptors.npy', pipeline[:-1].transform(X))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), pipeline.predict(X))
    np.testing.assert_allclose(
        np.load(tmp_path / "descriptors.npy"), pipeline[:-1].transform(X), rtol=1e-5, atol=1e-6
    )


@pytest.fixture(scope="module")
def fitted_torch_estimators(textures):
    """(estimator, fitted module attribute, its input) for every estimator holding torch."""
    X, _ = textures
    features = TextureFeatureExtractor(weights=None, image_size=32, random_state=0).fit(X)
    maps = features.transform(X)
    localizer = BlindAnomalyLocalizer(random_state=0, **TINY_LOCALIZER).fit(maps)
    localized = localizer.transform(maps)
    refiner = ContrastiveRefiner(random_state=0, **TINY_REFINER).fit(localized)
    return {
        "features": (features, "extractor_", X),
        "localizer": (localizer, "vae_", maps),
        "refiner": (refiner, "head_", localized),
    }


def _tensors(module):
    return [*module.parameters(), *module.buffers()]


@pytest.mark.parametrize("step", ["features", "localizer", "refiner"])
def test_getstate_stores_modules_on_the_cpu(step, fitted_torch_estimators, monkeypatch):
    estimator, attribute, _ = fitted_torch_estimators[step]
    live = getattr(estimator, attribute)
    # Pretend the fitted module lives on a GPU: __getstate__ must then pickle a CPU copy.
    monkeypatch.setattr(_utils, "module_device", lambda module: torch.device("cuda", 0))
    state = estimator.__getstate__()
    assert state[attribute] is not live
    assert all(t.device.type == "cpu" for t in _tensors(state[attribute]))
    assert getattr(estimator, attribute) is live  # the estimator itself is untouched
    for a, b in zip(_tensors(state[attribute]), _tensors(live), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("step", ["features", "localizer", "refiner"])
def test_model_fitted_on_cuda_loads_on_a_cpu_only_machine(
    step, fitted_torch_estimators, monkeypatch
):
    estimator, attribute, X = fitted_torch_estimators[step]
    expected = estimator.transform(X)
    on_gpu = pickle.loads(pickle.dumps(estimator))
    on_gpu.device = "cuda"  # as if fitted with device="cuda"
    blob = pickle.dumps(on_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="device='cuda', which is not available here"):
        loaded = pickle.loads(blob)
    assert all(t.device.type == "cpu" for t in _tensors(getattr(loaded, attribute)))
    np.testing.assert_allclose(loaded.transform(X), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("step", ["features", "localizer", "refiner"])
def test_model_goes_back_to_its_device_where_it_exists(step, fitted_torch_estimators, monkeypatch):
    estimator, attribute, _ = fitted_torch_estimators[step]
    on_gpu = pickle.loads(pickle.dumps(estimator))
    on_gpu.device = "cuda"
    blob = pickle.dumps(on_gpu)
    moves = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", lambda module, device: moves.append(device))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(blob)
    assert moves == [torch.device("cuda")]


def test_cpu_model_loads_without_warning_or_moves(fitted_torch_estimators):
    for estimator, _, X in fitted_torch_estimators.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = pickle.loads(pickle.dumps(estimator))
        np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


# --------------------------------------------------------------------------- pandas output
def test_localizer_names_its_channels_and_the_anomaly_score():
    X = pd.DataFrame(np.random.default_rng(0).random((6, 3)), columns=["a", "b", "c"])
    localizer = BlindAnomalyLocalizer(random_state=0, **TINY_LOCALIZER).fit(X)
    assert list(localizer.get_feature_names_out()) == ["a", "b", "c", "anomaly_score"]
    out = localizer.set_output(transform="pandas").transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["a", "b", "c", "anomaly_score"]
    np.testing.assert_allclose(out[["a", "b", "c"]].to_numpy(), X.to_numpy(), rtol=1e-6)
    # 4-D maps cannot be a DataFrame: they stay arrays whatever the configuration
    maps = np.random.default_rng(0).random((4, 3, 5, 5), dtype=np.float32)
    assert isinstance(clone(localizer).fit_transform(maps), np.ndarray)


def test_pandas_output_through_the_image_pipeline(textures):
    X, _ = textures
    pipeline = _tiny_pipeline().set_output(transform="pandas").fit(X)
    descriptors = pipeline[:-1].transform(X)
    assert isinstance(descriptors, pd.DataFrame)
    assert list(descriptors.columns) == [f"contrastiverefiner{i}" for i in range(4)]
    assert list(pipeline[-1].feature_names_in_) == list(descriptors.columns)
    np.testing.assert_array_equal(pipeline.predict(X), _tiny_pipeline().fit(X).predict(X))


def test_pandas_output_of_a_two_dimensional_pipeline():
    X = pd.DataFrame(np.random.default_rng(1).random((8, 3)), columns=["r", "g", "b"])
    pipeline = make_pipeline(
        BlindAnomalyLocalizer(random_state=0, **TINY_LOCALIZER), AnomalyWeightedPooling()
    ).set_output(transform="pandas")
    out = pipeline.fit_transform(X)
    assert isinstance(out, pd.DataFrame) and out.shape == (8, 3)
    assert list(pipeline.get_feature_names_out()) == [
        f"anomalyweightedpooling{i}" for i in range(3)
    ]


def test_feature_names_are_checked_by_the_first_step():
    X = pd.DataFrame(np.random.default_rng(0).integers(0, 256, (5, 7)))
    X.columns = [f"px{i}" for i in range(7)]
    extractor = TextureFeatureExtractor(weights=None, image_size=16, random_state=0).fit(X)
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
    with pytest.raises(ValueError, match="needs n_clusters"):
        ContrastiveRefiner(threshold="kmeans", n_epochs=1).fit(np.zeros((3, 3, 4, 4)))
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        TextureFeatureExtractor(layers=[], weights=None).fit(np.zeros((2, 8, 8, 3)))


def test_make_blind_pipeline_seeds_every_random_step(textures):
    X, _ = textures
    a = _tiny_pipeline().fit(X)
    b = _tiny_pipeline().fit(X)
    assert a.get_params()["features__random_state"] == 0
    np.testing.assert_array_equal(a[:-1].transform(X), b[:-1].transform(X))
    assert isinstance(a, Pipeline)


# --------------------------------------------------------------------------- memory
def test_release_freed_memory_calls_malloc_trim_when_the_c_library_has_it(monkeypatch):
    calls = []
    monkeypatch.setattr(_utils, "_malloc_trim", lambda: calls.append)
    assert _utils.release_freed_memory() is None
    assert calls == [0]
    monkeypatch.setattr(_utils, "_malloc_trim", lambda: None)  # another C library
    _utils.release_freed_memory()
    assert calls == [0]


def test_malloc_trim_is_found_exactly_on_glibc():
    import platform

    on_glibc = platform.libc_ver()[0] == "glibc"
    assert (_utils._malloc_trim() is not None) == on_glibc
