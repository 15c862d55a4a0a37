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
import resource
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
    ap.add_argument(
        "--dir",
        default=BENCH_DIR,
        help=f"folder for the hot file (default {BENCH_DIR}); put it on XFS/btrfs to time reflink clones",
    )
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    import fastckpt.repair as rp

    nbytes = int(args.size_gib * (1 << 30))
    os.makedirs(args.dir, exist_ok=True)
    if args.format == "opaque":
        path = hot_file(os.path.join(args.dir, "bench.bin"), nbytes)
    else:
        path = torch_file(os.path.join(args.dir, "bench.pt"), nbytes)
    size = os.path.getsize(path)
    gb = size / 1e9
    rng = random.Random(0)
    runs = args.runs

    def run(*argv: str) -> tuple[float, float, dict]:
        """(wall s, CPU s of this process and its threads, JSON) of one command."""
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        code, out = cli(*argv)
        t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        assert code == 0, (argv, out)
        return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), out

    copy_methods: set[str] = set()

    def repair_once() -> tuple[float, float, dict]:
        flip_bit(path, rng)
        t, cpu, out = run("repair", path, "-q", "--json")
        assert out["rebuilt_from_parity"] == 1, out
        os.unlink(out["backup"])  # the damaged original (a hard link): deleting it is not timed
        copy_methods.add(out["copy"])
        return t, cpu, out["timings"]

    def plain_copy() -> tuple[float, float]:
        """The floor of any copy-then-rename repair: copy the file in the kernel, then fsync it."""
        fi = os.open(path, os.O_RDONLY)
        fo = os.open(path + ".copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        t0 = time.perf_counter()
        done = 0
        while done < size:
            done += os.copy_file_range(fi, fo, size - done, done, done)
        t1 = time.perf_counter()
        os.fsync(fo)
        t2 = time.perf_counter()
        os.close(fi)
        os.close(fo)
        os.unlink(path + ".copy")
        return t2 - t0, t1 - t0

    # Rounds interleave the commands, so that load from other processes on a shared machine hits
    # them alike; ratios are taken per round, then the median over rounds is reported. Each command
    # runs once unmeasured right before its measured run (steady state: the file is hot for all).
    cli("protect", path, "-q", "--json", "--force")
    repair_once()  # warm-up: afterwards the (replaced) file's pages are hot
    rounds: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rounds.setdefault(key, []).append(value)

    phases: list[dict] = []
    for _ in range(runs):
        for key, argv in (
            # Text output: `hash --json` also encodes every leaf digest, which is not hashing.
            ("hash", ("hash", path, "-q")),
            ("protect0", ("protect", path, "-q", "--json", "--redundancy", "0", "--force")),
            ("protect5", ("protect", path, "-q", "--json", "--force")),
            ("verify", ("verify", path, "-q", "--json")),
        ):
            # Once unmeasured first: the previous round's repair replaced the file (under a reflink
            # clone its pages start cold), and on our VMs memory idle for ~1 s costs extra to touch.
            run(*argv)
            t, cpu, out = run(*argv)
            add(key, t)
            add(key + "_cpu", cpu)
            if key == "protect5":
                par = out["parity"]
        rp.COPY_IN_KERNEL = True
        t, cpu, ph = repair_once()
        add("repair", t)
        add("repair_cpu", cpu)
        add("repair_nosync", t - ph["fsync"])
        phases.append(ph)
        rp.COPY_IN_KERNEL = False
        add("repair_pwrite", repair_once()[0])
        rp.COPY_IN_KERNEL = True
        t_cp, t_cp_only = plain_copy()
        add("copy_fsync", t_cp)
        add("copy", t_cp_only)
        r = {k: v[-1] for k, v in rounds.items()}
        add("r_p5_hash", r["protect5"] / r["hash"])
        add("r_p5_p0", r["protect5"] / r["protect0"])
        add("r_p5_hash_cpu", r["protect5_cpu"] / r["hash_cpu"])
        add("r_rep_verify", r["repair"] / r["verify"])
        add("r_rep_nosync_verify", r["repair_nosync"] / r["verify"])
        add("r_rep_verify_cpu", r["repair_cpu"] / r["verify_cpu"])
        add("r_copy_verify", r["copy_fsync"] / r["verify"])
        add("r_rep_copy", r["repair"] / r["copy_fsync"])

    med = {k: statistics.median(v) for k, v in rounds.items()}
    ph = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    rows = [
        ("fastckpt hash, GB/s", gb / med["hash"], f"{med['hash']:.3f} s (CPU {med['hash_cpu']:.3f} s)"),
        ("protect --redundancy 0, GB/s", gb / med["protect0"], f"{med['protect0']:.3f} s"),
        (
            "protect (5% parity), GB/s",
            gb / med["protect5"],
            f"{med['protect5']:.3f} s (CPU {med['protect5_cpu']:.3f} s); "
            f"k={par['k']} m={par['m']} groups={par['groups']}, {par['bytes'] / 2**20:.1f} MiB parity",
        ),
        ("  protect (5%) / hash, wall", med["r_p5_hash"], "median of per-round ratios"),
        ("  protect (5%) / hash, CPU", med["r_p5_hash_cpu"], ""),
        ("  protect (5%) / protect --redundancy 0, wall", med["r_p5_p0"], ""),
        ("verify, GB/s", gb / med["verify"], f"{med['verify']:.3f} s (CPU {med['verify_cpu']:.3f} s)"),
        (
            "repair 1 leaf, s",
            med["repair"],
            f"CPU {med['repair_cpu']:.3f} s; temporary file made by {'/'.join(sorted(copy_methods))}",
        ),
        ("  repair / verify, wall", med["r_rep_verify"], ""),
        ("  repair without its fsync / verify, wall", med["r_rep_nosync_verify"], ""),
        ("  repair / verify, CPU", med["r_rep_verify_cpu"], ""),
        (
            "  phases: hash, copy+verify, patch, fsync, commit (s)",
            0.0,
            " / ".join(
                f"{ph.get(k, 0):.3f}" for k in ("hash", "copy_and_verify", "patch", "fsync", "commit")
            ),
        ),
        ("repair 1 leaf, pwrite from mmap instead of copy_file_range, s", med["repair_pwrite"], ""),
        (
            "peer: copy_file_range + fsync of the file, s",
            med["copy_fsync"],
            f"copy alone {med['copy']:.3f} s",
        ),
        ("  (copy + fsync) / verify, wall", med["r_copy_verify"], "the floor of a copy-then-rename repair"),
        ("  repair / (copy + fsync), wall", med["r_rep_copy"], ""),
    ]
    print_table(
        f"protect and repair on a hot {args.format} file of {size / 2**30:.2f} GiB (median of {runs} rounds, in-process)",
        rows,
        machine_description(),
    )
    if args.json:
        write_json(
            args.json,
            {
                "size": size,
                "format": args.format,
                "medians": med,
                "repair_phases": ph,
                "machine": machine_description(),
            },
        )
    if not args.keep:
        for p in (path, path + ".fastckpt"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


if __name__ == "__main__":
    main()
