"""Shared helpers of the benchmark scripts: data, timing, memory."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import skanomclust

HERE = Path(__file__).resolve().parent
MTD = HERE.parent.parent / "shared" / "data" / "mtd" / "magnetic_tile"
RESULTS = HERE / "results"


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the RSS every few milliseconds; ``peak`` is the maximum seen."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@contextmanager
def stage(record: dict, name: str):
    """Record wall time and peak RSS (absolute and above the stage's start) of a block."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
    record[name] = {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(memory.peak / 2**20, 1),
        "peak_above_start_mb": round((memory.peak - memory.start) / 2**20, 1),
    }
    print(
        f"  {name:28s} {seconds:8.1f} s   peak RSS {memory.peak / 2**20:7.0f} MB "
        f"(+{(memory.peak - memory.start) / 2**20:.0f} MB)",
        flush=True,
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict:
    # Machines of the same kind differ in processor and vector instructions from
    # session to session: these change the timings and the float rounding of the
    # backbone (and so, slightly, the labels), so results record them.
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "skanomclust": skanomclust.__version__,
        "load_average_at_end": os.getloadavg(),
    }


def save_rows(path, data, rows) -> None:
    """Write the result rows so far, with the data path and the machine, as JSON."""
    RESULTS.mkdir(exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"data": str(data), "rows": rows, "machine": machine()}, handle, indent=2)


def write_markdown(lines, path) -> None:
    """Write table lines to ``path`` (one per line) and print them."""
    table = "\n".join(lines)
    Path(path).write_text(table + "\n")
    print(table)


def mtd_or_exit(path=MTD):
    from skanomclust.datasets import load_texture_folder

    if not Path(path).is_dir():
        raise SystemExit(f"MTD not found at {path}; pass --data")
    return load_texture_folder(path)


def mask_overlap_outside_border(masks, border_fraction):
    """Share of defect pixels inside a frame of ``border_fraction`` of each side."""
    inside = total = 0
    for mask in masks:
        h, w = mask.shape
        bh, bw = int(round(border_fraction * h)), int(round(border_fraction * w))
        frame = np.ones_like(mask)
        frame[bh : h - bh, bw : w - bw] = False
        inside += int((mask & frame).sum())
        total += int(mask.sum())
    return inside / max(total, 1)


__all__ = [
    "MTD",
    "RESULTS",
    "PeakMemory",
    "machine",
    "mtd_or_exit",
    "rss_bytes",
    "stage",
    "write_markdown",
]
