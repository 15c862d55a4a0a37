"""Replica check cost: `fastckpt.distributed.check_replicas` against its floor, a local
`hash_state_dict` plus one all-gather of the packed digests (target: <= 1.5x), and against the
same hash with an `all_gather_object` of ``{key: digest}`` (the alternative exchange). Runs N gloo
processes on the CPU, each holding an identical warm state_dict of about --mb MB; every figure is
the median over --runs (slowest rank, barrier to barrier), the variants interleaved.

    python benchmarks/replica_check.py [--procs 3] [--mb 256] [--tensors 64] [--runs 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import struct
import sys
import tempfile
import time
from typing import Any

from _util import machine_description, print_table, write_json


def _state(mb: float, tensors: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    per = max(1, int(mb * 1e6 / 4 / tensors))
    return {f"layer{i}.weight": torch.randn(per, generator=g) for i in range(tensors)}


def _packed(digests: Any) -> Any:
    import torch

    words = [w for d in digests.values() for w in struct.unpack("<qq", d.value.to_bytes(16, "little"))]
    return torch.tensor(words, dtype=torch.int64)


def _worker(rank: int, world: int, store: str, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist

    from fastckpt import hash_state_dict
    from fastckpt.distributed import check_replicas

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(minutes=10),
    )
    sd = _state(args.mb, args.tensors)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())

    def hash_only() -> None:
        hash_state_dict(sd, threads=args.threads)

    def floor() -> None:
        local = _packed(hash_state_dict(sd, threads=args.threads))
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)

    def object_exchange() -> None:
        d = hash_state_dict(sd, threads=args.threads)
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, {k: v.value for k, v in d.items()})

    def check() -> None:
        report = check_replicas(sd, threads=args.threads)
        assert report.ok, report.format_text()

    # The exchange alone, digests precomputed: check_replicas' two packed all-gathers (32-byte
    # header, then 24 bytes per tensor) against one all_gather_object of {key: digest}.
    digests = hash_state_dict(sd, threads=args.threads)
    packed = torch.tensor(
        [w for d in digests.values() for w in (0, *struct.unpack("<qq", d.value.to_bytes(16, "little")))],
        dtype=torch.int64,
    )
    header = torch.zeros(4, dtype=torch.int64)

    def exchange_packed() -> None:
        for t in (header, packed):
            gathered = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(gathered, t)

    def exchange_object() -> None:
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, {k: v.value for k, v in digests.items()})

    variants = {
        "hash_only": hash_only,
        "floor": floor,
        "object_exchange": object_exchange,
        "check_replicas": check,
        "exchange_packed": exchange_packed,
        "exchange_object": exchange_object,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up: first touch, thread pools, gloo connections
        fn()
    for _ in range(args.runs):
        for name, fn in variants.items():
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            dist.barrier()
            elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            times[name].append(float(elapsed))
    if rank == 0:
        import json

        with open(out, "w") as f:
            json.dump({"nbytes": nbytes, "times": times}, f)
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--mb", type=float, default=256.0, help="MB of float32 tensors per rank")
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="hashing threads per rank (0: all cores)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="fastckpt-replica-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        mp.spawn(
            _worker, args=(args.procs, os.path.join(tmp, "store"), args, out), nprocs=args.procs, join=True
        )
        import json

        with open(out) as f:
            result = json.load(f)

    nbytes = result["nbytes"]
    med = {k: statistics.median(v) for k, v in result["times"].items()}
    ratio = med["check_replicas"] / med["floor"]
    rows = [
        (
            "hash_state_dict only",
            med["hash_only"] * 1e3,
            f"ms  {nbytes / med['hash_only'] / 1e9:.2f} GB/s per rank",
        ),
        (
            "floor: hash + 1 packed all_gather",
            med["floor"] * 1e3,
            f"ms  {nbytes / med['floor'] / 1e9:.2f} GB/s per rank",
        ),
        (
            "hash + all_gather_object",
            med["object_exchange"] * 1e3,
            f"ms  {med['object_exchange'] / med['floor']:.2f}x floor",
        ),
        (
            "check_replicas",
            med["check_replicas"] * 1e3,
            f"ms  {nbytes / med['check_replicas'] / 1e9:.2f} GB/s per rank, {ratio:.3f}x floor (target <= 1.5x)",
        ),
    ]
    rows += [
        (
            "exchange only: 2 packed all_gathers",
            med["exchange_packed"] * 1e3,
            "ms  (what check_replicas sends)",
        ),
        (
            "exchange only: all_gather_object",
            med["exchange_object"] * 1e3,
            f"ms  {med['exchange_object'] / med['exchange_packed']:.2f}x packed",
        ),
    ]
    machine = machine_description()
    print_table(
        f"{args.procs} gloo ranks x {nbytes / 1e6:.0f} MB in {args.tensors} tensors, {args.threads} hash thread(s) per rank",
        rows,
        machine,
    )
    write_json(
        args.json,
        {
            "machine": machine,
            "procs": args.procs,
            "bytes_per_rank": nbytes,
            "tensors": args.tensors,
            "threads": args.threads,
            "median_seconds": med,
            "check_over_floor": ratio,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
