"""`fastckpt report` on a run of 10 checkpoints of ~200 MB each against verifying them all.

The run is written once under /tmp/report-bench-run/: torch.save of a 200 MB model state
(float32 layers, a bfloat16 head, a frozen float32 embedding), 10 steps apart, every trainable
tensor changing at every step. It is read once so it sits in the page cache. Measured in process,
median of --runs runs, alternating the two operations:

  with sidecars (after `fastckpt protect RUN`):
    verify all   fastckpt.verify.verify_path(RUN): every leaf of every file re-hashed and compared
    report       fastckpt.report.build_report(RUN): digests from the sidecars, every tensor read for
                 its relative change, compressibility samples, interval, cost
  without sidecars:
    verify all   the structural check of every file (zip records + CRC-32)
    report       the same report, hashing every file for the dedup analysis

Prints seconds, GB/s over the run's bytes and the ratio report / verify-all (target <= 2).

    python benchmarks/report_vs_verify.py [--checkpoints 10] [--mb 200] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

from _util import machine_description, print_table, write_json

RUN_DIR = "/tmp/report-bench-run"


def make_run(folder: str, n: int, mb: int) -> list[str]:
    import torch

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"step_{(i + 1) * 1000}.pt") for i in range(n)]
    if all(os.path.exists(p) for p in paths) and abs(os.path.getsize(paths[0]) - mb * 10**6) < 2 * 10**6:
        return paths
    gen = torch.Generator().manual_seed(0)
    total = mb * 10**6
    hidden = 2048
    embed_rows = total // 10 // (4 * hidden)  # 10%: frozen embedding
    head_rows = total // 10 // (2 * hidden)  # 10%: bfloat16 head
    layer_bytes = total - embed_rows * hidden * 4 - head_rows * hidden * 2
    n_layers = 12
    layer_rows = layer_bytes // n_layers // (4 * hidden)
    state = {"embed.weight": torch.randn(embed_rows, hidden, generator=gen)}
    for i in range(n_layers):
        state[f"layers.{i}.weight"] = torch.randn(layer_rows, hidden, generator=gen) * 0.02
    state["head.weight"] = (torch.randn(head_rows, hidden, generator=gen) * 0.02).to(torch.bfloat16)
    for step, path in enumerate(paths):
        if step:
            for key, t in state.items():
                if key != "embed.weight":
                    t.add_((torch.randn(t.shape, generator=gen) * 1e-4).to(t.dtype))
        torch.save({"model": state, "step": (step + 1) * 1000}, path + ".tmp")
        os.replace(path + ".tmp", path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--keep", action="store_true", help=f"keep {RUN_DIR} for the next run")
    args = ap.parse_args()

    from fastckpt.protect import protect_dir
    from fastckpt.report import build_report
    from fastckpt.verify import verify_path

    paths = make_run(RUN_DIR, args.checkpoints, args.mb)
    total = sum(os.path.getsize(p) for p in paths)
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass

    def alternate(a, b, runs: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        a(), b()  # warm-up
        ta, tb = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            a()
            ta.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b()
            tb.append(time.perf_counter() - t0)
        return statistics.median(ta), statistics.median(tb)

    # Without sidecars: structural verify against a report that hashes every file.
    for p in paths:
        if os.path.exists(p + ".fastckpt"):
            os.unlink(p + ".fastckpt")
    if os.path.exists(os.path.join(RUN_DIR, ".fastckpt-dir")):
        os.unlink(os.path.join(RUN_DIR, ".fastckpt-dir"))
    v_plain, r_plain = alternate(
        lambda: [verify_path(p) for p in paths], lambda: build_report(RUN_DIR), args.runs
    )

    # With sidecars.
    protect_dir(RUN_DIR)
    v_side, r_side = alternate(lambda: verify_path(RUN_DIR), lambda: build_report(RUN_DIR), args.runs)
    r = build_report(RUN_DIR)
    assert all(c["digests"] == "sidecar" for c in r["checkpoints"])
    timings = {k: round(v, 3) for k, v in r["timings"].items()}

    gb = total / 1e9
    results = {
        "checkpoints": len(paths),
        "total_bytes": total,
        "with_sidecars": {"verify_all_s": v_side, "report_s": r_side, "ratio": r_side / v_side},
        "without_sidecars": {"verify_all_s": v_plain, "report_s": r_plain, "ratio": r_plain / v_plain},
        "report_phases_s": timings,
        "shared_fraction": r["dedup"]["shared_fraction"],
    }
    rows = [
        ("sidecars: verify all", v_side, f"s ({gb / v_side:.2f} GB/s)"),
        ("sidecars: report", r_side, f"s ({gb / r_side:.2f} GB/s)"),
        ("sidecars: report / verify all", r_side / v_side, "(target <= 2)"),
        ("no sidecars: verify all (structural)", v_plain, f"s ({gb / v_plain:.2f} GB/s)"),
        ("no sidecars: report (hashes all)", r_plain, f"s ({gb / r_plain:.2f} GB/s)"),
        ("no sidecars: report / verify all", r_plain / v_plain, ""),
    ]
    print_table(
        f"report vs verify, {len(paths)} checkpoints x {total / len(paths) / 1e6:.0f} MB (hot)",
        rows,
        machine_description(),
    )
    print(f"  report phases with sidecars: {timings}")
    write_json(args.json, {"machine": machine_description(), "results": results})
    if not args.keep:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
