"""The randomness policy (skanomclust._random.Seeds): reproducible, independent, local.

- the same ``random_state`` gives the same labels, whatever else ran before;
- every random operation draws from its own named sub-seed;
- no global random generator (torch, numpy, Python) is seeded, advanced or read;
- the number of torch threads does not change the labels.
"""

import random

import numpy as np
import pytest
import torch

from skanomclust._random import Seeds
from skanomclust.contract import split_localizer_output
from skanomclust.run import cluster_images

pytestmark = pytest.mark.usefixtures("one_thread")

# Between them, the steps of the method that draw random numbers: backbone weights
# (weights=None), VAE, contrastive head, k-means pixel threshold (paper), mixture of the
# normality gate, reference samples of the automatic k and the resampled consensus. (The
# channel projection before FCA is skipped on maps this small.)
CONFIGURATIONS = {
    "default": {"n_clusters": 3, "params": {}},
    "contrastive-auto-k": {
        "n_clusters": "auto",
        "contrastive": True,
        "params": {"clustering__n_resamples": 3, "refiner__gate": "gmm"},
    },
    "paper": {"n_clusters": 3, "preset": "paper", "params": {}},
}


def _pipeline(make_tiny_pipeline, name, random_state=0):
    config = dict(CONFIGURATIONS[name])
    params = config.pop("params")
    n_clusters = config.pop("n_clusters")
    pipeline = make_tiny_pipeline(n_clusters, random_state=random_state, **config)
    return pipeline.set_params(**params)


def _localized(pipeline, X):
    """The anomaly maps of a fitted pipeline (a copy: the buffer is reused)."""
    return np.array(split_localizer_output(pipeline[:2].transform(X))[1])


@pytest.fixture(scope="module")
def fitted(tiny_textures, make_tiny_pipeline):
    """Each configuration fitted once with random_state=0: (pipeline, labels)."""
    out = {}
    for name in CONFIGURATIONS:
        pipeline = _pipeline(make_tiny_pipeline, name)
        out[name] = pipeline, pipeline.fit_predict(tiny_textures.images)
    return out


# --------------------------------------------------------------------------- Seeds
def test_sub_seeds_are_named_and_independent():
    seeds = Seeds(0)
    assert seeds.int("a") != seeds.int("b")
    assert seeds.int("a") == Seeds(0).int("a") != Seeds(1).int("a")
    # a pure function of (random_state, name): the order of the calls does not matter
    first = [Seeds(0).int(name) for name in ("vae", "head", "gate")]
    second = [Seeds(0).int(name) for name in ("gate", "head", "vae")][::-1]
    assert first == second
    for name in ("vae", "head", "gate", ""):
        assert 0 <= seeds.int(name) < 2**63
        assert 0 <= seeds.legacy(name) < 2**31 - 1
    # the generators of two names give unrelated streams
    a, b = seeds.numpy("a").random(10_000), seeds.numpy("b").random(10_000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05
    torch_a = seeds.torch("a").initial_seed()
    assert torch_a == seeds.int("a") and torch_a != seeds.torch("b").initial_seed()
    np.testing.assert_array_equal(
        torch.rand(5, generator=seeds.torch("a")), torch.rand(5, generator=Seeds(0).torch("a"))
    )


def test_random_state_instances_and_none_follow_scikit_learn():
    # an instance gives one draw of entropy per Seeds (per fit): the next fit differs
    rng = np.random.RandomState(0)
    first, second = Seeds(rng), Seeds(rng)
    assert first.int("vae") != second.int("vae")
    assert Seeds(np.random.RandomState(0)).int("vae") == first.int("vae")
    # None draws fresh entropy (from numpy's global generator, scikit-learn's convention)
    assert Seeds(None).entropy != Seeds(None).entropy
    assert Seeds(np.int64(7)).int("vae") == Seeds(7).int("vae")


# --------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_same_random_state_gives_identical_results(
    name, fitted, tiny_textures, make_tiny_pipeline
):
    X = tiny_textures.images
    pipeline, labels = fitted[name]
    again = _pipeline(make_tiny_pipeline, name)
    np.testing.assert_array_equal(again.fit_predict(X), labels)
    np.testing.assert_array_equal(again[:-1].transform(X), pipeline[:-1].transform(X))


