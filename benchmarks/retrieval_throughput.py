"""Verify of the same checkpoint from local disk and from an S3-compatible server, against a plain
parallel download of the same object.

A torch.save checkpoint (default 256 MiB) and its sidecar are written under
/tmp/retrieval-bench/, with a copy that has one bit flipped (at 50% of the file by default). moto's
standalone S3 server is started on loopback, in its own process, and both files are uploaded;
every remote read goes through the real s3fs client. Measured, in process, median of --runs runs (warm: page cache and
the server's copy):

  local verify        fastckpt.verify.verify_path(file) with its sidecar (mmap, all cores)
  remote verify       the same for s3://... (parallel ranged reads feeding the native hasher)
  plain download      the object fetched with the same number of parallel ranged GETs through
                      s3fs and discarded (no hashing): the bound for remote verify
  s3fs cat_ranges     s3fs's own batched parallel ranged read of the whole object
  first damage        time until the first damaged leaf of the damaged copy is reported (local
                      streaming hash and remote streaming verify), and the full verify time

Prints MB/s (1e6 bytes/s) and the ratio remote verify / plain download (target >= 0.5). moto's
server is slow (for every ranged GET it reads the whole stored object), so absolute remote figures
are bound by the server; the ratio, measured against the same server, is the meaningful figure.

    python benchmarks/retrieval_throughput.py [--size-mib 256] [--runs 3] [--damage-at 0.5] [--chunk-mib 8]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _util import machine_description, print_table, write_json

BENCH_DIR = "/tmp/retrieval-bench"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def make_checkpoint(path: str, size: int) -> None:
    import torch

    if os.path.exists(path) and abs(os.path.getsize(path) - size) < (1 << 20):
        return
    gen = torch.Generator().manual_seed(0)
    n = size // 4 // 8
    state = {f"layers.{i}.weight": torch.randn(n, generator=gen) for i in range(8)}
    torch.save({"model": state, "step": 1}, path + ".tmp")
    os.replace(path + ".tmp", path)


def flip_bit(src: str, dst: str, offset: int) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 1]))


def median(fn, runs: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def local_first_damage(path: str, expected: bytes, leaf_size: int) -> float:
    from fastckpt import remote

    t0 = time.perf_counter()
    for first, leaves in remote.iter_leaf_digests(path, leaf_size):
        if leaves != expected[8 * first : 8 * first + len(leaves)]:
            return time.perf_counter() - t0
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--damage-at", type=float, default=0.5, help="where the flipped bit is, as a fraction of the file"
    )
    ap.add_argument(
        "--chunk-mib", type=int, default=8, help="bytes per ranged GET, for verify and download alike"
    )
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    from fastckpt import remote
    from fastckpt.protect import protect_file
    from fastckpt.remote_verify import verify_url_file
    from fastckpt.sidecar import read_sidecar
    from fastckpt.verify import verify_path
    from remote_helpers import s3_server

    remote.CHUNK = args.chunk_mib << 20
    os.makedirs(BENCH_DIR, exist_ok=True)
    path = os.path.join(BENCH_DIR, "checkpoint.pt")
    make_checkpoint(path, args.size_mib << 20)
    protect_file(path)
    size = os.path.getsize(path)
    damaged = os.path.join(BENCH_DIR, "damaged.pt")
    flip_bit(path, damaged, int(size * args.damage_at))
    shutil.copyfile(path + ".fastckpt", damaged + ".fastckpt")
    manifest = read_sidecar(path + ".fastckpt").manifest
    leaf = manifest.leaf_size

    results: dict[str, float] = {}
    with s3_server(own_process=True) as s3:
        s3.upload(path, "s3://bench/checkpoint.pt")
        s3.upload(path + ".fastckpt", "s3://bench/checkpoint.pt.fastckpt")
        s3.upload(damaged, "s3://bench/damaged.pt")
        s3.upload(damaged + ".fastckpt", "s3://bench/damaged.pt.fastckpt")
        url = "s3://bench/checkpoint.pt"

        # Warm up: the page cache, the server's copy, the client's connection pool.
        assert verify_path(path)["ok"]
        assert verify_path(url)["ok"]

        reader = remote.open_reader(url)
        ranges = [(o, min(remote.CHUNK, size - o)) for o in range(0, size, remote.CHUNK)]

        def plain_download() -> None:
            with ThreadPoolExecutor(remote.CONCURRENCY) as pool:
                for data in pool.map(
                    lambda r: reader.fs.cat_file(reader.fspath, start=r[0], end=r[0] + r[1]), ranges
                ):
                    assert len(data) > 0

        def cat_ranges() -> None:
            out = reader.fs.cat_ranges(
                [reader.fspath] * len(ranges), [o for o, _ in ranges], [o + n for o, n in ranges]
            )
            assert sum(len(x) for x in out) == size

        # The server's speed drifts (moto copies the whole object for every ranged GET), so the three
        # remote measurements are interleaved run by run and their medians compared.
        times: dict[str, list[float]] = {"remote": [], "plain": [], "cat": []}
        for _ in range(args.runs):
            for name, fn in (
                ("remote", lambda: verify_path(url)),
                ("plain", plain_download),
                ("cat", cat_ranges),
            ):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        t_remote, t_plain, t_cat = (statistics.median(times[k]) for k in ("remote", "plain", "cat"))
        t_local, _ = median(lambda: verify_path(path), args.runs)
        reader.close()

        firsts: list[float] = []

        def damaged_remote() -> None:
            r = verify_url_file("s3://bench/damaged.pt", on_damage=lambda leaf_index, t: firsts.append(t))
            assert not r["ok"]

        t_damaged_remote, _ = median(damaged_remote, args.runs)
        first_remote = statistics.median(firsts)
        first_local = statistics.median(
            local_first_damage(damaged, manifest.leaf_bytes, leaf) for _ in range(args.runs)
        )
        t_damaged_local, _ = median(lambda: verify_path(damaged), args.runs)

    gb = size / 1e9
    results = {
        "size_bytes": size,
        "chunk_bytes": remote.CHUNK,
        "concurrency": remote.CONCURRENCY,
        "local_verify_gbps": gb / t_local,
        "remote_verify_gbps": gb / t_remote,
        "plain_parallel_download_gbps": gb / t_plain,
        "s3fs_cat_ranges_gbps": gb / t_cat,
        "remote_verify_vs_plain_download": t_plain / t_remote,
        "remote_verify_vs_best_download": min(t_plain, t_cat) / t_remote,
        "damage_at_fraction": args.damage_at,
        "local_first_damage_seconds": first_local,
        "local_damaged_verify_seconds": t_damaged_local,
        "remote_first_damage_seconds": first_remote,
        "remote_damaged_verify_seconds": t_damaged_remote,
    }
    rows = [
        ("local verify", 1000 * results["local_verify_gbps"], "MB/s (sidecar, mmap)"),
        (
            "remote verify (S3, moto)",
            1000 * results["remote_verify_gbps"],
            "MB/s (parallel ranged reads -> native hash)",
        ),
        (
            "plain parallel download",
            1000 * results["plain_parallel_download_gbps"],
            f"MB/s ({remote.CONCURRENCY} ranged GETs in flight)",
        ),
        ("s3fs cat_ranges", 1000 * results["s3fs_cat_ranges_gbps"], "MB/s (async batched ranged reads)"),
        ("remote verify / plain download", results["remote_verify_vs_plain_download"], "(target >= 0.5)"),
        ("remote verify / best download", results["remote_verify_vs_best_download"], ""),
        (
            "local: first damaged leaf",
            first_local,
            f"s (full verify {t_damaged_local:.3f} s; damage at {args.damage_at:.0%})",
        ),
        ("remote: first damaged leaf", first_remote, f"s (full verify {t_damaged_remote:.3f} s)"),
    ]
    print_table(
        f"retrieval throughput, {size / 2**20:.0f} MiB torch.save checkpoint", rows, machine_description()
    )
    write_json(args.json, {"machine": machine_description(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
