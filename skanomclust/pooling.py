"""Step 4 as an estimator: anomaly-weighted pooling of feature maps (paper Eq. 2)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._validation import validate_feature_maps
from .nn.pooling import anomaly_weighted_pooling

__all__ = ["AnomalyWeightedPooling"]


class AnomalyWeightedPooling(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Image descriptors: features pooled with weights softmax(anomaly map / tau).

    Takes the output of :class:`~skanomclust.BlindAnomalyLocalizer`
    (features with the anomaly map as last channel) and returns one
    descriptor per image. Followed by Ward clustering this is the paper's
    "without contrastive learning" variant. Nothing is learned.

    Parameters
    ----------
    tau : float, default=0.002
        Softmax temperature (the paper's value).
    blur_sigma : float, default=2.0
        Sigma of the Gaussian blur (kernel 7) applied to the features first;
        0 disables it.
    subtract_mean : bool, default=True
        Subtract each feature map's spatial mean before pooling.
    batch_size : int, default=64
        Images per torch call.

    Attributes
    ----------
    n_features_in_ : int
        Channels seen in ``fit`` (features + 1 anomaly map).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame of 2-D ``(n, C + 1)`` data.
    n_features_out_ : int
        Descriptor length (``n_features_in_ - 1``).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import AnomalyWeightedPooling
    >>> X = np.random.default_rng(0).random((3, 5, 8, 8), dtype=np.float32)
    >>> AnomalyWeightedPooling().fit_transform(X).shape
    (3, 4)
    """

    _parameter_constraints: dict = {
        "tau": [Interval(Real, 0, None, closed="neither")],
        "blur_sigma": [Interval(Real, 0, None, closed="left")],
        "subtract_mean": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, tau=0.002, *, blur_sigma=2.0, subtract_mean=True, batch_size=64):
        self.tau = tau
        self.blur_sigma = blur_sigma
        self.subtract_mean = subtract_mean
        self.batch_size = batch_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the input; nothing is learned.

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            Features with the anomaly map as last channel.
        y : None
            Ignored.

        Returns
        -------
        self : AnomalyWeightedPooling
        """
        validate_feature_maps(self, X, reset=True, min_channels=2)
        self.n_features_out_ = self.n_features_in_ - 1
        return self

    def transform(self, X):
        """Pool every image into a descriptor.

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            Features with the anomaly map as last channel.

        Returns
        -------
        descriptors : ndarray of shape (n, C), float32
        """
        check_is_fitted(self, "n_features_out_")
        maps, _ = validate_feature_maps(self, X, reset=False, min_channels=2)
        out = np.empty((maps.shape[0], maps.shape[1] - 1), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(maps), self.batch_size):
                chunk = torch.from_numpy(maps[start : start + self.batch_size])
                out[start : start + len(chunk)] = anomaly_weighted_pooling(
                    chunk[:, :-1],
                    chunk[:, -1],
                    tau=self.tau,
                    blur_sigma=self.blur_sigma,
                    subtract_mean=self.subtract_mean,
                ).numpy()
        return out

    @property
    def _n_features_out(self):
        # used by get_feature_names_out (ClassNamePrefixFeaturesOutMixin)
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
