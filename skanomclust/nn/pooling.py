"""Step 4: anomaly-weighted pooling of feature maps into image descriptors (paper Eq. 2)."""

from __future__ import annotations

import torch

from .contrastive import otsu_threshold
from .fca import gaussian_blur

__all__ = [
    "anomaly_weighted_pooling",
    "fit_normality_gate",
    "image_scores",
    "normality_gate",
]


def anomaly_weighted_pooling(
    features: torch.Tensor,
    anomaly_maps: torch.Tensor,
    *,
    tau: float = 0.002,
    blur_kernel: int = 7,
    blur_sigma: float = 2.0,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """Pool each feature map with weights softmax(anomaly map / tau).

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Feature maps.
    anomaly_maps : Tensor of shape (n, h, w)
        Anomaly maps (higher = more anomalous).
    tau : float, default=0.002
        Softmax temperature: small values concentrate the weight on the most
        anomalous pixels, large values approach plain mean pooling.
    blur_kernel, blur_sigma : int, float, default=7, 2.0
        Gaussian blur of the features before pooling (``blur_sigma=0`` skips it).
    subtract_mean : bool, default=True
        Subtract each map's spatial mean first, so the descriptor describes
        how the anomalous region differs from the image's own texture.

    Returns
    -------
    descriptors : Tensor of shape (n, C)
    """
    if features.ndim != 4 or anomaly_maps.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"features (n, C, h, w) and anomaly_maps (n, h, w) do not match: "
            f"{tuple(features.shape)} and {tuple(anomaly_maps.shape)}"
        )
    if blur_sigma > 0:
        features = gaussian_blur(features, blur_kernel, blur_sigma)
    if subtract_mean:
        features = features - features.mean(dim=(-2, -1), keepdim=True)
    weights = torch.softmax(anomaly_maps.flatten(1).to(features.dtype) / tau, dim=1)
    return torch.einsum("ncp,np->nc", features.flatten(2), weights)


def image_scores(anomaly_maps: torch.Tensor) -> torch.Tensor:
    """Image-level anomaly score: the maximum of each (n, h, w) map, shape (n,)."""
    return anomaly_maps.flatten(1).amax(dim=1)


def normality_gate(
    descriptors: torch.Tensor, scores: torch.Tensor, threshold: float, width: float
) -> torch.Tensor:
    """Scale unit descriptors by how anomalous their image is (this package's addition).

    Each descriptor is L2-normalised and multiplied by
    ``sigmoid((score - threshold) / width)`` (a step function when
    ``width == 0``). Images scored as normal shrink to the origin and form one
    tight group, whatever their texture; anomalous images keep a unit-length
    direction that describes the anomaly. Ward clustering then separates "no
    anomaly" from the anomaly types instead of splitting the (usually large)
    normal class by texture variation.

    Parameters
    ----------
    descriptors : Tensor of shape (n, d)
    scores : Tensor of shape (n,)
        Image anomaly scores (see :func:`image_scores`).
    threshold : float
        Score at which the gate is one half.
    width : float
        Softness of the gate, in score units (0: hard step).

    Returns
    -------
    gated : Tensor of shape (n, d)
    """
    scores = scores.to(descriptors.dtype)
    if width > 0:
        gate = torch.sigmoid((scores - threshold) / width)
    else:
        gate = (scores > threshold).to(descriptors.dtype)
    return torch.nn.functional.normalize(descriptors, dim=1) * gate[:, None]


def fit_normality_gate(scores, gate, width):
    """Threshold and softness of the normality gate from training image scores.

    Parameters
    ----------
    scores : Tensor of shape (n,)
        Image anomaly scores of the training images.
    gate : "otsu", float or None
        Otsu's split of ``scores``, a given threshold, or None (no gate).
    width : float
        Softness in standard deviations of ``scores``.

    Returns
    -------
    threshold, scale : float or None
        Both None when ``gate`` is None.
    """
    if gate is None:
        return None, None
    threshold = otsu_threshold(scores) if isinstance(gate, str) else float(gate)
    spread = float(scores.double().std()) if scores.numel() > 1 else 0.0
    return threshold, float(width) * spread
