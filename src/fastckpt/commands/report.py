"""`fastckpt report RUN_DIR`: sizes, dedup potential, per-layer change, compressibility, checkpoint
interval and storage cost of a run's checkpoints (fastckpt.report); `--html` writes a
self-contained page with charts. Never imports torch."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json

MAX_ROWS = 12


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from ..report import DEFAULT_MTBF_HOURS, DEFAULT_PRICE_USD_PER_GB_MONTH

    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="what a run's checkpoints cost, share and change; how often to checkpoint",
        description="Report on a folder of checkpoints from one run (files like step_100.pt or "
        "epoch=3-step=1000.ckpt, DCP step folders, Hugging Face checkpoint-N folders; local, file:// "
        "or an fsspec URL such as s3://bucket/run/). Shows size and growth, dedup potential from "
        "leaf digests (sidecars when current, else hashed), the relative change ||B-A||/||A|| of "
        "every tensor between consecutive checkpoints, compressibility per dtype, the Young/Daly "
        "checkpoint interval and the storage cost. Exit 0, or 2 on unreadable input.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder (or URL prefix) holding the run's checkpoints")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts")
    p.add_argument(
        "--mtbf",
        type=float,
        metavar="HOURS",
        help=f"mean time between failures of the job, in hours (default {DEFAULT_MTBF_HOURS:g})",
    )
    p.add_argument(
        "--price",
        type=float,
        default=DEFAULT_PRICE_USD_PER_GB_MONTH,
        metavar="USD_PER_GB_MONTH",
        help=f"storage price per GB-month, GB = 2^30 bytes (default {DEFAULT_PRICE_USD_PER_GB_MONTH}, S3 Standard)",
    )
    p.add_argument(
        "--save-seconds",
        type=float,
        metavar="S",
        help="time to save one checkpoint (default: measured from file creation and modification "
        "times when the file system records them, else estimated at 1 GB/s)",
    )
    p.add_argument(
        "--leaf-size",
        type=int,
        metavar="N",
        help="leaf size for dedup (default: the sidecars' leaf size, else 65536)",
    )
    p.add_argument("--no-change", action="store_true", help="skip reading tensors for the change heatmap")
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def write_html_atomic(path: str, text: str) -> None:
    """Temp file in the same folder, fsync, rename: a reader never sees a partial report."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastckpt-report-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _b(n: float | None) -> str:
    from .._report_html import human_bytes

    return human_bytes(n)


