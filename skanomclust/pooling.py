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
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._validation import validate_feature_maps
from .nn.pooling import (
    anomaly_weighted_pooling,
    fit_normality_gate,
    image_scores,
    normality_gate,
    score_bimodality,
)

__all__ = ["AnomalyWeightedPooling"]


class AnomalyWeightedPooling(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Image descriptors: features pooled with weights softmax(anomaly map / tau).

    Takes the output of :class:`~skanomclust.BlindAnomalyLocalizer`
    (features with the anomaly map as last channel) and returns one
    descriptor per image. Followed by Ward clustering this is the paper's
    "without contrastive learning" variant (with ``gate=None``).

    By default the descriptors are also *gated* (this package's addition,
    see :func:`skanomclust.nn.pooling.normality_gate`): each is scaled to unit
    length times ``sigmoid((score - t) / w)``, where ``score`` is the image's
    maximal anomaly, ``t`` an Otsu threshold of the training images' scores
    and ``w`` ``gate_width`` times their standard deviation. Normal images
    then collapse near the origin into one group instead of being spread over
    several clusters by their texture variation. On MTD this is what lets Ward
    find the "no anomaly" group (measured gains: ``benchmarks/results/mtd.md``).
    With ``gate="auto"`` (the default) the gate is used only when the training
    scores look bimodal (Sarle's coefficient above 5/9), i.e. when the set
    seems to hold a group of normal images to set apart.

    Parameters
    ----------
    tau : float, default=0.002
        Softmax temperature (the paper's value).
    gate : {"auto", "otsu"}, float or None, default="auto"
        Threshold of the normality gate on image scores: Otsu's split of the
        training images' maximal anomaly, a given score, or None for the
        paper's plain descriptors. ``"auto"``: Otsu's split when the training
        scores' bimodality coefficient (``gate_bimodality_``) exceeds 5/9, no
        gate otherwise (see :func:`skanomclust.nn.pooling.fit_normality_gate`).
    gate_width : float, default=0.1
        Softness of the gate in standard deviations of the training scores
        (0: a hard step).
    blur_sigma : float, default=2.0
        Sigma of the Gaussian blur (kernel 7) applied to the features first;
        0 disables it.
    subtract_mean : bool, default=True
        Subtract each feature map's spatial mean before pooling.
    batch_size : int, default=64
        Images per torch call.

    Attributes
    ----------
    gate_threshold_ : float or None
        Image score at which the gate is one half (None without gate).
    gate_scale_ : float or None
        Gate softness in score units (``gate_width`` times the standard
        deviation of the training scores).
    gate_bimodality_ : float
        Bimodality coefficient of the training images' scores (NaN for fewer
        than 4 images or equal scores), which ``gate="auto"`` compares with 5/9.
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
        "gate": [StrOptions({"auto", "otsu"}), Real, None],
        "gate_width": [Interval(Real, 0, None, closed="left")],
        "blur_sigma": [Interval(Real, 0, None, closed="left")],
        "subtract_mean": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        tau=0.002,
        *,
        gate="auto",
        gate_width=0.1,
        blur_sigma=2.0,
        subtract_mean=True,
        batch_size=64,
    ):
        self.tau = tau
        self.gate = gate
        self.gate_width = gate_width
        self.blur_sigma = blur_sigma
        self.subtract_mean = subtract_mean
        self.batch_size = batch_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the normality gate (threshold and width on image scores).

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
        maps, _ = validate_feature_maps(self, X, reset=True, min_channels=2)
        scores = image_scores(torch.from_numpy(maps[:, -1]).float())
        self.gate_threshold_, self.gate_scale_ = fit_normality_gate(
            scores, self.gate, self.gate_width
        )
        self.gate_bimodality_ = score_bimodality(scores)
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
                chunk = torch.from_numpy(maps[start : start + self.batch_size]).float()
                descriptors = anomaly_weighted_pooling(
                    chunk[:, :-1],
                    chunk[:, -1],
                    tau=self.tau,
                    blur_sigma=self.blur_sigma,
                    subtract_mean=self.subtract_mean,
                )
                if self.gate_threshold_ is not None:
                    descriptors = normality_gate(
                        descriptors,
                        image_scores(chunk[:, -1]),
                        self.gate_threshold_,
                        self.gate_scale_,
                    )
                out[start : start + len(chunk)] = descriptors.numpy()
        return out

    @property
    def _n_features_out(self):
        # used by get_feature_names_out (ClassNamePrefixFeaturesOutMixin)
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
