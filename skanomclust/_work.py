"""Where a run keeps its results while it computes them, so that it can resume.

A :class:`WorkFolder` holds the fitted model, the fitted sample's results and
one file per assigned chunk, each written atomically (a temporary file renamed
into place), so a run killed at any moment leaves only complete files behind.
Called again with the same folder, the same images and the same settings, a
run loads what is there and computes only the rest; with other images or
settings it refuses the folder rather than mixing two runs.

The anomaly maps of all images are written to one flat file at their images'
offsets with plain file writes (not a memory map, whose written pages would
count in the process's resident memory), and opened read-only at the end:
memory does not grow with the number of images. Without a folder
(``path=None``) everything stays in memory and nothing is written. The folder
is created when the first result is kept (the fitted model, or for an
assignment the first chunk): a run failing before that leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import joblib
import numpy as np
from sklearn.utils import Bunch

__all__ = ["WorkFolder"]

_KEYS = ("labels", "anomaly_maps", "image_scores", "descriptors")


def _fingerprint(images, settings) -> str:
    """A digest of what the images are (paths, or array shapes) and of the settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(str(len(images)).encode())
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            digest.update(os.fspath(item).encode())
        else:
            array = np.asarray(item)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(hashlib.sha256(np.ascontiguousarray(array).data).digest())
    return digest.hexdigest()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


class WorkFolder:
    """A run's results on disk (or in memory without a folder), chunk by chunk.

    Use :meth:`open`; see the module docstring.
    """

    def __init__(self, path):
        self.path = None if path is None else Path(path)
        self._maps_file = None
        self._fingerprint = None

    @classmethod
    def open(cls, path, images, settings) -> WorkFolder:
        """The work folder at ``path`` for these images and settings (created if needed)."""
        work = cls(path)
        if work.path is None:
            return work
        meta = work.path / "run.json"
        work._fingerprint = _fingerprint(images, settings)
        if meta.exists():
            found = json.loads(meta.read_text()).get("fingerprint")
            if found != work._fingerprint:
                raise ValueError(
                    f"The unfinished run in {str(work.path)!r} was for other images or "
                    "settings; remove that folder or choose another one."
                )
        return work

    def _create(self) -> None:
        """Create the folder once there is a result to keep: a run failing before leaves none."""
        meta = self.path / "run.json"
        if meta.exists():
            return
        (self.path / "chunks").mkdir(parents=True, exist_ok=True)
        fingerprint = json.dumps({"fingerprint": self._fingerprint})
        _atomic(meta, lambda p: p.write_text(fingerprint))

    # ----------------------------------------------------------------- the fitted sample
    def load_fit(self):
        """``(model, sample, fit results, timings)`` of an earlier run, or None."""
        if self.path is None or not (self.path / "fit.npz").exists():
            return None
        model = joblib.load(self.path / "model.joblib")
        with np.load(self.path / "fit.npz") as stored:
            fit = Bunch(**{key: stored[key] for key in _KEYS})
            sample = stored["sample"]
        timings = json.loads((self.path / "fit_timings.json").read_text())
        return model, sample, fit, timings

    def save_fit(self, model, sample, fit, timings) -> None:
        """Store the fitted model and its sample's results (fit.npz last: it marks them done)."""
        if self.path is None:
            return
        self._create()
        _atomic(self.path / "fit_timings.json", lambda p: p.write_text(json.dumps(timings)))
        _atomic(self.path / "model.joblib", lambda p: joblib.dump(model, p))

        def write(p):
            with open(p, "wb") as stream:
                np.savez(stream, sample=sample, **{key: fit[key] for key in _KEYS})

        _atomic(self.path / "fit.npz", write)

    # ----------------------------------------------------------------- assigned chunks
    def _chunk(self, index) -> Path:
        return self.path / "chunks" / f"{index:07d}.npz"

    def has_chunk(self, index) -> bool:
        return self.path is not None and self._chunk(index).exists()

    def save_chunk(self, index, result) -> None:
        if self.path is None:
            return
        self._create()

        def write(p):
            with open(p, "wb") as stream:
                np.savez(stream, **{key: result[key] for key in _KEYS})

        _atomic(self._chunk(index), write)

    def load_chunk(self, index):
        if not self.has_chunk(index):
            return None
        with np.load(self._chunk(index)) as stored:
            return Bunch(**{key: stored[key] for key in _KEYS})

    # ----------------------------------------------------------------- all images' results
    def outputs(self, n, like) -> dict:
        """Arrays for ``n`` images shaped like the results ``like``; maps on disk with a folder."""
        out = {
            key: np.empty((n, *np.shape(like[key])[1:]), dtype=np.asarray(like[key]).dtype)
            for key in _KEYS
            if key != "anomaly_maps" or self.path is None
        }
        if self.path is not None:
            self._create()
            maps = np.asarray(like["anomaly_maps"])
            out["anomaly_maps"] = _MapsFile(
                self.path / "anomaly_maps.npy", n, maps.shape[1:], maps.dtype
            )
        return out

    def finish(self, outputs) -> None:
        """Replace the maps' file writer by a read-only view of the file."""
        maps = outputs["anomaly_maps"]
        if isinstance(maps, _MapsFile):
            outputs["anomaly_maps"] = maps.close()


class _MapsFile:
    """An ``.npy`` file written image by image with plain writes; ``out[indices] = maps``."""

    def __init__(self, path, n, shape, dtype):
        self.path, self.n, self.shape, self.dtype = Path(path), n, tuple(shape), np.dtype(dtype)
        header = np.lib.format.open_memmap(self.path, "w+", self.dtype, (n, *self.shape))
        self.offset = header.offset
        del header  # only the header and the file's size were needed
        self.stream = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
        self.record = int(np.prod(self.shape)) * self.dtype.itemsize

    def __setitem__(self, indices, values):
        values = np.ascontiguousarray(values, dtype=self.dtype)
        indices = np.asarray(indices)
        if indices.size and np.all(np.diff(indices) == 1):  # one contiguous run
            self.stream.seek(self.offset + int(indices[0]) * self.record)
            self.stream.write(values.tobytes())
            return
        for index, value in zip(indices, values, strict=True):
            self.stream.seek(self.offset + int(index) * self.record)
            self.stream.write(value.tobytes())

    def __getitem__(self, indices):
        self.stream.flush()
        return np.load(self.path, mmap_mode="r")[indices]

    def close(self):
        self.stream.close()
        return np.load(self.path, mmap_mode="r")
