"""`fastckpt diff A B`: compare two checkpoints (any supported formats) bitwise and numerically."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return v


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "diff",
        help="compare two checkpoints: keys, renames, dtypes, shapes, tensor bytes and values",
        description="Compare checkpoints A and B (torch.save, safetensors, sharded folders; the two may "
        "differ in format). Tensors are compared bitwise in one pass per pair; differing ones get "
        "statistics (differing elements, max abs/rel difference, RMS, NaN/Inf, ULP). Keys renamed "
        "between A and B are paired by tensor digest and summarized as rules. "
        "Exit 0 identical (or every difference within --atol/--rtol), 1 different, 2 error.",
    )
    p.add_argument("a", help="checkpoint A (the reference)")
    p.add_argument("b", help="checkpoint B")
    p.add_argument(
        "--atol", type=_tolerance, default=None, metavar="X", help="absolute tolerance for differences"
    )
    p.add_argument(
        "--rtol", type=_tolerance, default=None, metavar="Y", help="relative tolerance for differences"
    )
    p.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="rows in the text table (0: all; default 50)"
    )
    p.add_argument("--threads", type=int, default=0, metavar="N", help="worker threads (default: all cores)")
    p.add_argument(
        "--no-sidecar",
        action="store_true",
        help="ignore tensor digests recorded by 'fastckpt protect' (read and compare every tensor)",
    )
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..diff import diff

    report = diff(
        args.a,
        args.b,
        atol=args.atol,
        rtol=args.rtol,
        threads=args.threads,
        progress=not (args.quiet or args.json),
        sidecars=not args.no_sidecar,
    )
    if args.html:
        from .._diffhtml import write_html

        write_html(report, args.html)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.format_text(args.limit))
        if args.html:
            print(f"html report: {args.html}")
    return report.exit_code
