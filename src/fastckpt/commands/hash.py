"""`fastckpt hash PATH`: the file's v1 digest and leaf digests. Never imports torch."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import add_json_flag, add_leaf_size, add_quiet_flag, leaf_hex, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "hash",
        help="print a file's digest and leaf digests",
        description="Hash a file with digest format v1 (XXH3-64 per leaf, XXH3-128 over the leaves). "
        "The file is read through mmap on all cores. Exit 0, or 2 if it cannot be read.",
    )
    p.add_argument("path", help="file to hash")
    add_leaf_size(p)
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..digest import hash_file

    show_progress = not (args.quiet or args.json)
    d = hash_file(args.path, leaf_size=args.leaf_size, threads=args.threads, progress=show_progress)
    if args.json:
        out: dict[str, Any] = {
            "path": os.fspath(args.path),
            "size": d.nbytes,
            "leaf_size": d.leaf_size,
            "leaf_count": len(d.leaf_bytes) // 8,
            "leaves": leaf_hex(d.leaves),
            "digest": d.hex(),
            "format": "fastckpt-digest-v1",
        }
        print_json(out)
    else:
        print(f"path:      {args.path}")
        print(f"size:      {d.nbytes} bytes")
        print(f"leaf size: {d.leaf_size}")
        print(f"leaves:    {len(d.leaf_bytes) // 8}")
        print(f"digest:    {d.hex()}")
    return 0
