"""Step 4: pooling feature maps into image descriptors, weighted by the anomaly maps.

Two views of each image, both softmax-weighted averages of its (blurred)
feature vectors:

- the **anomaly view** (the paper's Eq. 2, :func:`anomaly_weighted_pooling`):
  weights ``softmax(map / tau)`` with a small fixed temperature, which keep a
  handful of the most anomalous pixels, minus the image's mean feature: how
  the defect differs from the image's own texture. It is what separates
  defect types when defects are small and most of each image is normal;
- the **appearance view** (this package's addition,
  :func:`spread_weighted_pooling`): weights ``softmax(map / (spread * std(map)))``,
  a temperature that follows each map's own spread, and no mean subtraction.
  A map with a distinct anomalous region puts its weight on that region; a
  map without one (a defect that fills the image, or no defect) spreads it
  over the whole image, so the view describes what the image looks like where
  it is anomalous, or as a whole. It carries the signal that the anomaly view
  loses when a defect covers most of the image or every image is defective.
"""

from __future__ import annotations

import torch

from .ops import gaussian_blur

__all__ = ["BLUR_KERNEL", "anomaly_weighted_pooling", "spread_weighted_pooling"]

# Side of the Gaussian blur applied to the features before pooling (both views).
BLUR_KERNEL = 7


def _check(features: torch.Tensor, anomaly_maps: torch.Tensor) -> None:
    if features.ndim != 4 or anomaly_maps.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"features (n, C, h, w) and anomaly_maps (n, h, w) do not match: "
            f"{tuple(features.shape)} and {tuple(anomaly_maps.shape)}"
        )


def _weighted_mean(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    weights = torch.softmax(logits.flatten(1).to(features.dtype), dim=1)
    return torch.einsum("ncp,np->nc", features.flatten(2), weights)


def anomaly_weighted_pooling(
    features: torch.Tensor,
    anomaly_maps: torch.Tensor,
    *,
    tau: float = 0.002,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = 2.0,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """Pool each feature map with weights softmax(anomaly map / tau) (paper Eq. 2).

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
    _check(features, anomaly_maps)
    if blur_sigma > 0:
        features = gaussian_blur(features, blur_kernel, blur_sigma)
    if subtract_mean:
        features = features - features.mean(dim=(-2, -1), keepdim=True)
    return _weighted_mean(features, anomaly_maps / tau)


def spread_weighted_pooling(
    features: torch.Tensor,
    anomaly_maps: torch.Tensor,
    *,
    spread: float = 1.0,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = 2.0,
) -> torch.Tensor:
    """Pool each feature map with a temperature that follows its anomaly map's spread.

    The weights are ``softmax(map / (spread * std(map)))``: in units of the
    map's own standard deviation, so the pooled region adapts to each image.
    A map whose anomalous region stands several standard deviations above the
    rest concentrates the weight on it; a flat map (no distinct region)
    spreads it over the whole image, approaching mean pooling. No mean is
    subtracted: the result describes the appearance of the weighted region.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
    anomaly_maps : Tensor of shape (n, h, w)
    spread : float, default=1.0
        Temperature in standard deviations of each map (smaller: more focused).
    blur_kernel, blur_sigma : int, float, default=7, 2.0
        Gaussian blur of the features before pooling (``blur_sigma=0`` skips it).

    Returns
    -------
    descriptors : Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> features = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> flat = torch.zeros(1, 2, 2)  # no anomalous region: the plain mean
    >>> spread_weighted_pooling(features, flat, blur_sigma=0)
    tensor([[1.5000]])
    """
    _check(features, anomaly_maps)
    if blur_sigma > 0:
        features = gaussian_blur(features, blur_kernel, blur_sigma)
    flat = anomaly_maps.flatten(1).to(features.dtype)
    temperature = (spread * flat.std(dim=1, correction=0)).clamp_min(1e-12)
    return _weighted_mean(features, flat / temperature[:, None])
