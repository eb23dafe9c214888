"""Step 4 as an estimator: image descriptors pooled from features with the anomaly maps.

:class:`AnomalyWeightedPooling` turns the localizer output (features with the
anomaly map as last channel, see :mod:`skanomclust.contract`) into one
descriptor per image, made of two views (:mod:`skanomclust.nn.pooling`): the
paper's anomaly view and this package's appearance view, followed by the
normality gate (:mod:`skanomclust.gate`). :class:`DescriptorAssembly` holds
what both descriptor steps share (the contrastive step replaces the anomaly
view by its learned embedding and keeps the rest).
"""

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

from ._random import Seeds
from ._torch import TorchModulesMixin
from .contract import image_scores, split_localizer_output, validate_feature_maps
from .gate import NormalityGate
from .nn.gate import apply_gate
from .nn.ops import gaussian_blur
from .nn.pooling import BLUR_KERNEL, anomaly_weighted_pooling, spread_weighted_pooling

__all__ = ["AnomalyWeightedPooling", "DescriptorAssembly"]

# Keeps channels that do not vary over the training images from dividing by zero.
_STD_FLOOR = 1e-6


class DescriptorAssembly:
    """What the descriptor steps share: the appearance view, its scaling, the gate.

    Subclasses have the parameters ``appearance_weight``, ``appearance_spread``,
    ``gate``, ``gate_width``, ``blur_sigma`` and ``random_state``, compute the
    views of a batch with :meth:`_appearance_view`, fit with :meth:`_fit_assembly`
    and build descriptors with :meth:`_assemble`.
    """

    _assembly_constraints: dict = {
        "appearance_weight": [Interval(Real, 0, None, closed="left")],
        "appearance_spread": [Interval(Real, 0, None, closed="neither"), tuple, list],
        "gate": [StrOptions({"auto", "gmm", "otsu"}), Real, None],
        "gate_width": [Interval(Real, 0, None, closed="left")],
    }

    def _appearance_spreads(self) -> tuple:
        """``appearance_spread`` as a tuple of positive temperatures (one per scale)."""
        spreads = self.appearance_spread
        spreads = tuple(spreads) if isinstance(spreads, (tuple, list)) else (spreads,)
        if not spreads or not all(
            isinstance(s, Real) and not isinstance(s, bool) and s > 0 for s in spreads
        ):
            raise ValueError(
                "appearance_spread must be a positive number or a non-empty sequence of "
                f"positive numbers, got {self.appearance_spread!r}"
            )
        return spreads

    def _appearance_view(
        self, features: torch.Tensor, maps: torch.Tensor, blur_sigma=None
    ) -> torch.Tensor:
        """The appearance view at every scale of ``appearance_spread``, side by side."""
        blur_sigma = self.blur_sigma if blur_sigma is None else blur_sigma
        if blur_sigma > 0:  # blurred once for every scale
            features = gaussian_blur(features, BLUR_KERNEL, blur_sigma)
        return torch.cat(
            [
                spread_weighted_pooling(features, maps, spread=spread, blur_sigma=0)
                for spread in self._appearance_spreads()
            ],
            dim=1,
        )

    def _fit_assembly(self, appearance, scores, seeds: Seeds) -> None:
        """Fit the appearance view's per-channel scaling and the gate on training images."""
        if self.appearance_weight > 0:
            self.appearance_mean_ = appearance.mean(axis=0)
            self.appearance_scale_ = np.maximum(appearance.std(axis=0), _STD_FLOOR)
        else:
            self.appearance_mean_ = self.appearance_scale_ = None
        self.gate_ = NormalityGate(self.gate, self.gate_width, seeds.legacy("gate")).fit(scores)
        # Flat copies of the gate's decision (the names of earlier versions).
        self.gate_threshold_ = self.gate_.threshold_
        self.gate_bimodality_ = self.gate_.bimodality_

    def _assemble(self, local: torch.Tensor, appearance, scores) -> np.ndarray:
        """Descriptors from the local (anomaly or learned) view, the appearance view, the scores.

        With the appearance view, both views are standardised to unit length
        (the appearance view first per channel with the training statistics,
        then each of its scales on its own), the appearance view weighted by
        ``appearance_weight``, and concatenated.
        The gate then scales the unit-length result per image. With neither, the
        local view is returned as it is (the paper's descriptor).
        """
        out = local
        if self.appearance_mean_ is not None:
            standard = (appearance - torch.as_tensor(self.appearance_mean_)) / torch.as_tensor(
                self.appearance_scale_
            )
            # One unit-length block per scale of the appearance view.
            scales = standard.chunk(len(self._appearance_spreads()), dim=1)
            out = torch.cat(
                [torch.nn.functional.normalize(local, dim=1)]
                + [
                    self.appearance_weight * torch.nn.functional.normalize(scale, dim=1)
                    for scale in scales
                ],
                dim=1,
            )
        if self.gate_.active_:
            out = apply_gate(out, torch.from_numpy(self.gate_.weights(scores)))
        return out.numpy().astype(np.float32, copy=False)

    def _n_descriptor_channels(self, local_channels: int, feature_channels: int) -> int:
        if self.appearance_weight == 0:
            return local_channels
        return local_channels + feature_channels * len(self._appearance_spreads())


