"""Shared benchmark helpers: timing medians, warm buffers, hot files, and result tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_seconds(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_process_seconds(cmd: Sequence[str], runs: int = 5, warmup: int = 1) -> float:
    def once() -> None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return median_seconds(once, runs, warmup)


def warm_buffer(nbytes: int, seed: int = 0) -> Any:
    """A pre-touched numpy buffer of random bytes (fresh pages are ~10x slower to first touch here)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    buf = np.empty(nbytes, dtype=np.uint8)
    chunk = 64 << 20
    for start in range(0, nbytes, chunk):
        n = min(chunk, nbytes - start)
        buf[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8)
    return buf


def hot_file(path: str, nbytes: int) -> str:
    """Creates (once) a file of random bytes and reads it so it sits in the page cache."""
    if not os.path.exists(path) or os.path.getsize(path) != nbytes:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buf = warm_buffer(64 << 20, seed=1)
        with open(path + ".tmp", "wb") as f:
            written = 0
            while written < nbytes:
                n = min(len(buf), nbytes - written)
                f.write(memoryview(buf)[:n])
                written += n
        os.replace(path + ".tmp", path)
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    return path


def print_table(title: str, rows: list[tuple[str, float, str]], machine: str) -> None:
    print(f"\n{title}  [{machine}]")
    width = max(len(r[0]) for r in rows) + 2
    for name, value, note in rows:
        print(f"  {name:<{width}} {value:8.2f}  {note}")


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} threads, Python {sys.version.split()[0]}"


def write_json(path: str | None, obj: dict[str, Any]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
