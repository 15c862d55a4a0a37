"""`fastckpt protect PATH`: writes the sidecar manifest PATH.fastckpt (or, for a folder, one sidecar
per file plus DIR/.fastckpt-dir) so that `fastckpt verify` can later locate any damage."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import add_json_flag, add_leaf_size, add_quiet_flag, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "protect",
        help="write a sidecar manifest so damage can be detected and located later",
        description="Hash every leaf of PATH and every tensor in it, and write PATH.fastckpt (two "
        "checksummed copies of the manifest, written atomically). For a folder, write a sidecar "
        "beside every file and DIR/.fastckpt-dir listing the files and sizes. The sidecar also holds "
        "Reed-Solomon parity (--redundancy, default 5%%) from which 'fastckpt repair' rebuilds damaged "
        "leaves. A file with structural "
        "damage (bad CRC-32, truncation) is not sealed unless --force. Exit 0 written, 1 refused "
        "because of damage, 2 error.",
    )
    p.add_argument("path", help="checkpoint file or folder")
    add_leaf_size(p)
    p.add_argument(
        "--redundancy",
        type=float,
        default=None,
        metavar="PCT",
        help="parity in percent of the file, 0.5-100, or 0 for none (default 5: any damaged run of up to "
        "5%% of the file, e.g. a cut-off tail, can be rebuilt by 'fastckpt repair'; costs 5%% more "
        "sidecar space). See docs/FORMAT.md section 3.7",
    )
    p.add_argument("--force", action="store_true", help="seal files even if structural checks fail")
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _print_result(r: dict[str, Any], indent: str = "") -> None:
    if r["written"]:
        par = r.get("parity")
        extra = (
            f", parity {r['redundancy']:g}%: {_mib(par['bytes'])}, repairs any run of up to {_mib(par['max_burst'])}"
            if par
            else ", no parity"
        )
        print(
            f"{indent}protected {r['path']} -> {r['sidecar']} ({r['format']}, {r['size']} bytes, "
            f"{r['tensors']} tensors, {r['segments']} segments{extra})"
        )
    else:
        print(
            f"{indent}{r['path']}: NOT protected: structural problems found (use --force to seal it anyway)"
        )
    for p in r["problems"]:
        where = f"offset {p['offset']}: " if p["offset"] is not None else ""
        print(f"{indent}  {p['kind']}: {where}{p['message']}")
    for g in r["unsafe"]:
        print(f"{indent}  warning: the pickle would call {g} when loaded (recorded; verify will report it)")


def run(args: argparse.Namespace) -> int:
    from ..protect import DEFAULT_REDUNDANCY, protect_dir, protect_file

    progress = not args.quiet
    redundancy = DEFAULT_REDUNDANCY if args.redundancy is None else args.redundancy
    kw = dict(
        leaf_size=args.leaf_size,
        threads=args.threads,
        progress=progress,
        force=args.force,
        redundancy=redundancy,
    )
    if os.path.isdir(args.path):
        result: Any = protect_dir(args.path, **kw)
    else:
        result = protect_file(args.path, **kw)
    out = result.to_json()
    if args.json:
        print_json(out)
    elif "files" in out:
        for f in out["files"]:
            _print_result(f)
        for p in out["problems"]:
            print(f"{out['path']}: {p['kind']}: {p['message']}")
        if out["written"]:
            print(f"wrote {out['manifest']} ({len(out['files'])} files, {out['format']})")
        else:
            print(f"{out['path']}: directory manifest NOT written (use --force to write it anyway)")
    else:
        _print_result(out)
    return 0 if out["ok"] else 1
