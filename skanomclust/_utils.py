"""Small helpers shared by the estimators (devices, seeds, progress bars)."""

from __future__ import annotations

import torch
from sklearn.utils import check_random_state

__all__ = ["progress_bar", "resolve_device", "seed_from_random_state", "torch_generator"]


def resolve_device(device) -> torch.device:
    """Turn a ``device`` parameter into a :class:`torch.device`, checking it exists."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='cpu'."
        )
    return resolved


def seed_from_random_state(random_state) -> int:
    """Draw one 63-bit seed from a scikit-learn ``random_state``."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def torch_generator(random_state, device="cpu") -> torch.Generator:
    """A local :class:`torch.Generator` seeded from ``random_state`` (no global seeding)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed_from_random_state(random_state))
    return generator


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total: int, verbose, desc: str):
    """A tqdm bar when ``verbose`` is truthy, else an object that does nothing."""
    if not verbose:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)
