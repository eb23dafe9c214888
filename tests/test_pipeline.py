"""The whole method as a Pipeline: its presets, and the synthetic set with pretrained features."""

import warnings

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.pipeline import make_pipeline

from skanomclust import (
    PRESETS,
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
    make_blind_pipeline,
)
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report

pytestmark = pytest.mark.usefixtures("one_thread")

# Small but real: offline ImageNet MobileNetV2 (the test needs pretrained features:
# with random weights the synthetic defect types are not separable).
FAST = {
    "localizer__n_steps": 100,
    "localizer__pixels_per_step": 1024,
    "localizer__hidden_channels": 128,
    "localizer__latent_channels": 32,
}


@pytest.fixture(scope="module")
def synthetic(offline_weights):
    return make_synthetic_textures(random_state=0)


@pytest.fixture(scope="module")
def fitted(synthetic):
    pipeline = make_blind_pipeline(6, random_state=0).set_params(**FAST)
    labels = pipeline.fit_predict(synthetic.images)
    return pipeline, labels


@pytest.fixture(scope="module")
def features(synthetic, fitted):
    """The fitted pipeline's feature maps of the training images (computed once)."""
    pipeline, _ = fitted
    return pipeline[0].transform(synthetic.images)


def test_recovers_the_synthetic_defect_types(synthetic, fitted):
    _, labels = fitted
    report = clustering_report(synthetic.target, labels)
    # Measured at these settings (seed 0, preset "default": three-stage features at 256 px,
    # FCA on 96 principal channels, position baseline, anomaly and appearance views,
    # normality gate, no contrastive step, consensus of 50 Ward clusterings): NMI 0.541,
    # ARI 0.436, with one or two threads (one Ward clustering: NMI 0.531, ARI 0.445).
    # The "paper" preset (contrastive step, 3 epochs) scores NMI 0.381, ARI 0.209 there;
    # mean-pooled features + Ward score NMI 0.03 on the same images, and random labels
    # about 0.06.
    assert report["nmi"] > 0.45
    assert report["ari"] > 0.30


def test_identical_runs_give_identical_labels(synthetic, fitted, features):
    pipeline, labels = fitted
    again = make_blind_pipeline(6, random_state=0).set_params(**FAST)
    assert again[0].get_params() == pipeline[0].get_params()
    # The pretrained feature step draws nothing: the random steps from the same features.
    np.testing.assert_array_equal(again[1:].fit_predict(features), labels)


def test_predict_on_training_images_equals_fit_predict(fitted, features):
    pipeline, labels = fitted
    # what pipeline.predict(images) computes, with the features computed once
    np.testing.assert_array_equal(pipeline[1:].predict(features), labels)


def test_predict_new_images(fitted):
    pipeline, _ = fitted
    new = make_synthetic_textures(n_normal=4, n_per_defect=2, random_state=1)
    predicted = pipeline.predict(new.images)
    assert predicted.shape == (len(new.images),)
    assert set(predicted) <= set(range(6))


def test_design_card_pipeline_as_written(synthetic):
    # make_pipeline(TextureFeatureExtractor(), BlindAnomalyLocalizer(), ContrastiveRefiner(),
    #               AgglomerativeClustering(n_clusters=6, linkage="ward")) -- with small settings
    pipeline = make_pipeline(
        TextureFeatureExtractor(image_size=128),
        BlindAnomalyLocalizer(n_steps=20, hidden_channels=32, latent_channels=8, random_state=0),
        ContrastiveRefiner(n_epochs=1, random_state=0),
        AgglomerativeClustering(n_clusters=6, linkage="ward"),
    )
    labels = pipeline.fit_predict(synthetic.images[:40])
    assert labels.shape == (40,) and len(set(labels)) == 6


def test_without_contrastive_learning_variant(synthetic):
    pipeline = make_pipeline(
        TextureFeatureExtractor(image_size=128),
        BlindAnomalyLocalizer("fca"),
        AnomalyWeightedPooling(),
        WardClustering(n_clusters=6),
    )
    labels = pipeline.fit_predict(synthetic.images[:40])
    np.testing.assert_array_equal(pipeline.predict(synthetic.images[:40]), labels)