class AnomalyWeightedPooling(
    DescriptorAssembly,
    TorchModulesMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    """Image descriptors: anomaly-weighted features (paper Eq. 2), appearance, gate.

    Takes the output of :class:`~skanomclust.BlindAnomalyLocalizer` and
    returns one descriptor per image. Followed by Ward clustering this is the
    paper's "without contrastive learning" variant when
    ``appearance_weight=0`` and ``gate=None``; by default it adds two things
    (see :mod:`skanomclust.nn.pooling` and :mod:`skanomclust.gate`):

    - the **appearance view**: features pooled with a temperature that follows
      each anomaly map's spread, standardised per channel over the training
      images; it keeps the defect's signal when a defect fills the image or
      every image is defective, where the anomaly view alone fails;
    - the **normality gate**, applied only when the training images' scores
      look bimodal (a set with a group of normal images).

    Parameters
    ----------
    tau : float, default=0.002
        Softmax temperature of the anomaly view (the paper's value).
    appearance_weight : float, default=1.0
        Weight of the appearance view relative to the anomaly view (both of
        unit length); 0 leaves it out.
    appearance_spread : float or sequence of float, default=1.0
        Temperature of the appearance view in standard deviations of each map.
        Several values pool at several scales (e.g. ``(0.7, 1.5)``: a focused
        and a broad view), each standardised to unit length on its own and
        weighted by ``appearance_weight``: steadier over seeds on the benchmark
        suite (see the user guide, "When it works and when it does not").
    gate : {"auto", "gmm", "otsu"}, float or None, default="auto"
        The normality gate's rule (see :mod:`skanomclust.gate`).
    gate_width : float, default=0.1
        Width of the logistic gate of ``"otsu"`` or a numeric ``gate``, in
        standard deviations of the training scores.
    blur_sigma : float, default=0.0
        Sigma of the Gaussian blur (kernel 7) applied to the features first;
        0 (the default since 0.2.1) disables it. The paper blurs with sigma 2
        (``preset="paper"`` does); without the blur, the pooled features of a
        small anomalous region are not mixed with its surroundings, which
        scored higher on every set of the benchmark suite.
    subtract_mean : bool, default=True
        Subtract each feature map's spatial mean in the anomaly view.
    batch_size : int, default=64
        Images per torch call.
    device : str, default="cpu"
        Torch device of the pooling.
    random_state : int, RandomState instance or None, default=None
        Seeds the gate's mixture model.

    Attributes
    ----------
    gate_ : NormalityGate
        The fitted gate (``gate_.active_``: whether it is applied; ``gate_.summary()``).
    gate_threshold_ : float or None
        Image score at which the gate's weight is one half (None without gate).
    gate_bimodality_ : float
        Bimodality coefficient of the training images' scores (NaN for fewer
        than 4 images or equal scores), which ``gate="auto"`` compares with 5/9.
    appearance_mean_, appearance_scale_ : ndarray of shape (S * C,) or None
        Per-channel statistics of the training images' appearance view (S
        scales of ``appearance_spread``, side by side).
    device_ : torch.device
        Where the pooling runs.
    n_features_in_ : int
        Channels seen in ``fit`` (features + 1 anomaly map).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame of 2-D ``(n, C + 1)`` data.
    n_features_out_ : int
        Descriptor length (``C``, or ``(1 + S) C`` with the appearance view at
        S scales).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import AnomalyWeightedPooling
    >>> X = np.random.default_rng(0).random((3, 5, 8, 8), dtype=np.float32)
    >>> AnomalyWeightedPooling().fit_transform(X).shape
    (3, 8)
    >>> AnomalyWeightedPooling(appearance_weight=0, gate=None).fit_transform(X).shape
    (3, 4)
    """

    _parameter_constraints: dict = {
        "tau": [Interval(Real, 0, None, closed="neither")],
        **DescriptorAssembly._assembly_constraints,
        "blur_sigma": [Interval(Real, 0, None, closed="left")],
        "subtract_mean": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        tau=0.002,
        *,
        appearance_weight=1.0,
        appearance_spread=1.0,
        gate="auto",
        gate_width=0.1,
        blur_sigma=0.0,
        subtract_mean=True,
        batch_size=64,
        device="cpu",
        random_state=None,
    ):
        self.tau = tau
        self.appearance_weight = appearance_weight
        self.appearance_spread = appearance_spread
        self.gate = gate
        self.gate_width = gate_width
        self.blur_sigma = blur_sigma
        self.subtract_mean = subtract_mean
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the appearance view's scaling and the normality gate.

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            The localizer output.
        y : None
            Ignored.

        Returns
        -------
        self : AnomalyWeightedPooling
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, then return the training images' descriptors (computing the views once).

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            The localizer output.
        y : None
            Ignored.

        Returns
        -------
        descriptors : ndarray of shape (n, n_features_out_), float32
        """
        local, appearance, scores = self._fit(X)
        return self._assemble(local, appearance, scores)

    def _fit(self, X):
        data, _ = validate_feature_maps(self, X, reset=True, min_channels=2)
        self._appearance_spreads()  # checked before any work
        self._resolve_device()
        local, appearance, scores = self._views(data)
        self._fit_assembly(appearance.numpy(), scores, Seeds(self.random_state))
        self.n_features_out_ = self._n_descriptor_channels(data.shape[1] - 1, data.shape[1] - 1)
        return local, appearance, scores

    def _views(self, data):
        """Anomaly and appearance views (CPU tensors) and scores of validated data."""
        local, appearance, scores = [], [], []
        with torch.inference_mode():
            for start in range(0, len(data), self.batch_size):
                chunk = torch.from_numpy(data[start : start + self.batch_size])
                chunk = chunk.to(self.device_).float()
                features, maps = split_localizer_output(chunk)
                # Both views pool the same blurred features: blurred once here.
                if self.blur_sigma > 0:
                    features = gaussian_blur(features, BLUR_KERNEL, self.blur_sigma)
                local.append(
                    anomaly_weighted_pooling(
                        features,
                        maps,
                        tau=self.tau,
                        blur_sigma=0,
                        subtract_mean=self.subtract_mean,
                    ).cpu()
                )
                if self.appearance_weight > 0:
                    appearance.append(self._appearance_view(features, maps, blur_sigma=0).cpu())
                scores.append(image_scores(maps).cpu())
        appearance = torch.cat(appearance) if appearance else torch.empty(len(data), 0)
        return torch.cat(local), appearance, torch.cat(scores).numpy()

    def transform(self, X):
        """Pool every image into a descriptor.

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            The localizer output.

        Returns
        -------
        descriptors : ndarray of shape (n, n_features_out_), float32
        """
        check_is_fitted(self, "n_features_out_")
        data, _ = validate_feature_maps(self, X, reset=False, min_channels=2)
        return self._assemble(*self._views(data))

    @property
    def _n_features_out(self):
        # used by get_feature_names_out (ClassNamePrefixFeaturesOutMixin)
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
