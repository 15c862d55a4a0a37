"""Fault campaign: detection and repair rates of fastckpt under injected faults (docs/RELIABILITY.md).

For each sample format (torch zip, safetensors, DCP folder, opaque bytes) and each fault kind of
`fastckpt.faults` (bit flip, multi-bit burst, zeroed 4 KiB page, overwritten range, truncation,
appended garbage, one sidecar copy damaged, both copies damaged, damaged parity), it runs seeded
trials: protect a sample, inject one fault into a copy, run `fastckpt verify` and `fastckpt repair`
in-process, and check the promises (see `fastckpt.faults.run_trial`):

  - detected:  verify exits 1 (2 when both sidecar copies are damaged; for a damaged sidecar copy or
               parity of an intact file it exits 0 and reports `sidecar_damaged`);
  - within the budget (from the bytes and the parity rule of FORMAT.md 3.6): repair exits 0 and every
               file is byte-identical (SHA-256) to the pristine sample, the damaged original kept;
  - beyond it: repair exits non-zero and every file is exactly as the fault left it (no temp files).

Prints one table row per format and fault, then per fault over all formats.

    python benchmarks/fault_campaign.py [--seeds 50] [--size 1048576] [--leaf-size 4096] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict

from _util import machine_description, write_json
from fastckpt import faults

# Fault magnitudes that straddle the default budget at 1 MiB / 4 KiB leaves / 5 % (15 leaves =
# 60 KiB per contiguous run), so that both outcomes occur.
FAULT_KW = {
    "overwrite": {"max_bytes": 1 << 17},
    "truncate": {"max_cut": 1 << 17},
    "append": {"max_bytes": 1 << 14},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50, help="trials per format and fault (default 50)")
    ap.add_argument("--first-seed", type=int, default=1000, help="seeds differ from the test suite's")
    ap.add_argument("--size", type=int, default=1 << 20, help="sample size in bytes (default 1 MiB)")
    ap.add_argument("--leaf-size", type=int, default=4096)
    ap.add_argument("--redundancy", type=float, default=5.0)
    ap.add_argument("--formats", default=",".join(faults.FORMATS))
    ap.add_argument("--kinds", default=",".join(faults.FAULT_KINDS))
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="fault-campaign-")
    formats = args.formats.split(",")
    kinds = args.kinds.split(",")
    stats: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures: list[str] = []
    t0 = time.perf_counter()
    try:
        for fmt in formats:
            sample = faults.write_sample(fmt, os.path.join(root, "sample-" + fmt), nbytes=args.size, seed=1)
            faults.protect_sample(sample, leaf_size=args.leaf_size, redundancy=args.redundancy)
            for kind in kinds:
                s = stats[(fmt, kind)]
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    r = faults.run_trial(
                        fmt, sample, os.path.join(root, "trial"), kind, seed, fault_kw=FAULT_KW.get(kind)
                    )
                    s["trials"] += 1
                    s["detected"] += r.detected
                    if r.expected_repairable:
                        s["within"] += 1
                        s["exact"] += r.exact and r.backup_ok
                    else:
                        s["beyond"] += 1
                        s["clean"] += r.clean_failure
                    if not r.ok:
                        failures.append(f"{fmt} {kind} seed {seed}: {r.fault} {r.problems}")
                print(f"  {fmt:12} {kind:13} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - t0

    def pct(a: int, b: int) -> str:
        return f"{100 * a / b:.1f} %" if b else "-"

    header = "| format | fault | trials | detected | within budget | repaired exactly | beyond budget | failed cleanly |"
    lines = [header, "|" + "---|" * 8]
    for (fmt, kind), s in stats.items():
        lines.append(
            f"| {fmt} | {kind} | {s['trials']} | {pct(s['detected'], s['trials'])} | {s['within']} | "
            f"{pct(s['exact'], s['within'])} | {s['beyond']} | {pct(s['clean'], s['beyond'])} |"
        )
    lines += [
        "",
        "| fault (all formats) | trials | detected | within budget | repaired exactly | beyond budget | failed cleanly |",
    ]
    lines.append("|" + "---|" * 7)
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (_, kind), s in stats.items():
        for k, v in s.items():
            totals[kind][k] += v
            totals["all"][k] += v
    for kind in [*kinds, "all"]:
        s = totals[kind]
        lines.append(
            f"| {'**all**' if kind == 'all' else kind} | {s['trials']} | {pct(s['detected'], s['trials'])} | "
            f"{s['within']} | {pct(s['exact'], s['within'])} | {s['beyond']} | {pct(s['clean'], s['beyond'])} |"
        )
    print(
        f"\nFault campaign: {args.seeds} seeded trials per format and fault, samples of {args.size} bytes, "
        f"leaf {args.leaf_size}, redundancy {args.redundancy:g} %  [{machine_description()}, {elapsed:.0f} s]\n"
    )
    print("\n".join(lines))
    print(f"\n{len(failures)} trials broke a promise")
    for f in failures[:20]:
        print("  " + f)
    if args.json:
        write_json(
            args.json,
            {
                "seeds": args.seeds,
                "size": args.size,
                "leaf_size": args.leaf_size,
                "redundancy": args.redundancy,
                "stats": {f"{f}/{k}": dict(v) for (f, k), v in stats.items()},
                "failures": failures,
            },
        )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
