"""The normality gate: how much of each image's descriptor to keep, from its anomaly score.

One component, used by both descriptor steps
(:class:`~skanomclust.AnomalyWeightedPooling` and
:class:`~skanomclust.ContrastiveRefiner`). Fitted on the training images'
scores (:func:`skanomclust.contract.image_scores`), it gives every image a
weight in [0, 1]; the descriptor step multiplies the unit-length descriptor by
it (:func:`skanomclust.nn.gate.apply_gate`). Images the gate deems normal
collapse to the origin and form one group, instead of being spread over
several clusters by their texture; this is what lets Ward clustering find the
"no anomaly" group of a set that holds many normal images (MTD).

Rules (the ``gate`` parameter of the descriptor steps):

``"auto"`` (default)
    Decide from the data: gate only when the scores look bimodal (Sarle's
    bimodality coefficient above 5/9, the value of a uniform distribution),
    i.e. when the set seems to hold a group of low-scoring, normal images to
    set apart; then weigh as ``"gmm"``. A set of defective images only has no
    such group, and is not gated.
``"gmm"``
    A two-component Gaussian mixture of the scores; an image's weight is the
    posterior probability of the high-score component. The mixture sets both
    where the gate opens and how gradually, so images between the groups keep
    part of their descriptor.
``"otsu"``
    A logistic step at Otsu's threshold of the scores, ``gate_width`` standard
    deviations wide (the gate of earlier versions).
a number
    A logistic step at that score, ``gate_width`` standard deviations wide.
``None``
    No gate: the weights are all 1 and descriptors are not normalised.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from .nn.gate import BIMODALITY_THRESHOLD, otsu_threshold, score_bimodality

__all__ = ["NormalityGate"]


class NormalityGate:
    """Fit the gate on training scores; give every image its weight.

    Parameters
    ----------
    rule : {"auto", "gmm", "otsu"}, float or None
        See the module docstring.
    width : float, default=0.1
        Width of the logistic step of ``"otsu"`` and numeric rules, in standard
        deviations of the training scores (0: a hard step).
    random_state : int or None
        Seed of the mixture's initialisation.

    Attributes
    ----------
    active_ : bool
        Whether the gate is applied (False for ``None``, and for ``"auto"`` on
        scores that do not look bimodal).
    kind_ : {"gmm", "logistic"} or None
        How the weights follow the scores.
    threshold_ : float or None
        Score at which the weight is one half.
    scale_ : float or None
        Width of the logistic step in score units (None for the mixture).
    bimodality_ : float
        Sarle's bimodality coefficient of the training scores (NaN for fewer
        than 4 scores or constant scores).
    mixture_ : sklearn.mixture.GaussianMixture or None
        The fitted mixture of ``"gmm"``.
    """

    def __init__(self, rule="auto", width=0.1, random_state=None):
        self.rule = rule
        self.width = width
        self.random_state = random_state

    def fit(self, scores) -> NormalityGate:
        """Decide on the gate and fit it to the training images' scores (shape (n,))."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        self.bimodality_ = score_bimodality(scores)
        self.active_, self.kind_ = False, None
        self.threshold_ = self.scale_ = self.mixture_ = None
        rule = self.rule
        if rule is None or (rule == "auto" and not self.bimodality_ > BIMODALITY_THRESHOLD):
            return self
        if rule in ("auto", "gmm"):
            if np.ptp(scores) == 0:
                return self  # nothing to separate
            self.mixture_ = GaussianMixture(2, n_init=3, random_state=self.random_state).fit(
                scores[:, None]
            )
            self.kind_ = "gmm"
            self.threshold_ = self._mixture_midpoint(scores)
        else:
            self.kind_ = "logistic"
            self.threshold_ = (
                otsu_threshold(torch.from_numpy(scores)) if rule == "otsu" else float(rule)
            )
            spread = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
            self.scale_ = float(self.width) * spread
        self.active_ = True
        return self

    def _high_component(self) -> int:
        return int(np.argmax(self.mixture_.means_[:, 0]))

    def _mixture_midpoint(self, scores) -> float:
        """Score where the posterior of the high component crosses one half (on a grid)."""
        grid = np.linspace(scores.min(), scores.max(), 2001)
        posterior = self.mixture_.predict_proba(grid[:, None])[:, self._high_component()]
        above = np.flatnonzero(posterior >= 0.5)
        return float(grid[above[0]]) if above.size else float(scores.max())

    def weights(self, scores) -> np.ndarray:
        """Weight in [0, 1] of every image (all ones when the gate is not active)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        if not self.active_:
            return np.ones(scores.shape, dtype=np.float32)
        if self.kind_ == "gmm":
            weights = self.mixture_.predict_proba(scores[:, None])[:, self._high_component()]
        elif self.scale_ > 0:
            weights = 1.0 / (
                1.0 + np.exp(-np.clip((scores - self.threshold_) / self.scale_, -60, 60))
            )
        else:
            weights = (scores > self.threshold_).astype(np.float64)
        return weights.astype(np.float32)

    def summary(self) -> str:
        """One line on the gate's decision, for logs and reports."""
        shape = (
            f"bimodality of the image scores {self.bimodality_:.3f}"
            if math.isfinite(self.bimodality_)
            else "bimodality undefined (fewer than 4 images or equal scores)"
        )
        if not self.active_:
            reason = {None: "turned off", "auto": f"not needed ({shape} <= 5/9)"}
            return "normality gate " + reason.get(
                self.rule if not isinstance(self.rule, Real) else "x", f"off ({shape})"
            )
        return (
            f"normality gate on: images scoring below about {self.threshold_:.4g} count as "
            f"normal and form one group ({shape} > 5/9)"
            if self.rule == "auto"
            else f"normality gate on at score {self.threshold_:.4g} ({shape})"
        )
