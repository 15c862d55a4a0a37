"""Diff throughput: `fastckpt diff A B` against the naive torch approach and `cmp`, on two torch.save
checkpoints of >= 1 GiB each that differ in about half of their tensors, in the hot page cache.

- fastckpt: `fastckpt diff A B --quiet` as a process (and `fastckpt.diff(A, B)` in-process);
- naive: torch.load both (weights_only), then per tensor torch.equal and (a - b).abs().max(),
  as a process and in-process;
- cmp: `cmp` reading both files to the end (A against a byte-identical copy of A, since `cmp A B`
  stops at the first difference) -- the bound: it only reads and compares bytes.

Every figure is the median of several runs; GB/s counts the bytes of both files (1e9 bytes/s).

    python benchmarks/diff_throughput.py [--size-gib 1] [--tensors 256] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import textwrap

from _util import machine_description, median_seconds, print_table, write_json

NAIVE = textwrap.dedent(
    """
    import sys, torch
    a = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    b = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
    out = {}
    for k, ta in a.items():
        tb = b.get(k)
        if tb is None or ta.shape != tb.shape or ta.dtype != tb.dtype:
            out[k] = None
        elif not torch.equal(ta, tb):
            out[k] = float((ta - tb).abs().max())
    print(len(out))
    """
)


def make_checkpoints(folder: str, size: int, n: int) -> tuple[str, str, str]:
    import torch

    os.makedirs(folder, exist_ok=True)
    pa, pb, pc = (os.path.join(folder, f) for f in ("a.pt", "b.pt", "a_copy.pt"))
    numel = size // n // 4
    if all(os.path.exists(p) for p in (pa, pb, pc)):
        return pa, pb, pc
    g = torch.Generator().manual_seed(0)
    a = {f"layers.{i}.weight": torch.randn(numel, generator=g) for i in range(n)}
    # About half the tensors differ: every other one moves by a small update, like a training step.
    b = {
        k: (v + 1e-3 * torch.randn(numel, generator=g) if i % 2 else v) for i, (k, v) in enumerate(a.items())
    }
    torch.save(a, pa)
    torch.save(b, pb)
    shutil.copyfile(pa, pc)
    return pa, pb, pc


CPU_SECONDS: dict[str, float] = {}


def process_seconds(cmd: list[str], runs: int, warmup: int = 1, label: str = "") -> float:
    """Median wall time of a process that exits 0 or 1 (diff and cmp exit 1 on a difference);
    its median CPU time (user + system, all threads) goes to CPU_SECONDS[label]."""
    cpu: list[float] = []

    def once() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if rc not in (0, 1):
            raise SystemExit(f"{cmd[0]} exited {rc}")

    wall = median_seconds(once, runs, warmup)
    if label:
        CPU_SECONDS[label] = statistics.median(cpu[warmup:])
    return wall


def warm(*paths: str) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0, help="size of each checkpoint (default 1 GiB)")
    ap.add_argument("--tensors", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/fastckpt-bench/diff")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints for the next run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    size = int(args.size_gib * (1 << 30))
    pa, pb, pcopy = make_checkpoints(args.dir, size, args.tensors)
    total = os.path.getsize(pa) + os.path.getsize(pb)
    warm(pa, pb, pcopy)
    # The fastckpt of this interpreter's environment (a regular install: an editable install
    # rebuilds on import and adds about a second to every process).
    exe = os.path.join(os.path.dirname(sys.executable), "fastckpt")
    if not os.path.exists(exe):
        exe = shutil.which("fastckpt") or exe
    runs = args.runs

    import fastckpt

    report = fastckpt.diff(pa, pb)
    n_diff = report.summary()["different"]
    t: dict[str, float] = {}
    t["fastckpt_process"] = process_seconds([exe, "diff", pa, pb, "--quiet"], runs, label="fastckpt_process")
    t["fastckpt_inprocess"] = median_seconds(lambda: fastckpt.diff(pa, pb), runs)
    t["cmp_full_read"] = process_seconds(["cmp", pa, pcopy], runs, label="cmp_full_read")
    t["cmp_a_b_first_difference"] = process_seconds(["cmp", "-s", pa, pb], runs)
    t["naive_process"] = process_seconds(
        [sys.executable, "-c", NAIVE, pa, pb], max(2, runs // 2), label="naive_process"
    )

    def naive_inprocess() -> None:
        import torch

        a = torch.load(pa, map_location="cpu", weights_only=True)
        b = torch.load(pb, map_location="cpu", weights_only=True)
        for k, ta in a.items():
            tb = b[k]
            if not torch.equal(ta, tb):
                float((ta - tb).abs().max())

    t["naive_inprocess"] = median_seconds(naive_inprocess, max(2, runs // 2))

    gbs = {k: total / v / 1e9 for k, v in t.items()}
    load = os.getloadavg()[0]
    ratios = {
        "naive_over_fastckpt_process": t["naive_process"] / t["fastckpt_process"],
        "naive_over_fastckpt_inprocess": t["naive_inprocess"] / t["fastckpt_inprocess"],
        "fastckpt_over_cmp_process": t["fastckpt_process"] / t["cmp_full_read"],
    }
    rows = [
        ("fastckpt diff (process)", gbs["fastckpt_process"],
         f"GB/s  {t['fastckpt_process']:.3f} s; {ratios['naive_over_fastckpt_process']:.1f}x naive (target >= 3x), "
         f"{ratios['fastckpt_over_cmp_process']:.2f}x cmp time (target <= 1.5x)"),
        ("fastckpt.diff (in-process)", gbs["fastckpt_inprocess"],
         f"GB/s  {t['fastckpt_inprocess']:.3f} s; {ratios['naive_over_fastckpt_inprocess']:.1f}x naive in-process"),
        ("cmp, full read (A vs copy of A)", gbs["cmp_full_read"], f"GB/s  {t['cmp_full_read']:.3f} s (the bound)"),
        ("cmp -s A B (stops at 1st diff)", gbs["cmp_a_b_first_difference"], f"GB/s  {t['cmp_a_b_first_difference']:.3f} s"),
        ("naive torch (process)", gbs["naive_process"], f"GB/s  {t['naive_process']:.3f} s"),
        ("naive torch (in-process)", gbs["naive_inprocess"], f"GB/s  {t['naive_inprocess']:.3f} s"),
    ]  # fmt: skip
    rows += [
        (f"CPU seconds: {name}", sec, "s (user + system, all threads)") for name, sec in CPU_SECONDS.items()
    ]
    machine = f"{machine_description()}, load average {load:.1f} at the end"
    print_table(
        f"diff of two {args.size_gib:g} GiB checkpoints, {args.tensors} tensors, {n_diff} differ (hot page cache)",
        rows,
        machine,
    )
    write_json(
        args.json,
        {
            "machine": machine,
            "bytes": total,
            "tensors": args.tensors,
            "different": n_diff,
            "seconds": t,
            "cpu_seconds": CPU_SECONDS,
            "load_average": load,
            "gb_per_s": gbs,
            "ratios": ratios,
        },
    )
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
