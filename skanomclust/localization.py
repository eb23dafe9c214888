"""Steps 2-3 as an estimator: blind anomaly maps from a per-pixel VAE and FCA."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from ._random import Seeds
from ._torch import TorchModulesMixin, release_freed_memory
from ._utils import MapsOutputMixin, progress_bar
from .contract import (
    append_anomaly_maps,
    image_scores,
    resize_anomaly_maps,
    restore_layout,
    validate_feature_maps,
)
from .nn.localization import (
    fit_fca_projection,
    localize_images,
    position_baseline,
)
from .nn.vae_training import train_pixel_vae, training_precision

__all__ = ["BlindAnomalyLocalizer", "resize_anomaly_maps"]


class BlindAnomalyLocalizer(MapsOutputMixin, TorchModulesMixin, TransformerMixin, BaseEstimator):
    """Per-pixel anomaly maps learned blindly from all images (steps 2-3).

    ``fit`` trains a per-pixel variational auto-encoder on feature vectors
    sampled across all images (normal and anomalous together: anomalies are
    rare, so it learns mostly normality). Each image's map is then Feature
    Correspondence Analysis of its residual (min-max scaled features minus the
    decoding of their posterior mean), smoothed. ``fit`` also computes the
    training images' maps once, to learn the typical value at each position
    (``baseline``), which every map then has subtracted. Each image's map
    depends only on that image and the fitted model. ``transform`` returns the
    features with the map appended as a last channel (see
    :mod:`skanomclust.contract`).

    Parameters
    ----------
    mode : {"vae_fca", "fca", "vae"}, default="vae_fca"
        ``"vae_fca"``: FCA on the VAE residuals (the paper's method);
        ``"fca"``: FCA on the min-max scaled features (zero-shot, nothing is
        trained); ``"vae"``: mean absolute residual over channels.
    n_steps : int, default=2000
        VAE optimisation steps (the paper trains for about 10000 map passes;
        pixels are sampled here, so the schedule does not grow with the set).
        Fewer steps, even with a higher ``learning_rate``, lost quality on PV
        (the user guide's "Speed and memory").
    pixels_per_step : int, default=2048
        Feature vectors sampled across all images per step.
    hidden_channels : int, default=128
        Width of the VAE's hidden layers (the paper: 512).
    latent_channels : int, default=32
        Latent size (the paper: 128).
    learning_rate : float, default=1e-3
        AdamW learning rate (the paper: 1e-4 with many more steps).
    weight_decay : float, default=0.1
    kl_weight : float, default=1e-3
    vae_precision : {"auto", "float32", "bfloat16"}, default="float32"
        Precision of the matrix products of the VAE's training on the CPU
        (``vae_precision_``). ``"bfloat16"``: products in bfloat16, weights,
        loss and optimiser in float32 (mixed precision,
        :class:`~skanomclust.nn.vae_step.VAETrainingStep`): faster on CPUs
        with bfloat16 instructions (AVX512-BF16, AMX; elsewhere they are
        emulated, which can be slower than float32), and another network
        than float32's (the user guide compares their clusters).
        ``"auto"``: bfloat16 where the CPU has them, else float32. Other
        devices train in float32.
    patch_size : int, default=7
    sigma_p : float, default=3.0
        Gaussian window of the FCA patches.
    fca_components : int or None, default=96
        Project the FCA input onto at most this many principal directions
        (``fca_components_``, fitted on pixels of up to 256 training images;
        skipped with fewer than 10 pixels per channel): FCA's cost grows with
        the channels. None, or at least the channels, reads every channel (the
        paper).
    baseline : "median" or None, default="median"
        ``"median"`` subtracts from every map the per-position median of the
        training maps (``baseline_``, :func:`skanomclust.nn.position_baseline`;
        this package's addition): the response to the padding at the edges
        cancels while defects at the border stay visible, as long as fewer than
        half the images have a defect at any one position. Maps may then be
        negative. ``None`` keeps FCA's maps (the paper).
    border : int or "auto", default=0
        Frame set to zero after smoothing (before the baseline is
        subtracted). ``"auto"`` scales the paper's 5-cell frame of a 64x64 map
        to the map: ``round(5 * min(h, w) / 64)`` (the paper's configuration).
    copy : bool, default=True
        False lets ``transform`` write the maps into the feature extractor's
        spare channel and return that buffer, sharing memory with the input
        (:func:`skanomclust.contract.append_anomaly_maps`).
    batch_size : int, default=16
        Images per torch call.
    device : str, default="cpu"
        Torch device of the VAE, FCA and everything around them.
    random_state : int, RandomState instance or None, default=None
        Seeds the VAE (initialisation, pixel sampling, latent noise) and the
        pixels sampled for the channel projection.
    verbose : bool or int, default=False
        Progress bars for training and maps.

    Attributes
    ----------
    vae_ : PixelVAE or None
        The trained VAE (None for ``mode="fca"``).
    fca_components_ : ndarray of shape (k, n_features_in_) or None
        Principal directions the FCA input is projected onto (orthonormal
        rows), or None when FCA reads every channel.
    fca_mean_ : ndarray of shape (n_features_in_,) or None
        Mean the FCA input is centred on before the projection.
    baseline_ : ndarray of shape (h, w) or None
        Per-position median of the training maps, subtracted from every map
        (None with ``baseline=None``).
    loss_curve_ : list of float
        VAE training loss per step.
    vae_precision_ : str or None
        Precision the VAE was trained in (``"float32"`` or ``"bfloat16"``;
        None without a VAE).
    device_ : torch.device
        Where the maps are computed.
    n_features_in_ : int
        Channels of the input feature maps.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame of 2-D ``(n, C)`` data.

    Notes
    -----
    For a 2-D input ``(n, C)`` the output is 2-D ``(n, C + 1)``: it follows
    ``set_output`` and its columns are :meth:`get_feature_names_out` (the
    input names and ``"anomaly_score"``). 4-D maps stay numpy arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import BlindAnomalyLocalizer
    >>> X = np.random.default_rng(0).random((4, 8, 12, 12), dtype=np.float32)
    >>> localizer = BlindAnomalyLocalizer(n_steps=5, hidden_channels=16, random_state=0)
    >>> localizer.fit_transform(X).shape
    (4, 9, 12, 12)
    """

    _parameter_constraints: dict = {
        "mode": [StrOptions({"vae_fca", "fca", "vae"})],
        "n_steps": [Interval(Integral, 0, None, closed="left")],
        "pixels_per_step": [Interval(Integral, 1, None, closed="left")],
        "hidden_channels": [Interval(Integral, 1, None, closed="left")],
        "latent_channels": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
        "vae_precision": [StrOptions({"auto", "float32", "bfloat16"})],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "sigma_p": [Interval(Real, 0, None, closed="neither")],
        "fca_components": [Interval(Integral, 1, None, closed="left"), None],
        "baseline": [StrOptions({"median"}), None],
        "border": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "copy": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    _torch_modules = ("vae_",)

    def __init__(
        self,
        mode="vae_fca",
        *,
        n_steps=2000,
        pixels_per_step=2048,
        hidden_channels=128,
        latent_channels=32,
        learning_rate=1e-3,
        weight_decay=0.1,
        kl_weight=1e-3,
        vae_precision="float32",
        patch_size=7,
        sigma_p=3.0,
        fca_components=96,
        baseline="median",
        border=0,
        copy=True,
        batch_size=16,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.mode = mode
        self.n_steps = n_steps
        self.pixels_per_step = pixels_per_step
        self.hidden_channels = hidden_channels
        self.latent_channels = latent_channels
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.kl_weight = kl_weight
        self.vae_precision = vae_precision
        self.patch_size = patch_size
        self.sigma_p = sigma_p
        self.fca_components = fca_components
        self.baseline = baseline
        self.border = border
        self.copy = copy
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the normality model (and the position baseline) from all feature maps.

        Parameters
        ----------
        X : array-like of shape (n, C, h, w) or (n, C)
            Feature maps, e.g. from :class:`TextureFeatureExtractor`.
        y : None
            Ignored.

        Returns
        -------
        self : BlindAnomalyLocalizer
        """
        self._fit(X, need_maps=False)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, then append each training image's anomaly map to its features.

        Same result as ``fit(X).transform(X)``, computing the maps once.

        Parameters
        ----------
        X : array-like of shape (n, C, h, w) or (n, C)
            Feature maps.
        y : None
            Ignored.

        Returns
        -------
        Xt : ndarray of shape (n, C + 1, h, w) (or (n, C + 1) for 2-D input)
            As :meth:`transform`.
        """
        features, was_2d, maps = self._fit(X, need_maps=True)
        out = append_anomaly_maps(features, maps, copy=self.copy)
        return self._wrap_output(restore_layout(out, was_2d), X)

    def __setstate__(self, state):
        super().__setstate__(state)
        # Models saved before vae_precision existed (0.3.5 and older) trained in float32.
        if "vae_precision" not in state:
            self.vae_precision = "float32"
            if "vae_" in state:
                self.vae_precision_ = None if state["vae_"] is None else "float32"

    def _fit(self, X, *, need_maps):
        """Train the VAE, fit the projection and the baseline; the training maps if needed."""
        features, was_2d = validate_feature_maps(self, X, reset=True)
        device = self._resolve_device()
        seeds = Seeds(self.random_state)
        self.vae_, self.loss_curve_, self.baseline_ = None, [], None
        self.vae_precision_ = None
        if self.mode in ("vae_fca", "vae"):
            self.vae_precision_ = training_precision(self.vae_precision, device)
            bar = progress_bar(self.n_steps, self.verbose, "VAE", unit="step")
            # On an accelerator the features go there once and the sampled pixels are
            # gathered there; the training reads them through one pixel-major copy
            # when memory allows (see train_pixel_vae).
            self.vae_, self.loss_curve_ = train_pixel_vae(
                torch.from_numpy(features).to(device),
                n_steps=self.n_steps,
                pixels_per_step=self.pixels_per_step,
                lr=self.learning_rate,
                weight_decay=self.weight_decay,
                kl_weight=self.kl_weight,
                hidden_channels=self.hidden_channels,
                latent_channels=self.latent_channels,
                generator=seeds.torch("vae"),
                device=device,
                precision=self.vae_precision_,
                progress=lambda step: bar.update(1),
            )
            bar.close()
        self.fca_components_ = self.fca_mean_ = None
        k = self.fca_components
        if self.mode != "vae" and k is not None and k < features.shape[1]:
            with torch.inference_mode():
                projection = fit_fca_projection(
                    torch.from_numpy(features),
                    self.vae_ if self.mode != "fca" else None,
                    k,
                    generator=seeds.torch("projection"),
                    batch_size=self.batch_size,
                    device=self.device_,
                )
            if projection is not None:
                self.fca_components_, self.fca_mean_ = (t.cpu().numpy() for t in projection)
        maps = None
        if need_maps or self.baseline is not None:
            maps = self._raw_maps(features)
            if self.baseline == "median":
                self.baseline_ = position_baseline(torch.from_numpy(maps)).numpy()
                maps -= self.baseline_
        return features, was_2d, maps

    def _border(self, h, w):
        if self.border == "auto":
            return int(round(5 * min(h, w) / 64))
        return int(self.border)

    def _raw_maps(self, features):
        """Float32 (n, h, w) maps of validated features, before the baseline."""
        projection = {}
        if self.fca_components_ is not None:
            projection = {
                "components": torch.from_numpy(self.fca_components_).to(self.device_),
                "mean": torch.from_numpy(self.fca_mean_).to(self.device_),
            }
        bar = progress_bar(len(features), self.verbose, "anomaly maps")
        with torch.inference_mode():
            out = localize_images(
                torch.from_numpy(features),
                self.vae_,
                batch_size=self.batch_size,
                device=self.device_,
                progress=bar.update,
                mode=self.mode,
                patch_size=self.patch_size,
                sigma_p=self.sigma_p,
                border=self._border(*features.shape[2:]),
                **projection,
            ).numpy()
        bar.close()
        release_freed_memory()  # the batches' temporaries, before the output is assembled
        return out

    def _maps_of(self, features):
        """Float32 (n, h, w) maps of validated features, baseline subtracted."""
        maps = self._raw_maps(features)
        if self.baseline_ is not None:
            if maps.shape[-2:] != self.baseline_.shape:
                raise ValueError(
                    f"Feature maps of size {maps.shape[-2:]} (h, w) do not match the "
                    f"{self.baseline_.shape} maps this localizer was fitted on; its position "
                    "baseline needs maps of the fitted size (use the same image_size)."
                )
            maps -= self.baseline_
        return maps

    def anomaly_maps(self, X, image_sizes=None):
        """Anomaly maps of feature maps, optionally upsampled to image sizes.

        Parameters
        ----------
        X : array-like of shape (n, C, h, w) or (n, C)
            Feature maps.
        image_sizes : tuple or list of tuple, optional
            (height, width) of the original images (one for all or one per
            image); the maps are then bilinearly upsampled to them.

        Returns
        -------
        maps : ndarray of shape (n, h, w) (or (n, H, W), or a list when the
            image sizes differ). Higher = more anomalous.
        """
        check_is_fitted(self, "loss_curve_")
        features, _ = validate_feature_maps(self, X, reset=False)
        out = self._maps_of(features)
        return out if image_sizes is None else resize_anomaly_maps(out, image_sizes)

    def transform(self, X):
        """Append each image's anomaly map to its features.

        Parameters
        ----------
        X : array-like of shape (n, C, h, w) or (n, C)
            Feature maps.

        Returns
        -------
        Xt : ndarray of shape (n, C + 1, h, w) (or (n, C + 1) for 2-D input)
            The features with the anomaly map as last channel, in the dtype of
            ``X`` (read it with :func:`skanomclust.contract.split_localizer_output`).
            With ``copy=False`` it may share memory with ``X``.
        """
        check_is_fitted(self, "loss_curve_")
        features, was_2d = validate_feature_maps(self, X, reset=False)
        out = append_anomaly_maps(features, self._maps_of(features), copy=self.copy)
        return self._wrap_output(restore_layout(out, was_2d), X)

    def get_feature_names_out(self, input_features=None):
        """Names of the output channels: the input channels, then ``"anomaly_score"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input channel names; by default ``feature_names_in_`` if fitted on
            a DataFrame, else ``x0, ..., x{C-1}``.

        Returns
        -------
        feature_names_out : ndarray of str objects, shape (n_features_in_ + 1,)
        """
        check_is_fitted(self, "n_features_in_")
        names = _check_feature_names_in(self, input_features)
        return np.asarray([*names, "anomaly_score"], dtype=object)

    def decision_function(self, X):
        """Image-level anomaly score: the maximum of each anomaly map.

        Parameters
        ----------
        X : array-like of shape (n, C, h, w) or (n, C)
            Feature maps.

        Returns
        -------
        scores : ndarray of shape (n,)
            Higher = more anomalous (:func:`skanomclust.contract.image_scores`).
        """
        return image_scores(self.anomaly_maps(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32", "float16"]
        return tags
