"""The package's one randomness policy: named sub-seeds of ``random_state``.

Every estimator turns its ``random_state`` into a :class:`Seeds` object once per
``fit``, and every random operation draws from a local generator made for it
by name (``seeds.torch("vae")``, ``seeds.numpy("kmeans")``, ...). The sub-seed
of a name is derived with :class:`numpy.random.SeedSequence` from the
estimator's entropy and a hash of the name, so

- the same ``random_state`` gives the same draws for every operation, on any
  device and in any thread (no global generator is seeded or read, and no lock
  is needed);
- operations are independent: adding or removing one (a contrastive step, say)
  leaves the draws of the others unchanged;
- an int ``random_state`` gives the same results in every process; ``None``
  draws fresh entropy from numpy's global generator, and a
  :class:`numpy.random.RandomState` instance gives one draw of entropy per
  ``fit`` (scikit-learn's convention for both).
"""

from __future__ import annotations

import zlib
from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["Seeds"]


class Seeds:
    """Named, independent sub-seeds of one ``random_state``.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState or None
        scikit-learn's ``random_state``.

    Examples
    --------
    >>> seeds = Seeds(0)
    >>> seeds.int("vae") == Seeds(0).int("vae") != seeds.int("fca")
    True
    """

    def __init__(self, random_state):
        if isinstance(random_state, Integral) and not isinstance(random_state, bool):
            self.entropy = int(random_state)
        else:
            self.entropy = int(check_random_state(random_state).randint(0, 2**31 - 1))

    def int(self, name: str) -> int:
        """A 63-bit seed for the operation ``name``."""
        sequence = np.random.SeedSequence(self.entropy, spawn_key=(zlib.crc32(name.encode()),))
        return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))

    def torch(self, name: str, device="cpu") -> torch.Generator:
        """A :class:`torch.Generator` on ``device`` seeded for ``name``."""
        return torch.Generator(device=device).manual_seed(self.int(name))

    def numpy(self, name: str) -> np.random.Generator:
        """A :class:`numpy.random.Generator` seeded for ``name``."""
        return np.random.default_rng(self.int(name))

    def legacy(self, name: str) -> int:
        """A 31-bit seed for ``name``, for APIs that take an int ``random_state`` (k-means)."""
        return self.int(name) % (2**31 - 1)
