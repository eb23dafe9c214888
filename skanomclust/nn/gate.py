"""The normality gate's building blocks (this package's addition to the method).

The gate scales each image's unit-length descriptor by a weight in [0, 1]
that grows with the image's anomaly score, so that images without anomaly
collapse to the origin and form one tight group whatever their texture, while
anomalous images keep a direction that describes their anomaly. Whether to
gate and how the weights follow the scores is decided from the training
images' scores by :class:`skanomclust.gate.NormalityGate`; this module holds
the pure torch pieces.
"""

from __future__ import annotations

import math

import torch

#: Sarle's bimodality coefficient of a uniform distribution: larger values suggest
#: two modes (or one mode with a long tail), smaller ones a single mode.
BIMODALITY_THRESHOLD = 5 / 9

__all__ = ["BIMODALITY_THRESHOLD", "apply_gate", "otsu_threshold", "score_bimodality"]


def apply_gate(descriptors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L2-normalise each descriptor and multiply it by its image's gate weight.

    Parameters
    ----------
    descriptors : Tensor of shape (n, d)
    weights : Tensor of shape (n,)
        Gate weights in [0, 1] (0: normal, collapsed to the origin).

    Returns
    -------
    gated : Tensor of shape (n, d)
    """
    weights = weights.to(device=descriptors.device, dtype=descriptors.dtype)
    return torch.nn.functional.normalize(descriptors, dim=1) * weights[:, None]


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


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of a 1-D sample.

    The split is Otsu's on a ``bins``-bin histogram; the returned value is the
    midpoint between the largest value of the low group and the smallest of
    the high group. A constant sample returns its value.
    """
    values = values.flatten().double()
    low, high = values.min(), values.max()
    if high <= low:
        return float(high)
    hist = torch.histc(values, bins=bins, min=float(low), max=float(high))
    centers = low + (torch.arange(bins, dtype=torch.float64) + 0.5) * (high - low) / bins
    weight_low = torch.cumsum(hist, 0)
    weight_high = hist.sum() - weight_low
    mean_low = torch.cumsum(hist * centers, 0) / weight_low.clamp_min(1e-12)
    mean_high = ((hist * centers).sum() - torch.cumsum(hist * centers, 0)) / weight_high.clamp_min(
        1e-12
    )
    between = weight_low * weight_high * (mean_low - mean_high).square()
    cut = int(torch.argmax(between[:-1]))
    edge = low + (cut + 1) * (high - low) / bins
    # Same split, but the threshold sits mid-way in the gap between the two
    # groups rather than at a histogram bin edge (this matters when the value
    # is used as a soft gate's centre, and for well separated groups).
    below, above = values[values <= edge], values[values > edge]
    return float((below.max() + above.min()) / 2)
