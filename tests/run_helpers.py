"""What the run tests share (tests/test_run.py, tests/test_distributed.py): a tiny run.

Their images, the localizer settings that keep a run of them to seconds, and the
tolerance of results computed from float16-stored features. Imported by name
(pytest puts this folder on ``sys.path``); the package is imported when images
are made, not here.
"""

import numpy as np

# Tiny but complete (with a random-weights backbone and 32 px images): a few VAE steps.
RUN_PARAMS = {
    "localizer__n_steps": 5,
    "localizer__pixels_per_step": 256,
    "localizer__hidden_channels": 16,
    "localizer__latent_channels": 4,
    "localizer__fca_components": 8,
    "localizer__patch_size": 3,
}


def run_images(n_normal, n_per_defect):
    """Synthetic images of 32 px, ``n_per_defect`` each of holes and scratches, seed 0."""
    from skanomclust.datasets import make_synthetic_textures

    data = make_synthetic_textures(
        n_normal=n_normal,
        n_per_defect=n_per_defect,
        defect_types=("hole", "scratch"),
        image_size=32,
        random_state=0,
    )
    return data.images


def assert_close(actual, desired):
    """Equal up to float16 storage of the features (a rounding step at the largest values).

    The backbone's float32 output differs in the last bits with the batch and the
    number of threads; the float16 features it is stored as can then round one step apart.
    """
    actual, desired = np.asarray(actual), np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=2e-3, atol=2e-3 * np.abs(desired).max())