def print_text(r: dict[str, Any]) -> None:
    from .._report_html import human_seconds

    ck = r["checkpoints"]
    dd = r["dedup"]
    per = {p["index"]: p for p in dd["per_checkpoint"]}
    print(f"run: {r['run']} ({len(ck)} checkpoints, {_b(r['size']['total_bytes'])} total)")
    print(f"  {'checkpoint':<28} {'step':>8} {'size':>10} {'new':>10} {'digests':>8}")
    shown = ck if len(ck) <= 2 * MAX_ROWS else ck[:MAX_ROWS] + ck[-MAX_ROWS:]
    for c in shown:
        if len(ck) > 2 * MAX_ROWS and c is ck[-MAX_ROWS]:
            print(f"  ... {len(ck) - 2 * MAX_ROWS} more")
        step = "-" if c["step"] is None else str(c["step"])
        print(
            f"  {c['name'][:28]:<28} {step:>8} {_b(c['size']):>10} {_b(per[c['index']]['new_bytes']):>10} {c['digests'] or '-':>8}"
        )
    g = r["size"]["growth"]
    rel = f" ({g['relative'] * 100:+.2f}% first to last)" if g["relative"] is not None else ""
    print(f"growth: {_b(g['bytes_per_checkpoint'])} per checkpoint{rel}")
    print(
        f"dedup: {dd['shared_fraction'] * 100:.1f}% of leaf bytes also appear in another checkpoint; "
        f"{_b(dd['unique_bytes'])} unique ({dd['dedup_ratio']:.2f}x)"
    )
    top = sorted((t for t in dd["tensors"] if t["shared_bytes"]), key=lambda t: -t["shared_bytes"])[:5]
    for t in top:
        print(f"  {t['key']}: {t['shared_fraction'] * 100:.0f}% of {_b(t['bytes'])} shared")
    pairs = r["change"]["pairs"]
    if pairs:
        print("change ||B-A||/||A|| between consecutive checkpoints:")
        for p in pairs[:MAX_ROWS]:
            a = p["from_step"] if p["from_step"] is not None else p["from"]
            b = p["to_step"] if p["to_step"] is not None else p["to"]
            rc = "-" if p["relative_change"] is None else f"{p['relative_change']:.3g}"
            print(f"  {a} -> {b}: {rc} ({p['tensors_compared']} tensors, {p['tensors_unchanged']} unchanged)")
        if len(pairs) > MAX_ROWS:
            print(f"  ... {len(pairs) - MAX_ROWS} more (see --json or --html)")
        hm = r["change"]["heatmap"]
        last = [
            (row[-1], lab) for lab, row in zip(hm["labels"], hm["values"], strict=True) if row and row[-1]
        ]
        if last:
            moving = ", ".join(f"{lab} {v:.3g}" for v, lab in sorted(last, reverse=True)[:3])
            print(f"  moving most in the last pair ({hm['grouping']}): {moving}")
    comp = r["compression"]
    print(
        f"compression ({comp['compressor']}, sample of up to {comp['sample_bytes_per_dtype'] // 1024} KiB per dtype):"
    )
    for x in comp["dtypes"]:
        grouped = f", byte-grouped {x['ratio_byte_grouped']:.2f}x" if x["ratio_byte_grouped"] else ""
        print(f"  {x['dtype']:<16} {_b(x['bytes']):>10}  {x['ratio']:.2f}x{grouped}")
    iv = r["interval"]
    print(
        f"interval: save {human_seconds(iv['save_seconds'])} ({iv['save_seconds_source']}), "
        f"MTBF {human_seconds(iv['mtbf_seconds'])} ({iv['mtbf_source']})"
    )
    steps = f" (~{iv['recommended_steps']} steps)" if iv.get("recommended_steps") else ""
    print(
        f"  checkpoint every {human_seconds(iv['recommended_seconds'])}{steps} (Young/Daly); expected work lost "
        f"per failure {human_seconds(iv['expected_lost_seconds_per_failure'])}; waste {iv['expected_waste_fraction'] * 100:.2f}%"
    )
    if iv.get("observed_seconds"):
        print(
            f"  observed every {human_seconds(iv['observed_seconds'])}: work lost per failure "
            f"{human_seconds(iv['observed_lost_seconds_per_failure'])}; waste {iv['observed_waste_fraction'] * 100:.2f}%"
        )
    cost = r["cost"]
    comp_cost = cost["monthly_usd_compressed_estimate"]
    print(
        f"cost at ${cost['price_usd_per_gb_month']}/GB-month: ${cost['monthly_usd']:.2f}/month as stored, "
        f"${cost['monthly_usd_deduplicated']:.2f} deduplicated"
        + (f", ~${comp_cost:.2f} compressed" if comp_cost is not None else "")
    )


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    report = build_report(
        args.run_dir,
        mtbf_hours=args.mtbf,
        price_usd_per_gb_month=args.price,
        save_seconds=args.save_seconds,
        leaf_size=args.leaf_size,
        threads=args.threads,
        change=not args.no_change,
        progress=not (args.quiet or args.json),
    )
    for w in report["warnings"]:
        sys.stderr.write(f"fastckpt: warning: {w}\n")
    if args.html:
        from .._report_html import render_html

        write_html_atomic(args.html, render_html(report))
    if args.json:
        if args.html:
            report["html"] = os.path.abspath(args.html)
        print_json(report)
    else:
        print_text(report)
        if args.html:
            print(f"wrote {args.html}")
    return 0
