"""`fastckpt verify PATH`: is a checkpoint intact, and if not, which bytes, tensors and elements are
damaged. With a sidecar it never imports torch (see fastckpt.verify)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json

MAX_REGIONS_SHOWN = 20


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="check a checkpoint file or folder and locate damage",
        description="With a sidecar (PATH.fastckpt, written by 'fastckpt protect'), re-hash every leaf "
        "and report each damaged byte range with the tensors and elements it hits. Without one, run "
        "the format's structural checks (zip records and CRC-32, safetensors header, DCP metadata). "
        "A folder is checked file by file, plus missing, extra and short files. "
        "Exit 0 intact, 1 damage found, 2 unreadable input or usage error.",
    )
    p.add_argument("path", help="checkpoint file or folder")
    p.add_argument("--sidecar", metavar="FILE", help="sidecar to use (default: PATH.fastckpt)")
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def _elements(entry: dict[str, Any]) -> str:
    parts = [f"{e['tensor']}[{e['start']}:{e['stop']}]" for e in entry["elements"]]
    if not parts:
        segs = [f"{s['kind']} {s['name']}" if s["name"] else s["kind"] for s in entry["segments"]]
        return "no tensor data" + (f" ({', '.join(segs)})" if segs else "")
    return "elements " + ", ".join(parts)


def _print_file(r: dict[str, Any], indent: str = "") -> None:
    name = r["path"]
    if r.get("error"):
        print(f"{indent}{name}: UNREADABLE: {r['error']}")
        return
    if r.get("missing"):
        print(f"{indent}{name}: MISSING")
        return
    if r["check"] == "manifest":
        how = f"checked {r['leaves_checked']} leaves against {r['sidecar']}"
    elif r["check"] == "directory-digest":
        how = "whole-file digest checked (no sidecar)"
    else:
        how = f"{r['format']}: structure checked"
    if r["ok"]:
        print(f"{indent}{name}: OK ({r['size']} bytes, {how})")
        return
    only_unsafe = all(p["kind"] == "unsafe-pickle" for p in r["problems"]) and not r["damaged"]
    print(f"{indent}{name}: {'UNSAFE' if only_unsafe else 'DAMAGED'} ({how})")
    for p in r["problems"]:
        if p["kind"] == "damaged":
            continue
        where = f"offset {p['offset']}: " if p["offset"] is not None else ""
        print(f"{indent}  {p['kind']}: {where}{p['message']}")
    for entry in r["damaged"][:MAX_REGIONS_SHOWN]:
        lo, n = entry["offset"], entry["length"]
        print(f"{indent}  damaged bytes [{lo}, {lo + n}) ({n} bytes): {_elements(entry)}")
    if len(r["damaged"]) > MAX_REGIONS_SHOWN:
        print(f"{indent}  ... and {len(r['damaged']) - MAX_REGIONS_SHOWN} more damaged regions (see --json)")


def run(args: argparse.Namespace) -> int:
    # Distributed under torchrun (fastckpt.dist_verify), else exactly fastckpt.verify.verify_path.
    from ..dist_verify import verify_path

    report = verify_path(args.path, sidecar=args.sidecar, threads=args.threads, progress=not args.quiet)
    for w in report["warnings"]:
        sys.stderr.write(f"fastckpt: warning: {w}\n")
    if args.json:
        print_json(report)
    else:
        if report.get("note"):
            print(report["note"])
        if "files" in report:
            files = report["files"]
            bad = sum(1 for f in files if not f["ok"])
            state = "OK" if report["ok"] else "DAMAGED"
            print(
                f"{report['path'].rstrip(os.sep)}{os.sep}: {state} ({len(files) - bad} of {len(files)} files intact)"
            )
            for rel in report["missing"]:
                print(f"  missing: {rel}")
            for rel in report["extra"]:
                print(f"  extra (not in the directory manifest): {rel}")
            for p in report["problems"]:
                print(f"  {p['kind']}: {p['message']}")
            for f in files:
                if not f.get("missing"):
                    _print_file(f, "  ")
        else:
            _print_file(report)
    if report.get("unreadable") or report.get("error"):
        return 2
    return 0 if report["ok"] else 1
