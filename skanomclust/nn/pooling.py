"""Step 4: anomaly-weighted pooling of feature maps into image descriptors (paper Eq. 2)."""

from __future__ import annotations

import math

import torch

from .contrastive import otsu_threshold
from .fca import gaussian_blur

#: Sarle's bimodality coefficient of a uniform distribution: larger values suggest
#: two modes (or one mode with a long tail), smaller ones a single mode.
BIMODALITY_THRESHOLD = 5 / 9

__all__ = [
    "BIMODALITY_THRESHOLD",
    "anomaly_weighted_pooling",
    "fit_normality_gate",
    "image_scores",
    "normality_gate",
    "score_bimodality",
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


def score_bimodality(scores) -> float:
    """Sarle's bimodality coefficient of image scores (NaN when it is undefined).

    ``(g1**2 + 1) / (g2 + 3 (n - 1)**2 / ((n - 2) (n - 3)))`` with ``g1`` and
    ``g2`` the bias-corrected sample skewness and excess kurtosis (SAS's
    definition). It is 5/9 for a uniform distribution (and for large samples:
    1/3 for a normal one, 1 for two point masses); values above 5/9
    (:data:`BIMODALITY_THRESHOLD`) point to two groups, or to a large group
    with a long tail, the shape of scores from a set of mostly normal images.

    Parameters
    ----------
    scores : Tensor or array-like of shape (n,)

    Returns
    -------
    coefficient : float
        NaN with fewer than 4 scores or constant scores.
    """
    values = torch.as_tensor(scores).double().flatten()
    n = values.numel()
    if n < 4 or values.min() == values.max():
        return math.nan
    centred = values - values.mean()
    m2, m3, m4 = (float(centred.pow(p).mean()) for p in (2, 3, 4))
    skewness = m3 / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    kurtosis = ((n + 1) * (m4 / m2**2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (skewness**2 + 1) / (kurtosis + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def fit_normality_gate(scores, gate, width):
    """Threshold and softness of the normality gate from training image scores.

    Parameters
    ----------
    scores : Tensor of shape (n,)
        Image anomaly scores of the training images.
    gate : "auto", "otsu", float or None
        Otsu's split of ``scores``; a given threshold; None (no gate); or
        ``"auto"``: Otsu's split when the scores look bimodal
        (:func:`score_bimodality` above :data:`BIMODALITY_THRESHOLD`), else no
        gate (a set without a group of normal images, e.g. defective images
        only, has nothing for the gate to set apart).
    width : float
        Softness in standard deviations of ``scores``.

    Returns
    -------
    threshold, scale : float or None
        Both None when there is no gate.
    """
    if gate is None:
        return None, None
    if gate == "auto" and not score_bimodality(scores) > BIMODALITY_THRESHOLD:
        return None, None
    threshold = otsu_threshold(scores) if isinstance(gate, str) else float(gate)
    spread = float(scores.double().std()) if scores.numel() > 1 else 0.0
    return threshold, float(width) * spread
