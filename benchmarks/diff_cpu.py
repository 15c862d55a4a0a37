"""CPU bitwise-diff kernel against numpy, on warm in-memory buffers.

fastckpt's diff (`_native.diff_buffers`, all cores) computes the full statistics of
docs/DIFF_SEMANTICS.md in one pass; the numpy peer computes much less: `np.array_equal(a, b)` and
`np.abs(a - b).max()` (for bfloat16, on float32 values widened from the raw bits). Bytes counted
are those of both operands. Three cases: identical, 0.1% of elements changed, every element
changed.

    python benchmarks/diff_cpu.py [--mib 256] [--runs 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastckpt import _native


def median_s(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_peer(a: np.ndarray, b: np.ndarray, dtype: str) -> Callable[[], object]:
    if dtype == "bfloat16":

        def widen(x: np.ndarray) -> np.ndarray:
            return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)

        return lambda: (np.array_equal(a, b), np.abs(widen(a) - widen(b)).max())
    return lambda: (np.array_equal(a, b), np.abs(a - b).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB per operand (default 256)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="fastckpt worker threads (0 = all cores)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import os

    nbytes = args.mib << 20
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    print(f"CPU diff, 2 x {args.mib} MiB warm buffers, {os.cpu_count()} threads, median of {args.runs}")
    print(f"  {'dtype':<9} {'case':<12} {'fastckpt GB/s':>13} {'numpy GB/s':>11} {'ratio':>6}")
    for dtype in ("float32", "bfloat16"):
        if dtype == "float32":
            a = rng.standard_normal(nbytes // 4).astype(np.float32)
            noise = (rng.standard_normal(a.size) * 1e-3).astype(np.float32)
        else:
            a = (rng.standard_normal(nbytes // 4).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            a = np.concatenate([a, a])[: nbytes // 2]
            noise = None
        for case in ("identical", "0.1% changed", "all changed"):
            b = a.copy()
            if case == "0.1% changed":
                idx = rng.choice(a.size, a.size // 1000, replace=False)
                b[idx] = b[idx] + (1 if dtype == "bfloat16" else np.float32(1e-3))
            elif case == "all changed":
                b = a + noise if noise is not None else a ^ np.uint16(1)
            fast = median_s(
                lambda a=a, b=b, dt=dtype: _native.diff_buffers(a, b, dt, args.threads), args.runs
            )
            peer = median_s(numpy_peer(a, b, dtype), args.runs)
            row = {
                "dtype": dtype,
                "case": case,
                "bytes": 2 * nbytes,
                "fastckpt_GBps": 2 * nbytes / fast / 1e9,
                "numpy_GBps": 2 * nbytes / peer / 1e9,
                "ratio": peer / fast,
            }
            rows.append(row)
            print(
                f"  {dtype:<9} {case:<12} {row['fastckpt_GBps']:13.2f} {row['numpy_GBps']:11.2f} {row['ratio']:6.2f}",
                flush=True,
            )
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"benchmark": "diff_cpu", "mib_per_operand": args.mib, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
