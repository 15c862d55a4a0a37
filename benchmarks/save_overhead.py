"""Save overhead: fastckpt.save (atomic, sidecar, digests computed while writing) against torch.save
of the same >= 1 GiB CPU state_dict, with and without parity, to the same folder.

Hot page cache (no fsync on either side, the default table): what hashing while writing and parity
add to torch.save's own time. Durable (`--durable`): both sides fsync the file and the folder, which
on this machine's disk (~0.4 GB/s with fsync) is disk-bound; reported separately.

    python benchmarks/save_overhead.py [--size-gib 1] [--runs 5] [--redundancy 5] [--durable] [--json out.json]

Targets (issue 7): hashing while writing adds <= 10% to torch.save's time; with parity <= 25%.
Runs are interleaved in rotating order after an os.sync(); every save writes a new file.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import time
import warnings

import torch

import fastckpt
from _util import machine_description, write_json

BENCH_DIR = "/tmp/save-bench"


def make_state(nbytes: int) -> dict[str, torch.Tensor]:
    """A transformer-ish state_dict: large matrices plus many small vectors, pre-touched."""
    torch.manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    big = 16 << 20
    i = 0
    total = 0
    while total < nbytes:
        w = torch.randn(big // 4 // 1024, 1024)
        sd[f"layers.{i}.weight"] = w
        sd[f"layers.{i}.bias"] = torch.randn(1024)
        sd[f"layers.{i}.norm"] = torch.ones(1024, dtype=torch.bfloat16)
        total += w.nbytes + 4096 + 2048
        i += 1
    return sd


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def clear(path: str) -> None:
    for p in (path, path + ".fastckpt"):
        if os.path.exists(p):
            os.unlink(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--redundancy", type=float, default=5.0)
    ap.add_argument("--durable", action="store_true", help="also measure fsync'ed saves (disk-bound)")
    ap.add_argument("--durable-runs", type=int, default=3)
    ap.add_argument("--dir", default=BENCH_DIR)
    ap.add_argument("--keep", action="store_true", help="keep the files in --dir")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    os.makedirs(args.dir, exist_ok=True)
    sd = make_state(int(args.size_gib * (1 << 30)))
    probe = io.BytesIO()
    torch.save(sd, probe)
    size = len(probe.getvalue())
    del probe
    path = os.path.join(args.dir, "model.pt")

    def torch_path(durable: bool) -> None:
        torch.save(sd, path)
        if durable:
            fsync_path(path)

    def torch_fileobj(durable: bool) -> None:
        with open(path, "wb") as f:
            torch.save(sd, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if durable:
            fsync_path(path)

    def fast(redundancy: float) -> callable:  # type: ignore[valid-type]
        def run(durable: bool) -> None:
            fastckpt.save(sd, path, redundancy=redundancy, fsync=durable)

        return run

    cases = [
        ("torch.save(path)", torch_path),
        ("torch.save(file object)", torch_fileobj),
        ("fastckpt.save (digests + sidecar)", fast(0.0)),
        (f"fastckpt.save (+ parity {args.redundancy:g}%)", fast(args.redundancy)),
    ]

    def measure(durable: bool, runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        cpu: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _name, fn in cases:  # warm-up: first touch of the allocator and page cache paths
            clear(path)
            fn(durable)
        for r in range(runs):
            # Rotate the order (no case always follows the same one) and start every run with no
            # dirty pages left over from the previous one (their writeback would land on this run).
            for name, fn in cases[r % len(cases) :] + cases[: r % len(cases)]:
                clear(path)
                os.sync()
                c0, t0 = time.process_time(), time.perf_counter()
                fn(durable)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        clear(path)
        return times, cpu

    out: dict[str, object] = {
        "machine": machine_description(),
        "bytes": size,
        "runs": args.runs,
        "results": {},
    }
    print(
        f"save overhead: state_dict of {len(sd)} tensors, checkpoint {size / 1e9:.2f} GB  [{machine_description()}]"
    )
    sections = [("hot page cache, no fsync", False, args.runs)]
    if args.durable:
        sections.append(("durable: fsync of file and folder (disk-bound)", True, args.durable_runs))
    for title, durable, runs in sections:
        times, cpu = measure(durable, runs)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        cmed = {k: statistics.median(v) for k, v in cpu.items()}
        ref = "torch.save(path)"
        print(f"\n{title} (wall: median and best of {runs}; cpu: process CPU seconds, all threads, median)")
        print(
            f"  {'method':<36} {'median s':>8} {'GB/s':>6} {'overhead':>9} | {'best s':>7} {'overhead':>9} | {'cpu s':>6} {'overhead':>9}"
        )
        rows = {}
        for name, _ in cases:
            t, b, c = med[name], best[name], cmed[name]
            print(
                f"  {name:<36} {t:8.3f} {size / t / 1e9:6.2f} {100 * (t / med[ref] - 1):+8.1f}% |"
                f" {b:7.3f} {100 * (b / best[ref] - 1):+8.1f}% | {c:6.3f} {100 * (c / cmed[ref] - 1):+8.1f}%"
            )
            rows[name] = {
                "median_s": t, "best_s": b, "cpu_median_s": c, "gbps_median": size / t / 1e9,
                "overhead_pct_median": 100 * (t / med[ref] - 1), "overhead_pct_best": 100 * (b / best[ref] - 1),
                "overhead_pct_cpu": 100 * (c / cmed[ref] - 1), "wall_all": times[name], "cpu_all": cpu[name],
            }  # fmt: skip
        out["results"][title] = rows  # type: ignore[index]
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
