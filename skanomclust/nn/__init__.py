"""Pure torch building blocks of the method (no scikit-learn in this subpackage)."""

from .fca import (
    fca_reference,
    feature_correspondence_analysis,
    gaussian_blur,
    position_baseline,
    postprocess_anomaly_maps,
    principal_channels,
    project_channels,
)
from .vae import (
    PixelVAE,
    minmax_scale,
    minmax_scale_stats,
    train_pixel_vae,
    vae_loss,
    vae_residuals,
)

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
