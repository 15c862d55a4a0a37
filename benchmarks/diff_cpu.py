"""CPU bitwise-diff kernel against numpy, on warm in-memory buffers.

fastckpt's diff (`_native.diff_buffers(..., norm_a=True)`, all cores, as `fastckpt diff` calls it)
computes the full statistics of docs/DIFF_SEMANTICS.md and ||A||^2 in one pass; the numpy peer computes much less: `np.array_equal(a, b)` and
`np.abs(a - b).max()` (for bfloat16, on float32 values widened from the raw bits). Bytes counted
are those of both operands. Three cases: identical, 0.1% of elements changed, every element
changed. A second table gives, for every kernel usable here (`_native.diff_isas()`: scalar, avx2,
avx512), the CPU time of one thread per element when every element changed, for each float dtype
with a vector kernel (CPU time of the calling thread: other jobs on a shared machine disturb it
less than wall time).

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


def per_isa(rng: np.random.Generator, mib: int, runs: int) -> list[dict[str, Any]]:
    """Every element changed, one thread, each usable kernel: ns per element and GB/s of both
    operands per second of the thread's CPU time (median of `runs`)."""
    n = (mib << 20) // 4
    x = rng.standard_normal(n).astype(np.float32)
    y = x + (rng.standard_normal(n) * 1e-3).astype(np.float32)
    bf_a = (x.view(np.uint32) >> 16).astype(np.uint16)
    cases = {
        "float64": (x.astype(np.float64), y.astype(np.float64)),
        "float32": (x, y),
        "float16": (
            x.astype(np.float16),
            (x.astype(np.float16).view(np.uint16) ^ np.uint16(1)).view(np.float16),
        ),
        "bfloat16": (bf_a, bf_a ^ np.uint16(1)),
    }
    out: list[dict[str, Any]] = []
    print(f"\nOne thread, every element changed, {mib} MiB of float32 values, CPU time of the thread")
    print(
        f"  {'dtype':<9} " + " ".join(f"{isa + ' ns/el':>14}" for isa in _native.diff_isas()) + "   GB/s/core"
    )
    for dtype, (a, b) in cases.items():
        cells, rates = [], []
        for isa in _native.diff_isas():
            times = []
            for _ in range(runs):
                t0 = time.thread_time()
                _native.diff_buffers(a, b, dtype, 1, norm_a=True, isa=isa)
                times.append(time.thread_time() - t0)
            sec = statistics.median(times)
            ns = sec / a.size * 1e9
            rate = (a.nbytes + b.nbytes) / sec / 1e9
            out.append({"dtype": dtype, "isa": isa, "ns_per_element": ns, "GBps_per_core": rate})
            cells.append(f"{ns:14.2f}")
            rates.append(f"{rate:.2f}")
        print(f"  {dtype:<9} " + " ".join(cells) + "   " + " / ".join(rates))
    return out


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
                lambda a=a, b=b, dt=dtype: _native.diff_buffers(a, b, dt, args.threads, norm_a=True),
                args.runs,
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
    isa_rows = per_isa(rng, min(args.mib, 64), args.runs)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(
                {"benchmark": "diff_cpu", "mib_per_operand": args.mib, "rows": rows, "per_isa": isa_rows},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
