"""Step 5 as an estimator: contrastive refinement of features into image descriptors."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._random import Seeds
from ._torch import TorchModulesMixin
from ._utils import progress_bar
from .contract import image_scores, split_localizer_output, validate_feature_maps
from .nn.contrastive import image_neighbors, train_contrastive_head
from .nn.gate import otsu_threshold
from .nn.pooling import anomaly_weighted_pooling
from .nn.vae import minmax_scale, minmax_scale_stats
from .pooling import DescriptorAssembly

__all__ = ["ContrastiveRefiner", "anomaly_threshold"]


def anomaly_threshold(max_scores, descriptors, *, rule, n_clusters=None, random_state=None):
    """One anomaly threshold for all pixels of all images.

    Parameters
    ----------
    max_scores : ndarray of shape (n,)
        Maximum of each image's anomaly map.
    descriptors : ndarray of shape (n, C)
        Step-4 descriptors (used by ``rule="kmeans"``).
    rule : {"otsu", "kmeans"}
        ``"kmeans"``: the paper's heuristic (supplement S4): KMeans with
        ``n_clusters`` on the descriptors; the cluster with the lowest mean
        max-score is taken as normal and the threshold is the quantile of
        ``max_scores`` at that cluster's share of images. ``"otsu"``: needs no
        k: Otsu's split of ``max_scores`` into a low (normal) and a high
        (anomalous) group.
    n_clusters : int or None
        Required by ``rule="kmeans"``.
    random_state : int, RandomState instance or None

    Returns
    -------
    threshold : float
    """
    if rule == "otsu":
        return otsu_threshold(torch.as_tensor(max_scores))
    if n_clusters is None:
        raise ValueError(
            "threshold='kmeans' needs threshold_clusters (the paper's heuristic uses k)"
        )
    k = min(int(n_clusters), len(np.unique(descriptors, axis=0)))
    labels = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit_predict(descriptors)
    present = np.unique(labels)  # k-means may leave a cluster empty on duplicated rows
    means = [max_scores[labels == c].mean() for c in present]
    normal = present[int(np.argmin(means))]
    share = float(np.mean(labels == normal))
    return float(np.quantile(max_scores, share))


class ContrastiveRefiner(
    DescriptorAssembly,
    TorchModulesMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    """Contrastively trained per-pixel head, pooled into image descriptors (step 5).

    Takes the output of :class:`~skanomclust.BlindAnomalyLocalizer`. ``fit``
    labels pixels as anomalous or normal with one threshold on the maps,
    finds each image's nearest images by the paper's step-4 descriptors, and
    trains a small head (C -> 256 -> 32, L2-normalised) with a margin loss
    (METHOD.md step 5). ``transform`` embeds each image's min-max scaled
    features with the head and pools them with its anomaly map (Eq. 2); like
    :class:`~skanomclust.AnomalyWeightedPooling` it then adds the appearance
    view and applies the normality gate (both optional).

    Parameters
    ----------
    threshold : {"otsu", "kmeans"} or float, default="otsu"
        Pixel labelling rule, see :func:`anomaly_threshold`; a float is used
        as the threshold itself. ``"kmeans"`` is the paper's rule and needs
        ``threshold_clusters``; ``"otsu"`` needs no k.
    threshold_clusters : int or None, default=None
        k of the ``"kmeans"`` rule (the paper uses the number of anomaly types).
    appearance_weight : float, default=1.0
        Weight of the appearance view (see :class:`AnomalyWeightedPooling`);
        0 leaves it out (the paper's descriptor, with ``gate=None``).
    appearance_spread : float or sequence of float, default=1.0
        Temperature(s) of the appearance view (see :class:`AnomalyWeightedPooling`).
    gate : {"auto", "gmm", "otsu"}, float or None, default="auto"
        The normality gate's rule (see :mod:`skanomclust.gate`).
    gate_width : float, default=0.1
        Width of the logistic gate of ``"otsu"`` or a numeric ``gate``.
    tau : float, default=0.002
        Softmax temperature of the pooling (neighbours and the learned view).
    blur_sigma : float, default=2.0
        Blur of the features in the step-4 descriptors and the appearance view.
    hidden_channels : int, default=256
    out_channels : int, default=32
        Length of the learned view.
    n_neighbors : int, default=3
        Close images per image.
    n_epochs : int, default=10
        Passes over all images (each image is an anchor once per pass).
    images_per_step : int, default=1
        Anchors per optimisation step (1: the paper's schedule). More anchors
        give fewer, larger steps, far faster on a GPU.
    margin : float, default=0.5
    learning_rate : float, default=5e-4
    weight_decay : float, default=0.01
    batch_size : int, default=32
        Images per torch call in ``transform``.
    device : str, default="cpu"
    random_state : int, RandomState instance or None, default=None
    verbose : bool or int, default=False
    n_clusters : int or None
        Deprecated alias of ``threshold_clusters`` (it also switched the old
        default rule ``"auto"`` to ``"kmeans"``).

    Attributes
    ----------
    head_ : ContrastiveHead
        The trained head.
    threshold_ : float
        Threshold used to label pixels.
    threshold_rule_ : {"otsu", "kmeans", "given"}
        The rule that set it (``"given"``: ``threshold`` was a number).
    anomalous_share_ : float
        Share of training images with at least one pixel above it.
    gate_ : NormalityGate
        The fitted normality gate.
    gate_threshold_ : float or None
        Image score at which the gate's weight is one half (None without gate).
    gate_bimodality_ : float
        Bimodality coefficient of the training images' scores.
    appearance_mean_, appearance_scale_ : ndarray of shape (S * C,) or None
        Per-channel statistics of the training images' appearance view (S
        scales of ``appearance_spread``, side by side).
    loss_curve_ : list of float
        Mean loss per epoch.
    device_ : torch.device
        Where the head is trained and applied.
    n_features_in_ : int
        Channels seen in ``fit`` (features + 1 anomaly map).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame of 2-D ``(n, C + 1)`` data.
    n_features_out_ : int
        Descriptor length.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import ContrastiveRefiner
    >>> X = np.random.default_rng(0).random((6, 5, 8, 8), dtype=np.float32)
    >>> refiner = ContrastiveRefiner(n_epochs=1, out_channels=4, random_state=0)
    >>> refiner.fit_transform(X).shape
    (6, 8)
    """

    _parameter_constraints: dict = {
        "threshold": [StrOptions({"otsu", "kmeans", "auto"}, deprecated={"auto"}), Real],
        "threshold_clusters": [Interval(Integral, 1, None, closed="left"), None],
        **DescriptorAssembly._assembly_constraints,
        "tau": [Interval(Real, 0, None, closed="neither")],
        "blur_sigma": [Interval(Real, 0, None, closed="left")],
        "hidden_channels": [Interval(Integral, 1, None, closed="left")],
        "out_channels": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 0, None, closed="left")],
        "images_per_step": [Interval(Integral, 1, None, closed="left")],
        "margin": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_clusters": [
            Interval(Integral, 1, None, closed="left"),
            None,
            Hidden(StrOptions({"deprecated"})),
        ],
    }

    _torch_modules = ("head_",)

    def __init__(
        self,
        threshold="otsu",
        *,
        threshold_clusters=None,
        appearance_weight=1.0,
        appearance_spread=1.0,
        gate="auto",
        gate_width=0.1,
        tau=0.002,
        blur_sigma=2.0,
        hidden_channels=256,
        out_channels=32,
        n_neighbors=3,
        n_epochs=10,
        images_per_step=1,
        margin=0.5,
        learning_rate=5e-4,
        weight_decay=0.01,
        batch_size=32,
        device="cpu",
        random_state=None,
        verbose=False,
        n_clusters="deprecated",
    ):
        self.threshold = threshold
        self.threshold_clusters = threshold_clusters
        self.appearance_weight = appearance_weight
        self.appearance_spread = appearance_spread
        self.gate = gate
        self.gate_width = gate_width
        self.tau = tau
        self.blur_sigma = blur_sigma
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.images_per_step = images_per_step
        self.margin = margin
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.n_clusters = n_clusters

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the contrastive head on all images (blind, no labels).

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            The localizer output.
        y : None
            Ignored.

        Returns
        -------
        self : ContrastiveRefiner
        """
        data, _ = validate_feature_maps(self, X, reset=True, min_channels=2)
        self._appearance_spreads()  # checked before any work
        n = data.shape[0]
        if n < 2:
            raise ValueError(f"ContrastiveRefiner needs at least 2 images, got n_samples = {n}")
        device = self._resolve_device()
        seeds = Seeds(self.random_state)
        features, maps = split_localizer_output(torch.from_numpy(data))  # views, any dtype
        maps = maps.float()
        paper_descriptors, appearance = self._step4_views(features, maps)
        max_scores = image_scores(maps).numpy()
        rule, k = self._threshold_rule()
        if rule == "given":
            threshold = float(self.threshold)
        else:
            threshold = anomaly_threshold(
                max_scores,
                paper_descriptors.numpy(),
                rule=rule,
                n_clusters=k,
                random_state=seeds.legacy("kmeans"),
            )
        close, counter = image_neighbors(paper_descriptors, min(self.n_neighbors, n - 1))
        if device.type != "cpu":
            features = features.to(device)  # pixels are then gathered on the device
        mins, maxs = (stat.float() for stat in minmax_scale_stats(features))
        bar = progress_bar(self.n_epochs, self.verbose, "contrastive", unit="epoch")
        self.head_, self.loss_curve_ = train_contrastive_head(
            features,
            maps > threshold,
            close,
            counter,
            lambda vectors, images: minmax_scale(vectors, mins[images], maxs[images]),
            hidden_channels=self.hidden_channels,
            out_channels=self.out_channels,
            n_epochs=self.n_epochs,
            images_per_step=self.images_per_step,
            margin=self.margin,
            lr=self.learning_rate,
            weight_decay=self.weight_decay,
            generator=seeds.torch("head"),
            device=device,
            progress=lambda epoch: bar.update(1),
        )
        bar.close()
        self.threshold_ = threshold
        self.threshold_rule_ = rule
        self.anomalous_share_ = float(np.mean(max_scores > threshold))
        self._fit_assembly(appearance.numpy(), max_scores, seeds)
        self.n_features_out_ = self._n_descriptor_channels(self.out_channels, data.shape[1] - 1)
        return self

    def _threshold_rule(self):
        """The pixel threshold's rule and its k (the deprecated parameters mapped)."""
        k = self.threshold_clusters
        if self.n_clusters != "deprecated":
            warnings.warn(
                "ContrastiveRefiner(n_clusters=...) is deprecated: the refiner's pixel threshold "
                "has its own parameter, threshold_clusters (threshold='kmeans' uses it).",
                FutureWarning,
                stacklevel=3,
            )
            k = self.n_clusters if k is None else k
        if not isinstance(self.threshold, str):
            return "given", None
        if self.threshold == "auto":  # deprecated: the old default
            return ("otsu" if k is None else "kmeans"), k
        return self.threshold, k

    def _step4_views(self, features, maps):
        """The paper's step-4 descriptors and the appearance view of every image (CPU)."""
        paper, appearance = [], []
        with torch.inference_mode():
            for s in range(0, len(features), self.batch_size):
                chunk = features[s : s + self.batch_size].to(self.device_).float()
                chunk_maps = maps[s : s + self.batch_size].to(self.device_)
                paper.append(
                    anomaly_weighted_pooling(
                        chunk, chunk_maps, tau=self.tau, blur_sigma=self.blur_sigma
                    ).cpu()
                )
                if self.appearance_weight > 0:
                    appearance.append(self._appearance_view(chunk, chunk_maps).cpu())
        appearance = torch.cat(appearance) if appearance else torch.empty(len(features), 0)
        return torch.cat(paper), appearance

    def transform(self, X):
        """Embed every pixel with the head and pool; add the appearance view; gate.

        Parameters
        ----------
        X : array-like of shape (n, C + 1, h, w) or (n, C + 1)
            The localizer output.

        Returns
        -------
        descriptors : ndarray of shape (n, n_features_out_), float32
        """
        check_is_fitted(self, "head_")
        data, _ = validate_feature_maps(self, X, reset=False, min_channels=2)
        learned, appearance, scores = [], [], []
        with torch.inference_mode():
            for s in range(0, len(data), self.batch_size):
                chunk = torch.from_numpy(data[s : s + self.batch_size]).to(self.device_).float()
                features, maps = split_localizer_output(chunk)
                mins, maxs = minmax_scale_stats(features)
                embedded = self.head_.forward_maps(minmax_scale(features, mins, maxs))
                # Eq. 2 on the embeddings, as on the features in step 4
                learned.append(
                    anomaly_weighted_pooling(
                        embedded, maps, tau=self.tau, blur_sigma=self.blur_sigma
                    ).cpu()
                )
                if self.appearance_weight > 0:
                    appearance.append(self._appearance_view(features, maps).cpu())
                scores.append(image_scores(maps).cpu())
        appearance = torch.cat(appearance) if appearance else None
        return self._assemble(torch.cat(learned), appearance, torch.cat(scores).numpy())

    @property
    def _n_features_out(self):
        # used by get_feature_names_out (ClassNamePrefixFeaturesOutMixin)
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = False
        return tags
