"""GPU check: correctness of the CUDA engine against the CPU engine, and its speed, in one run.

Run on a machine with a CUDA GPU and fastckpt installed with CUDA (docs/PERFORMANCE.md):

    python benchmarks/gpu_check.py --out "$OUT"

Correctness (exit 1 on any mismatch): leaf/tensor digests of CUDA tensors of every dtype and odd
sizes, one large tensor and a 1000-tensor state_dict against the CPU digests of host copies; diff
statistics of CUDA pairs (every dtype, odd sizes, special values, two state_dicts) against the CPU
diff kernel. Speed (median of several warm runs): device-to-device copy (the ceiling), GPU hash of
one >= 1 GiB tensor and of 1000 x 1 MiB, GPU diff of two state_dicts, and copy-to-host + CPU hash.
Prints a table and writes gpu_check.json. Exit 2 when CUDA is unusable or a step fails. Self-
contained on purpose (torch and fastckpt only): it must run first time on a machine nobody has
tried it on.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

DTYPE_NAMES = [
    "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "bool", "uint8", "int8",
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "complex64", "complex128",
]  # fmt: skip
ODD_SIZES = [0, 1, 7, 17, 240, 241, 1023, 1025, 4097, 65535, 65537, 1_000_037, 3_333_331]
GiB = 1 << 30
MiB = 1 << 20
# Targets from the issue, as fractions of the device-to-device copy traffic (bytes read + written per
# second): the memory bandwidth a read-only kernel could at best reach.
TARGETS = {
    "hash_1gib": 0.40,
    "hash_1000x1mib": 0.25,
    "diff_state_dicts": 0.50,
    "fastckpt_diff_state_dicts": 0.50,
}


class Check:
    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.report: dict[str, Any] = {
            "schema": "fastckpt-gpu-check-v1",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "correctness": {},
            "speed": {},
            "errors": [],
            "mismatches": [],
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.elapsed() > self.budget_s

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs one step; an exception is recorded (with its traceback) and the run goes on."""
        t0 = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        try:
            result = fn()
        except Exception as e:
            self.report["errors"].append(
                {"step": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            )
            print(f"   ERROR in {name}: {type(e).__name__}: {e}", flush=True)
            return None
        print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
        return result

    def mismatch(self, what: str, detail: Any) -> None:
        self.report["mismatches"].append({"what": what, "detail": str(detail)[:2000]})
        print(f"   MISMATCH {what}: {str(detail)[:300]}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=os.environ.get("OUT", "."), help="folder for gpu_check.json (default $OUT or .)"
    )
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    ap.add_argument(
        "--large-gib", type=float, default=1.0, help="size of the large tensor in GiB (default 1)"
    )
    ap.add_argument(
        "--runs", type=int, default=10, help="timed runs per GPU measurement (median; default 10)"
    )
    ap.add_argument(
        "--budget", type=float, default=240.0, help="seconds after which optional work is skipped"
    )
    ap.add_argument(
        "--sd-count", type=int, default=1000, help="tensors per benchmark state_dict (default 1000)"
    )
    ap.add_argument(
        "--sd-mib", type=float, default=1.0, help="MiB per benchmark state_dict tensor (default 1)"
    )
    ap.add_argument(
        "--dry-run-on-cpu",
        action="store_true",
        help="exercise this script's logic with CPU tensors and the CPU kernels standing in for the CUDA "
        "entry points (no GPU needed; its figures mean nothing)",
    )
    args = ap.parse_args()

    if args.out.endswith(".json"):
        out_path = args.out
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    else:
        os.makedirs(args.out, exist_ok=True)
        out_path = os.path.join(args.out, "gpu_check.json")
    check = Check(args.budget)
    rep = check.report
    try:
        code = run(check, args)
    except Exception as e:  # anything not caught by a step: still write what we have
        rep["errors"].append(
            {"step": "main", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        )
        code = 2
    rep["seconds"] = round(check.elapsed(), 1)
    if code == 0 and rep["errors"]:
        code = 2
    if rep["mismatches"]:
        code = 1
    rep["ok"] = code == 0
    rep["exit_code"] = code
    with open(out_path + ".tmp", "w") as f:
        json.dump(rep, f, indent=2, default=str)
    os.replace(out_path + ".tmp", out_path)
    print_summary(rep)
    print(
        f"\nwrote {out_path}; exit {code} ({'all correct' if code == 0 else 'see mismatches/errors above'})"
    )
    return code


def run(check: Check, args: argparse.Namespace) -> int:
    import torch

    import fastckpt
    from fastckpt import _native

    rep = check.report
    rep["environment"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "fastckpt": fastckpt.__version__,
        "backends": fastckpt.backends(),
        "cpu_count": os.cpu_count(),
    }
    cuda = rep["environment"]["backends"]["cuda"]
    dry = args.dry_run_on_cpu
    rep["dry_run_on_cpu"] = dry
    if dry:
        install_cpu_stand_ins(_native)
    elif not torch.cuda.is_available():
        rep["errors"].append({"step": "setup", "error": "torch.cuda.is_available() is False"})
        print("torch sees no CUDA device; nothing to check")
        return 2
    if not dry and not cuda.get("usable"):
        rep["errors"].append(
            {"step": "setup", "error": f"fastckpt CUDA backend unusable: {cuda.get('reason')}"}
        )
        print(f"fastckpt's CUDA backend is not usable: {cuda.get('reason')}")
        print(
            "(was it installed with nvcc on PATH, i.e. built with FASTCKPT_CUDA=ON? see docs/PERFORMANCE.md)"
        )
        return 2
    if dry:
        dev = torch.device("cpu")
        rep["environment"]["device"] = {"index": args.device, "name": "cpu (dry run: figures mean nothing)"}
    else:
        dev = torch.device("cuda", args.device)
        torch.cuda.set_device(dev)
        props = torch.cuda.get_device_properties(dev)
        rep["environment"]["device"] = {
            "index": args.device,
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / GiB, 1),
            "multiprocessors": props.multi_processor_count,
        }
        print(
            f"device: {props.name} (sm_{props.major}{props.minor}), torch {torch.__version__} CUDA {torch.version.cuda}"
        )

    def sync() -> None:
        if not dry:
            torch.cuda.synchronize(dev)

    def stream_handle() -> int:
        return 0 if dry else int(torch.cuda.current_stream(dev).cuda_stream)

    dtypes = [(n, getattr(torch, n)) for n in DTYPE_NAMES if hasattr(torch, n)]
    rep["environment"]["dtypes_checked"] = [n for n, _ in dtypes]

    def rand_bytes(nbytes: int, seed: int) -> Any:
        g = torch.Generator(device=dev).manual_seed(seed)
        return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=dev, generator=g)

    def rand_tensor(nbytes: int, dtype: Any, seed: int) -> Any:
        size = torch.empty((), dtype=dtype).element_size()
        raw = rand_bytes(nbytes // size * size, seed)
        if dtype == torch.bool:
            raw &= 1  # copies canonicalize bool bytes other than 0/1
        return raw.view(dtype)

    # ---------------- correctness: hashing ----------------
    def check_hash_dtypes() -> dict[str, Any]:
        cases = 0
        for i, (name, dt) in enumerate(dtypes):
            for j, nbytes in enumerate(ODD_SIZES):
                t = rand_tensor(nbytes, dt, seed=1000 * i + j)
                for leaf in (65536, 4096):
                    got = fastckpt.hash_tensor(t, leaf_size=leaf)
                    want = fastckpt.hash_tensor(t.cpu(), leaf_size=leaf)
                    cases += 1
                    if got != want:
                        check.mismatch(
                            f"hash {name} nbytes={nbytes} leaf={leaf}", f"{got.hex()} != {want.hex()}"
                        )
        # Views: transposed, strided, and odd byte offsets (unaligned data pointers).
        base = rand_tensor(1 << 20, torch.float32, seed=7).reshape(512, 512)
        views = {"transposed": base.t(), "strided": base[::3, 1::2]}
        raw = rand_bytes(300_017, seed=8)
        for off in (1, 3, 8, 13):
            views[f"offset{off}"] = raw[off:]
        for name, v in views.items():
            cases += 1
            if fastckpt.hash_tensor(v) != fastckpt.hash_tensor(v.cpu()):
                check.mismatch(f"hash view {name}", "GPU digest differs from CPU digest")
        # The kernel's own unaligned path (no aligned copy in between).
        stream = stream_handle()
        for off in (1, 5, 9):
            v = raw[off:]
            got = _native.cuda_leaf_digests([(v.data_ptr(), v.numel())], 4096, args.device, stream)[0]
            cases += 1
            host = v.cpu()  # numpy may be absent: read the host copy by address
            if got != _native.leaf_digests_at(host.data_ptr(), host.numel(), 4096):
                check.mismatch(f"kernel unaligned offset {off}", "leaf digests differ")
        return {"cases": cases}

    def check_hash_state_dict() -> dict[str, Any]:
        g = torch.Generator(device="cpu").manual_seed(3)
        sizes = torch.randint(0, 20_000, (1000,), generator=g).tolist()
        sd = {
            f"block{i // 10}.layer{i % 10}.weight": torch.randn(int(n), device=dev).to(torch.bfloat16)
            for i, n in enumerate(sizes)
        }
        gpu = fastckpt.hash_state_dict(sd)
        cpu = fastckpt.hash_state_dict({k: v.cpu() for k, v in sd.items()})
        if gpu.hex() != cpu.hex():
            bad = [k for k in sd if gpu[k] != cpu[k]]
            check.mismatch("hash_state_dict 1000 tensors", f"{len(bad)} tensors differ, e.g. {bad[:5]}")
        return {"tensors": len(sd)}

    def check_side_stream() -> dict[str, Any]:
        if dry:
            return {"skipped": "dry run"}
        s = torch.cuda.Stream(dev)
        with torch.cuda.stream(s):
            t = torch.empty(1 << 24, dtype=torch.float32, device=dev)
            t.fill_(0.5)
            t.mul_(3.0)
            d = fastckpt.hash_tensor(t)
        sync()
        if d != fastckpt.hash_tensor(t.cpu()):
            check.mismatch("hash on a side stream", "digest differs")
        return {"ok": True}

    rep["correctness"]["hash_dtypes_and_sizes"] = check.step(
        "correctness: hash, every dtype x odd sizes, views", check_hash_dtypes
    )
    rep["correctness"]["hash_state_dict_1000"] = check.step(
        "correctness: hash_state_dict of 1000 tensors", check_hash_state_dict
    )
    rep["correctness"]["hash_side_stream"] = check.step(
        "correctness: hash on a side stream", check_side_stream
    )

    # ---------------- correctness: diff ----------------
    def check_diff_dtypes() -> dict[str, Any]:
        cases = 0
        for i, (name, dt) in enumerate(dtypes):
            for j, nbytes in enumerate(ODD_SIZES):
                a = rand_tensor(nbytes, dt, seed=5000 + 100 * i + j)
                for every in (1, 7, 100_003):
                    b = a.clone()
                    flat = b.view(-1).view(torch.uint8)
                    if flat.numel():
                        idx = torch.arange(0, flat.numel(), every, device=dev)
                        flat[idx] ^= 1 if dt == torch.bool else 0x41
                    got = fastckpt.compare_tensors(a, b)
                    want = fastckpt.compare_tensors(a.cpu(), b.cpu())
                    cases += 1
                    if got != want:
                        check.mismatch(f"diff {name} nbytes={nbytes} every={every}", f"{got} != {want}")
        # Realistic updates with NaN/Inf and signed zeros.
        for name in ("float32", "bfloat16", "float16", "float64"):
            dt = getattr(torch, name)
            a = torch.randn(2_000_003, device=dev).to(dt)
            b = (a.float() + 1e-3 * torch.randn_like(a.float())).to(dt)
            b[::13] = a[::13]
            b[5] = float("nan")
            a[6] = float("inf")
            b[7] = -0.0
            a[7] = 0.0
            cases += 1
            got, want = fastckpt.compare_tensors(a, b), fastckpt.compare_tensors(a.cpu(), b.cpu())
            if got != want:
                check.mismatch(f"diff realistic {name}", f"{got} != {want}")
        return {"cases": cases}

    rep["correctness"]["diff_dtypes_and_sizes"] = check.step(
        "correctness: diff, every dtype x odd sizes", check_diff_dtypes
    )

    # ---------------- speed ----------------
    speed = rep["speed"]
    runs = max(3, args.runs)

    def timed(fn: Callable[[], Any], n: int, warmup: int = 2) -> list[float]:
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return times

    def record(key: str, what: str, nbytes_read: int, times: list[float], note: str = "") -> dict[str, Any]:
        med = statistics.median(times)
        entry = {
            "what": what,
            "bytes": nbytes_read,
            "median_s": med,
            "best_s": min(times),
            "runs": len(times),
            "GBps": nbytes_read / med / 1e9,
            "note": note,
        }
        speed[key] = entry
        print(f"   {what}: {entry['GBps']:.1f} GB/s (median of {len(times)}, {med * 1e3:.3f} ms)", flush=True)
        return entry

    large_bytes = int(args.large_gib * GiB) // 16 * 16
    stream = stream_handle()

    def bench_copy() -> None:
        src = rand_bytes(large_bytes, seed=11)
        dst = torch.empty_like(src)
        times = timed(lambda: dst.copy_(src), runs)
        e = record(
            "d2d_copy",
            "device-to-device copy (read + write traffic)",
            2 * large_bytes,
            times,
            "bytes counted = read + written; this is the ceiling the ratios use",
        )
        e["copied_GBps"] = large_bytes / e["median_s"] / 1e9

    check.step("speed: device-to-device copy", bench_copy)

    state: dict[str, Any] = {}

    def bench_hash_large() -> None:
        t = rand_bytes(large_bytes, seed=12).view(torch.bfloat16)
        state["large"] = t
        jobs = [(t.data_ptr(), large_bytes)]
        record(
            "hash_1gib_kernel",
            f"GPU hash, one {large_bytes / GiB:.2f} GiB tensor (native call)",
            large_bytes,
            timed(lambda: _native.cuda_leaf_digests(jobs, 65536, args.device, stream), runs),
        )
        record(
            "hash_1gib",
            f"GPU hash, one {large_bytes / GiB:.2f} GiB tensor (fastckpt.hash_tensor)",
            large_bytes,
            timed(lambda: fastckpt.hash_tensor(t), runs),
        )
        got = fastckpt.hash_tensor(t)
        want = fastckpt.hash_tensor(t.cpu())
        rep["correctness"]["hash_large_tensor"] = {"bytes": large_bytes, "equal": got == want}
        if got != want:
            check.mismatch("hash large tensor", f"{got.hex()} != {want.hex()}")

    check.step("speed + correctness: hash one large tensor", bench_hash_large)

    per_tensor = max(1, int(args.sd_mib * MiB) // 2)  # bf16 elements
    sd_label = f"{args.sd_count} x {args.sd_mib:g} MiB"

    def make_state_dict(seed: int) -> dict[str, Any]:
        g = torch.Generator(device=dev).manual_seed(seed)
        flat = torch.randn(args.sd_count * per_tensor, device=dev, generator=g).to(torch.bfloat16)
        return {
            f"layers.{i}.weight": flat[i * per_tensor : (i + 1) * per_tensor].clone()
            for i in range(args.sd_count)
        }

    def bench_hash_state_dict() -> None:
        sd = make_state_dict(13)
        state["sd_a"] = sd
        total = sum(v.numel() * v.element_size() for v in sd.values())
        jobs = [(v.data_ptr(), v.numel() * v.element_size()) for v in sd.values()]
        record(
            "hash_1000x1mib_kernel",
            f"GPU hash, {sd_label} (native call, one launch)",
            total,
            timed(lambda: _native.cuda_leaf_digests(jobs, 65536, args.device, stream), runs),
        )
        record(
            "hash_1000x1mib",
            f"GPU hash, {sd_label} (fastckpt.hash_state_dict)",
            total,
            timed(lambda: fastckpt.hash_state_dict(sd), max(3, runs // 2)),
            "includes per-tensor Python work (views, digest messages)",
        )

    check.step("speed: hash a 1000 x 1 MiB state_dict", bench_hash_state_dict)

    def bench_diff() -> None:
        a = state.get("sd_a") or make_state_dict(13)
        same = {k: v.clone() for k, v in a.items()}
        changed = {k: (v.float() + 1e-3 * torch.randn_like(v.float())).to(v.dtype) for k, v in a.items()}
        total = 2 * sum(v.numel() * v.element_size() for v in a.values())
        for label, b in (("equal", same), ("all_changed", changed)):
            jobs = [(a[k].data_ptr(), b[k].data_ptr(), a[k].numel() * 2, "bfloat16") for k in a]
            record(
                f"diff_state_dicts_{label}_kernel",
                f"GPU diff, 2 x {sd_label} bf16, {label} (native call)",
                total,
                timed(lambda jobs=jobs: _native.cuda_diff(jobs, args.device, stream), runs),
                "bytes = both operands",
            )
            pairs = [(a[k], b[k]) for k in a]
            record(
                f"diff_state_dicts_{label}",
                f"GPU diff, 2 x {sd_label} bf16, {label} (fastckpt.compare_many)",
                total,
                timed(lambda pairs=pairs: fastckpt.compare_many(pairs), max(3, runs // 2)),
            )
            got = fastckpt.compare_many(pairs)
            want = fastckpt.compare_many([(x.cpu(), y.cpu()) for x, y in pairs])
            key = f"diff_state_dicts_{label}"
            rep["correctness"][key] = {"pairs": len(pairs), "equal": got == want}
            if got != want:
                bad = [i for i, (x, y) in enumerate(zip(got, want, strict=True)) if x != y]
                check.mismatch(key, f"{len(bad)} pairs differ, first {got[bad[0]]} != {want[bad[0]]}")
        large = state.get("large")
        if large is not None:
            other = large.clone()
            other.view(torch.uint8)[::4096] ^= 1
            jobs = [(large.data_ptr(), other.data_ptr(), large.numel() * 2, "bfloat16")]
            record(
                "diff_1gib_kernel",
                f"GPU diff, 2 x {large_bytes / GiB:.2f} GiB bf16, sparse changes (native call)",
                2 * large_bytes,
                timed(lambda: _native.cuda_diff(jobs, args.device, stream), runs),
            )
            got, want = (
                fastckpt.compare_tensors(large, other),
                fastckpt.compare_tensors(large.cpu(), other.cpu()),
            )
            rep["correctness"]["diff_large"] = {"equal": got == want}
            if got != want:
                check.mismatch("diff large tensors", f"{got} != {want}")

    check.step("speed + correctness: diff two 1000 x 1 MiB state_dicts", bench_diff)

    def bench_fastckpt_diff() -> None:
        # fastckpt.diff on two GPU state_dicts (model + optimizer moments), half the tensors changed:
        # the whole user-facing path (keys, kernel, ||A|| for relative change, report), on the device.
        a = state.get("sd_a") or make_state_dict(13)
        half = len(a) // 2
        ckpt_a = {
            "model": a,
            "optimizer": {"state": {0: {"exp_avg": a["layers.0.weight"].clone()}}},
            "step": 10,
        }
        # every element of an even-numbered tensor changes (randn + 1 never rounds back in bf16)
        b = {k: (v if i % 2 else (v.float() + 1.0).to(v.dtype)) for i, (k, v) in enumerate(a.items())}
        ckpt_b = {
            "model": b,
            "optimizer": {"state": {0: {"exp_avg": a["layers.0.weight"].clone()}}},
            "step": 11,
        }
        total = 2 * sum(v.numel() * v.element_size() for v in a.values())
        to_host = {"calls": 0}
        real_cpu, real_to = torch.Tensor.cpu, torch.Tensor.to

        def counting_cpu(self: Any, *args: Any, **kw: Any) -> Any:
            to_host["calls"] += 1
            return real_cpu(self, *args, **kw)

        def counting_to(self: Any, *args: Any, **kw: Any) -> Any:
            target = args[0] if args else kw.get("device")
            if self.device.type == "cuda" and str(target).startswith("cpu"):
                to_host["calls"] += 1
            return real_to(self, *args, **kw)

        torch.Tensor.cpu, torch.Tensor.to = counting_cpu, counting_to  # type: ignore[method-assign]
        try:
            got = fastckpt.diff(ckpt_a, ckpt_b)
        finally:
            torch.Tensor.cpu, torch.Tensor.to = real_cpu, real_to  # type: ignore[method-assign]
        record(
            "fastckpt_diff_state_dicts",
            f"fastckpt.diff, 2 x {sd_label} bf16 nested checkpoints, {half} tensors changed",
            total,
            timed(lambda: fastckpt.diff(ckpt_a, ckpt_b), max(3, runs // 2), warmup=1),
            "bytes = both operands; includes ||A|| of the changed tensors and the report",
        )

        def host(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: host(v) for k, v in x.items()}
            return x.cpu() if isinstance(x, torch.Tensor) else x

        want = fastckpt.diff(host(ckpt_a), host(ckpt_b))
        keys = ("key", "status", "n_different", "first_diff_index", "max_abs_diff", "max_ulp")
        same = [{k: t.to_json()[k] for k in keys} for t in got.tensors] == [
            {k: t.to_json()[k] for k in keys} for t in want.tensors
        ] and [v.to_json() for v in got.values] == [v.to_json() for v in want.values]
        changed = sorted(t.key for t in got.tensors if t.status != "equal")
        expected = sorted(f"model.{k}" for i, k in enumerate(a) if i % 2 == 0)
        rep["correctness"]["fastckpt_diff_state_dicts"] = {
            "same_as_cpu": same,
            "changed_keys_ok": changed == expected,
            "device_to_host_tensor_copies": to_host["calls"],
        }
        if not same or changed != expected:
            check.mismatch(
                "fastckpt.diff on GPU state_dicts",
                f"same_as_cpu={same}, changed_keys_ok={changed == expected}",
            )
        if to_host["calls"] and not dry:
            check.mismatch(
                "fastckpt.diff on GPU state_dicts", f"{to_host['calls']} device-to-host tensor copies"
            )

    check.step("speed + correctness: fastckpt.diff of two GPU state_dicts", bench_fastckpt_diff)

    def bench_host_path() -> None:
        t = state.get("large")
        if t is None:
            t = rand_bytes(large_bytes, seed=12)
        n = 3
        record(
            "host_copy_then_cpu_hash",
            "copy to host (pageable) + CPU hash",
            large_bytes,
            timed(lambda: fastckpt.hash_tensor(t.cpu()), n, warmup=1),
            "t.cpu() then the CPU backend on all cores",
        )
        pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=not dry)

        def pinned_path() -> None:
            pinned.copy_(t)
            fastckpt.hash_tensor(pinned)

        record(
            "host_pinned_copy_then_cpu_hash",
            "copy to pinned host buffer + CPU hash",
            large_bytes,
            timed(pinned_path, n, warmup=1),
            "best case for the host path",
        )

    if check.out_of_time():
        rep["errors"].append({"step": "host path", "error": "skipped: time budget spent"})
    else:
        check.step("speed: copy to host + CPU hash (the alternative)", bench_host_path)

    state.clear()
    if not dry:
        torch.cuda.empty_cache()

    # ---------------- ratios and targets ----------------
    copy = speed.get("d2d_copy", {}).get("GBps")
    ratios: dict[str, Any] = {}
    if copy:
        for key, target in TARGETS.items():
            for variant in (
                key,
                key + "_kernel",
                key + "_equal_kernel",
                key + "_all_changed_kernel",
                key + "_equal",
                key + "_all_changed",
            ):
                if variant in speed:
                    r = speed[variant]["GBps"] / copy
                    ratios[variant] = {"ratio_to_copy": round(r, 3), "target": target, "met": r >= target}
    host = speed.get("host_pinned_copy_then_cpu_hash", {}).get("GBps")
    if host and "hash_1gib" in speed:
        r = speed["hash_1gib"]["GBps"] / host
        ratios["hash_1gib_vs_host_path"] = {"ratio": round(r, 1), "target": 20.0, "met": r >= 20.0}
    rep["targets"] = ratios
    return 0


def install_cpu_stand_ins(native: Any) -> None:
    """--dry-run-on-cpu: the CUDA entry points answer with the CPU kernels, so that every line of
    this script runs (with CPU tensors) on a machine without a GPU."""
    leaf_at, diff_at = native.leaf_digests_at, native.diff_buffers_at

    def cuda_leaf_digests(jobs: Any, leaf_size: int, device: int, stream: int) -> list[bytes]:
        return [leaf_at(addr, n, leaf_size) for addr, n in jobs]

    def cuda_diff(pairs: Any, device: int, stream: int) -> list[Any]:
        return [diff_at(a, b, n, dtype) for a, b, n, dtype in pairs]

    native.cuda_leaf_digests = cuda_leaf_digests
    native.cuda_diff = cuda_diff


def print_summary(rep: dict[str, Any]) -> None:
    dev = rep.get("environment", {}).get("device", {}).get("name", "?")
    print(f"\nfastckpt GPU check on {dev} ({rep.get('date')}), {rep.get('seconds')} s")
    speed = rep.get("speed", {})
    copy = speed.get("d2d_copy", {}).get("GBps")
    if speed:
        print(f"  {'measurement':<72} {'GB/s':>9} {'x copy':>7}")
        for e in speed.values():
            ratio = f"{e['GBps'] / copy:7.2f}" if copy else "       "
            print(f"  {e['what']:<72} {e['GBps']:9.1f} {ratio}")
    for key, t in rep.get("targets", {}).items():
        val = t.get("ratio_to_copy", t.get("ratio"))
        print(f"  target {key:<40} {val!s:>8} (target {t['target']}) {'met' if t['met'] else 'NOT met'}")
    for key, c in rep.get("correctness", {}).items():
        print(f"  correctness {key}: {'ran' if c is not None else 'FAILED TO RUN'} {c if c else ''}")
    print(f"  mismatches: {len(rep.get('mismatches', []))}, errors: {len(rep.get('errors', []))}")
    for e in rep.get("errors", []):
        print(f"    error in {e['step']}: {e['error']}")
    if any(math.isnan(e.get("GBps", 0.0)) for e in speed.values()):
        print("  (some measurements are NaN)")


if __name__ == "__main__":
    sys.exit(main())
