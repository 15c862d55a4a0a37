"""Whole-command cost of parity: `protect` against hash-only, and `repair` of one damaged leaf
against `verify`, on a hot file of >= 2 GiB (in the page cache).

Each command runs in this process through `fastckpt.cli.main` (everything the command does, minus
interpreter start-up), median of several runs on warm data:

  - `fastckpt hash F`                   one native leaf-hash pass (the hash-only peer)
  - `fastckpt protect F --redundancy 0` digests (+ tensor digests for torch files) + sidecar
  - `fastckpt protect F` (5 %)          the same with Reed-Solomon parity, fused with the digests
  - `fastckpt verify F`                 re-hash every leaf and compare
  - `fastckpt repair F`                 one flipped bit: hash, copy + read-back verify of a temp
                                        file, rebuild the leaf from parity, fsync, hard-link the
                                        original to F.damaged, rename (the backup is deleted untimed)
  - peer: copy_file_range of F + fsync  the floor of any repair that writes a new file

Repair phases (hash, copy_and_verify, patch, fsync, commit) come from the report's `timings`; the
fsync of a freshly written multi-GB file is disk-bound and is reported separately. The copy is
timed with copy_file_range and with pwrite from a mapping.

    python benchmarks/repair_throughput.py [--size-gib 2] [--runs 3] [--format opaque|torch] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import time

from _util import hot_file, machine_description, print_table, write_json

BENCH_DIR = "/tmp/repair-bench"


def cli(*argv: str) -> tuple[int, dict]:
    from fastckpt.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    text = out.getvalue()
    return code, (json.loads(text) if text.strip().startswith("{") else {})


def timed(fn, runs: int) -> tuple[float, list]:
    times, results = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), results


def torch_file(path: str, nbytes: int) -> str:
    if not os.path.exists(path) or abs(os.path.getsize(path) - nbytes) > nbytes // 10:
        import torch

        per = nbytes // 8 // 4
        state = {
            f"layers.{i}.weight": torch.randn(per, generator=torch.Generator().manual_seed(i))
            for i in range(8)
        }
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
        del state
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    return path


def flip_bit(path: str, rng: random.Random) -> int:
    size = os.path.getsize(path)
    off = rng.randrange(size)
    with open(path, "r+b") as f:  # the benchmark's own scratch file
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ 1]))
    return off


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--format", choices=["opaque", "torch"], default="opaque")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark file")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    import fastckpt.repair as rp

    nbytes = int(args.size_gib * (1 << 30))
    os.makedirs(BENCH_DIR, exist_ok=True)
    if args.format == "opaque":
        path = hot_file(os.path.join(BENCH_DIR, "bench.bin"), nbytes)
    else:
        path = torch_file(os.path.join(BENCH_DIR, "bench.pt"), nbytes)
    size = os.path.getsize(path)
    gb = size / 1e9
    rng = random.Random(0)
    runs = args.runs

    t_hash, _ = timed(lambda: cli("hash", path, "-q", "--json"), runs)
    t_p0, _ = timed(lambda: cli("protect", path, "-q", "--json", "--redundancy", "0", "--force"), runs)
    t_p5, res = timed(lambda: cli("protect", path, "-q", "--json", "--force"), runs)
    par = res[-1][1]["parity"]
    t_verify, _ = timed(lambda: cli("verify", path, "-q", "--json"), runs)

    def repair_once() -> dict:
        flip_bit(path, rng)
        code, out = cli("repair", path, "-q", "--json")
        assert code == 0 and out["rebuilt_from_parity"] == 1, out
        os.unlink(out["backup"])  # the damaged original (a hard link), outside the repair's own timing
        return out["timings"]

    def plain_copy() -> float:
        """The floor of any copy-then-rename repair: copy the file in the kernel and fsync it."""
        fi = os.open(path, os.O_RDONLY)
        fo = os.open(path + ".copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        t0 = time.perf_counter()
        done = 0
        while done < size:
            done += os.copy_file_range(fi, fo, size - done, done, done)
        t1 = time.perf_counter()
        os.fsync(fo)
        os.close(fi)
        os.close(fo)
        os.unlink(path + ".copy")
        return t1 - t0

    results: dict[str, object] = {}
    repair_rows = []
    for label, in_kernel in (("copy_file_range", True), ("pwrite from mmap", False)):
        rp.COPY_IN_KERNEL = in_kernel
        repair_once()  # warm: the replaced file's pages are hot afterwards
        t_rep, phases = timed(repair_once, runs)
        med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        results[label] = {"total_s": t_rep, **{f"{k}_s": v for k, v in med.items()}}
        no_sync = t_rep - med["fsync"]
        repair_rows += [
            (f"repair 1 leaf ({label}), s", t_rep, f"{t_rep / t_verify:.2f}x verify"),
            ("  without the fsync, s", no_sync, f"{no_sync / t_verify:.2f}x verify"),
            (
                "  phases hash/copy+verify/patch/fsync/commit",
                0.0,
                " / ".join(
                    f"{med.get(k, 0):.3f}" for k in ("hash", "copy_and_verify", "patch", "fsync", "commit")
                ),
            ),
        ]
    rp.COPY_IN_KERNEL = True
    t_cp, copies = timed(plain_copy, runs)
    t_cp_only = statistics.median(copies)
    repair_rows += [
        ("peer: copy_file_range + fsync, s", t_cp, f"{t_cp / t_verify:.2f}x verify"),
        ("  copy alone (page cache), s", t_cp_only, f"{t_cp_only / t_verify:.2f}x verify"),
    ]

    rows = [
        ("fastckpt hash, GB/s", gb / t_hash, f"{t_hash:.3f} s"),
        ("protect --redundancy 0, GB/s", gb / t_p0, f"{t_p0:.3f} s, {t_p0 / t_hash:.2f}x hash"),
        (
            "protect (5% parity), GB/s",
            gb / t_p5,
            f"{t_p5:.3f} s, {t_p5 / t_hash:.2f}x hash, {t_p5 / t_p0:.2f}x protect --redundancy 0; "
            f"k={par['k']} m={par['m']} groups={par['groups']}, {par['bytes'] / 2**20:.1f} MiB parity",
        ),
        ("verify, GB/s", gb / t_verify, f"{t_verify:.3f} s"),
        *repair_rows,
    ]
    print_table(
        f"protect and repair on a hot {args.format} file of {size / 2**30:.2f} GiB (median of {runs}, in-process)",
        rows,
        machine_description(),
    )
    if args.json:
        write_json(
            args.json,
            {
                "size": size,
                "format": args.format,
                "hash_s": t_hash,
                "protect_r0_s": t_p0,
                "protect_r5_s": t_p5,
                "verify_s": t_verify,
                "repair": results,
                "copy_fsync_s": t_cp,
                "copy_s": t_cp_only,
                "machine": machine_description(),
            },
        )
    if not args.keep:
        for p in (path, path + ".fastckpt"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


if __name__ == "__main__":
    main()