def test_different_random_states_give_different_models(fitted, tiny_textures, make_tiny_pipeline):
    X = tiny_textures.images
    pipeline, _ = fitted["default"]
    other = _pipeline(make_tiny_pipeline, "default", random_state=1).fit(X)
    assert not np.array_equal(other[:-1].transform(X), pipeline[:-1].transform(X))


def test_a_step_added_leaves_the_draws_of_the_others_unchanged(fitted, tiny_textures):
    # the contrastive step draws from its own sub-seeds: the backbone, the VAE and the
    # projection draw the same with or without it, so the anomaly maps are the same
    X = tiny_textures.images
    default, _ = fitted["default"]
    contrastive, _ = fitted["contrastive-auto-k"]
    assert "refiner" in contrastive.named_steps and "pooling" in default.named_steps
    np.testing.assert_array_equal(_localized(contrastive, X), _localized(default, X))


def test_fit_neither_reads_nor_changes_the_global_generators(
    fitted, tiny_textures, make_tiny_pipeline
):
    X = tiny_textures.images
    for name in CONFIGURATIONS:
        _, labels = fitted[name]
        # other global seeds than when `fitted` ran
        torch.manual_seed(12345)
        np.random.seed(12345)  # noqa: NPY002 (the global generator, on purpose)
        random.seed(12345)
        torch_state = torch.random.get_rng_state()
        numpy_state = np.random.get_state()  # noqa: NPY002
        python_state = random.getstate()
        pipeline = _pipeline(make_tiny_pipeline, name).fit(X)
        # not read: the same labels whatever the global generators hold
        np.testing.assert_array_equal(pipeline[-1].labels_, labels)
        # not changed: neither seeded nor advanced
        assert torch.equal(torch.random.get_rng_state(), torch_state)
        after = np.random.get_state()  # noqa: NPY002
        assert after[0] == numpy_state[0] and after[2:] == numpy_state[2:]
        np.testing.assert_array_equal(after[1], numpy_state[1])
        assert random.getstate() == python_state


def test_run_api_is_reproducible(tiny_textures, tiny_localizer):
    X = tiny_textures.images
    params = {f"localizer__{k}": v for k, v in tiny_localizer.items()}

    def run(random_state):
        return cluster_images(
            X,
            3,
            weights=None,
            image_size=32,
            params=params,
            sample_size=8,
            chunk_size=5,
            random_state=random_state,
        )

    a, b = run(0), run(0)
    np.testing.assert_array_equal(a.sample_indices, b.sample_indices)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    assert not np.array_equal(run(1).sample_indices, a.sample_indices)


# --------------------------------------------------------------------------- threads
def _fit_with_threads(pipeline, X, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        labels = pipeline.fit_predict(X)
        descriptors = pipeline[:-1].transform(X)
    finally:
        torch.set_num_threads(before)
    return labels, descriptors


# The default pipeline, and the one drawing the most (every torch step and both k steps).
@pytest.mark.parametrize("name", ["default", "contrastive-auto-k"])
def test_labels_do_not_depend_on_the_number_of_threads(name, tiny_textures, make_tiny_pipeline):
    X = tiny_textures.images
    one = _fit_with_threads(_pipeline(make_tiny_pipeline, name), X, 1)
    two = _fit_with_threads(_pipeline(make_tiny_pipeline, name), X, 2)
    four = _fit_with_threads(_pipeline(make_tiny_pipeline, name), X, 4)
    np.testing.assert_array_equal(two[0], one[0])
    np.testing.assert_array_equal(four[0], one[0])
    assert np.abs(four[1] - one[1]).max() <= 1e-2 * np.abs(one[1]).max()
    # The descriptors agree up to float rounding. It starts in the backbone: oneDNN may
    # split the channel sum of a 1x1 convolution between threads when the maps are as
    # small as here (2 x 2 pixels at stride 16), which moves features by ~1e-6 relative;
    # float16 storage and the per-map scalings then make it ~3e-3 of the largest value.
    assert np.abs(two[1] - one[1]).max() <= 1e-2 * np.abs(one[1]).max()
