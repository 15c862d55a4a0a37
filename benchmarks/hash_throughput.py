"""Hash throughput: fastckpt leaf hashing vs xxhash, hashlib.sha256 and numpy read bandwidth on a
warm 1 GiB buffer, and whole-process `fastckpt hash` vs a python xxhash-over-mmap one-liner on a hot
2 GiB file. Prints GB/s (1e9 bytes/s) and ratios; every figure is the median of several runs.

    python benchmarks/hash_throughput.py [--size-gib 1] [--file-gib 2] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys

import numpy as np
import xxhash

from _util import (
    hot_file,
    machine_description,
    median_process_seconds,
    median_seconds,
    warm_buffer,
    write_json,
)
from fastckpt import _native


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--file-gib", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--file", default="/tmp/fastckpt-bench/hot_2g.bin")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    n = int(args.size_gib * (1 << 30))
    buf = warm_buffer(n)
    gbs = lambda sec: n / sec / 1e9  # noqa: E731
    r: dict[str, float] = {}
    r["fastckpt_1_thread"] = gbs(median_seconds(lambda: _native.leaf_digests(buf, 65536, 1), args.runs))
    r["fastckpt_all_threads"] = gbs(median_seconds(lambda: _native.leaf_digests(buf, 65536, 0), args.runs))
    r["xxhash_xxh3_64"] = gbs(median_seconds(lambda: xxhash.xxh3_64_intdigest(buf), args.runs))
    r["hashlib_sha256"] = gbs(median_seconds(lambda: hashlib.sha256(buf).digest(), max(2, args.runs // 2)))
    words = buf.view(np.uint64)
    r["numpy_read_sum"] = gbs(median_seconds(lambda: words.sum(), args.runs))

    rows = [
        (
            "fastckpt, 1 thread",
            r["fastckpt_1_thread"],
            f"GB/s  {r['fastckpt_1_thread'] / r['xxhash_xxh3_64']:.2f}x xxhash (target >= 0.9x)",
        ),
        (
            "fastckpt, all threads",
            r["fastckpt_all_threads"],
            f"GB/s  {r['fastckpt_all_threads'] / r['xxhash_xxh3_64']:.2f}x xxhash (target >= 1.5x), "
            f"{r['fastckpt_all_threads'] / r['hashlib_sha256']:.1f}x sha256 (target >= 10x), "
            f"{r['fastckpt_all_threads'] / r['numpy_read_sum']:.2f}x numpy read (target >= 0.9x)",
        ),
        ("xxhash.xxh3_64, one call", r["xxhash_xxh3_64"], "GB/s"),
        ("hashlib.sha256", r["hashlib_sha256"], "GB/s"),
        ("numpy sum (read bandwidth)", r["numpy_read_sum"], "GB/s"),
    ]
    machine = machine_description() + f", ISA {_native.default_isa()}"
    from _util import print_table

    print_table(f"Warm buffer of {args.size_gib:g} GiB", rows, machine)

    size = int(args.file_gib * (1 << 30))
    path = hot_file(args.file, size)
    exe = shutil.which("fastckpt") or os.path.join(os.path.dirname(sys.executable), "fastckpt")
    fck = median_process_seconds([exe, "hash", path], args.runs)
    one_liner = (
        "import mmap,sys,xxhash;f=open(sys.argv[1],'rb');"
        "m=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ);print(xxhash.xxh3_64_hexdigest(m))"
    )
    py = median_process_seconds([sys.executable, "-c", one_liner, path], args.runs)
    r["process_fastckpt_hash_s"] = fck
    r["process_python_xxhash_mmap_s"] = py
    print_table(
        f"Whole process on a hot {args.file_gib:g} GiB file (seconds, lower is better)",
        [
            (
                "fastckpt hash FILE",
                fck,
                f"s  {size / fck / 1e9:.2f} GB/s  {py / fck:.2f}x faster than the one-liner",
            ),
            ("python xxhash over mmap", py, f"s  {size / py / 1e9:.2f} GB/s"),
        ],
        machine,
    )
    write_json(args.json, {"machine": machine, "results": r})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
