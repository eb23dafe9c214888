"""Pure torch building blocks of the method (no scikit-learn in this subpackage).

One exception to "pure torch": FCA's CPU kernels (:mod:`~skanomclust.nn.fca_cpu`) are
compiled with numba, because FCA's rank counting and its many short sorts, as torch
operations, stream memory instead of computing; :mod:`~skanomclust.nn.fca` uses them
for CPU tensors.

One module per step, named as the estimator that drives it:

- :mod:`~skanomclust.nn.features`: pretrained backbones cut at intermediate layers (step 1),
  their batch norms folded into the convolutions before them, their weights from
  :mod:`~skanomclust.nn.weights` (offline packages, torchvision, a file, or a seeded random
  initialisation);
- :mod:`~skanomclust.nn.vae`: the per-pixel VAE and its residuals (step 2), trained by
  :mod:`~skanomclust.nn.vae_training` (on the CPU, one step at a time by
  :mod:`~skanomclust.nn.vae_step`, with the gradients written out, in float32 or with
  bfloat16 products);
- :mod:`~skanomclust.nn.fca`: Feature Correspondence Analysis (step 3), its CPU kernels in
  :mod:`~skanomclust.nn.fca_cpu` (their reference lookup, sixteen pixels at a time, in
  :mod:`~skanomclust.nn.fca_lookup`);
- :mod:`~skanomclust.nn.localization`: what the localizer does around the VAE and FCA
  (projection, post-processing, position baseline, the maps of a batch or of many);
- :mod:`~skanomclust.nn.pooling`: descriptor views (step 4);
- :mod:`~skanomclust.nn.gate`: the normality gate's pieces;
- :mod:`~skanomclust.nn.contrastive`: the contrastive head and its training (step 5);
- :mod:`~skanomclust.nn.ops`: generic tensor operations (blur, padding, initialisation).
"""

from .fca import fca_reference, feature_correspondence_analysis
from .localization import (
    position_baseline,
    postprocess_anomaly_maps,
    principal_channels,
    project_channels,
)
from .ops import gaussian_blur
from .vae import (
    PixelVAE,
    minmax_scale,
    minmax_scale_stats,
    vae_loss,
    vae_residuals,
)
from .vae_training import train_pixel_vae

__all__ = [
    "PixelVAE",
    "fca_reference",
    "feature_correspondence_analysis",
    "gaussian_blur",
    "minmax_scale",
    "minmax_scale_stats",
    "position_baseline",
    "postprocess_anomaly_maps",
    "principal_channels",
    "project_channels",
    "train_pixel_vae",
    "vae_loss",
    "vae_residuals",
]