# --------------------------------------------------------------------------- presets
def _steps(pipeline):
    return [name for name, _ in pipeline.steps]


def test_every_parameter_is_reachable():
    params = make_blind_pipeline(4).get_params()
    for name in (
        "features__backbone",
        "features__image_size",
        "features__dtype",
        "localizer__mode",
        "localizer__n_steps",
        "pooling__tau",
        "pooling__appearance_weight",
        "pooling__gate",
        "clustering__n_clusters",
        "clustering__max_clusters",
        "clustering__criterion",
        "clustering__n_resamples",
    ):
        assert name in params
    assert params["features__dtype"] == "float16"
    assert params["clustering__n_clusters"] == 4
    assert make_blind_pipeline().get_params()["clustering__n_clusters"] == "auto"
    refiner = make_blind_pipeline(4, contrastive=True).get_params()
    for name in ("refiner__tau", "refiner__threshold", "refiner__threshold_clusters"):
        assert name in refiner


def test_default_preset_pools_without_the_contrastive_step():
    pipeline = make_blind_pipeline(4)
    assert set(PRESETS) == {"default", "paper"}
    assert _steps(pipeline) == ["features", "localizer", "pooling", "clustering"]
    assert _steps(make_blind_pipeline(4, preset="default")) == _steps(pipeline)
    params = pipeline.get_params()
    assert params["pooling__gate"] == "auto" and params["pooling__appearance_weight"] == 1.0
    assert "refiner__tau" not in params
    # the localizer hands its buffer on instead of copying the features
    assert params["localizer__copy"] is False
    # the labels are the consensus of 50 resampled Ward clusterings
    assert params["clustering__n_resamples"] == 50


def test_contrastive_step_on_request():
    params = make_blind_pipeline(4, contrastive=True).get_params()
    assert _steps(make_blind_pipeline(4, contrastive=True)) == [
        "features",
        "localizer",
        "refiner",
        "clustering",
    ]
    # k no longer reaches the refiner: Otsu's k-free pixel threshold, whatever n_clusters is
    assert params["refiner__threshold"] == "otsu" and params["refiner__threshold_clusters"] is None
    assert params["refiner__n_clusters"] == "deprecated"
    assert params["refiner__gate"] == "auto"


def test_paper_preset():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in particular no deprecation warning of n_clusters
        pipeline = make_blind_pipeline(4, preset="paper")
    assert _steps(pipeline) == ["features", "localizer", "refiner", "clustering"]
    params = pipeline.get_params()
    # the paper's k-means pixel threshold uses k
    assert params["refiner__threshold"] == "kmeans" and params["refiner__threshold_clusters"] == 4
    assert params["refiner__appearance_weight"] == 0.0 and params["refiner__gate"] is None
    assert params["localizer__fca_components"] is None
    assert params["localizer__baseline"] is None and params["localizer__border"] == "auto"
    assert params["clustering__n_resamples"] == 0  # one Ward clustering
    # the paper's "w/o CL" variant: the paper's descriptor, pooled
    pooled = make_blind_pipeline(4, preset="paper", contrastive=False).get_params()
    assert pooled["pooling__appearance_weight"] == 0.0 and pooled["pooling__gate"] is None
    assert pooled["localizer__fca_components"] is None


def test_preset_errors():
    with pytest.raises(ValueError, match="preset must be one of"):
        make_blind_pipeline(4, preset="fast")
    with pytest.raises(ValueError, match="needs an int n_clusters"):
        make_blind_pipeline("auto", preset="paper")
    make_blind_pipeline("auto", preset="paper", contrastive=False)  # no k needed when pooling


@pytest.mark.parametrize("contrastive", [False, True])
def test_every_step_gets_the_device_and_the_seed(contrastive):
    params = make_blind_pipeline(
        3, device="cpu", random_state=7, contrastive=contrastive
    ).get_params()
    steps = ["features", "localizer", "refiner" if contrastive else "pooling"]
    for step in steps:
        assert params[f"{step}__device"] == "cpu"
    for step in [*steps, "clustering"]:
        assert params[f"{step}__random_state"] == 7
