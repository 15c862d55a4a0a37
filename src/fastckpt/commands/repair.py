"""`fastckpt repair PATH`: rebuild damaged leaves from the sidecar's parity or from other copies,
bit-exact, and replace the file atomically (see fastckpt.repair). Never imports torch."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json
from .verify import _elements  # one wording for damaged regions in both reports

MAX_REGIONS_SHOWN = 20


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "repair",
        help="rebuild damaged leaves from parity or other copies, bit-exact",
        description="Locate the damaged leaves of PATH with its sidecar, rebuild them from the sidecar's "
        "Reed-Solomon parity and/or copy leaves with the expected digest from --from files (an older "
        "checkpoint of the same run, a replica), cut appended bytes, restore a truncated tail, and "
        "restore a damaged sidecar copy from its twin. The repaired file is written to a temporary file "
        "in the same folder, verified leaf by leaf against the sidecar, fsynced and renamed over PATH; "
        "the original is kept as PATH.damaged. When the damage is beyond repair, nothing is written and "
        "the lost bytes, tensors and elements are listed. A folder is repaired file by file. "
        "Exit 0 intact or repaired, 1 not repairable, 2 error.",
    )
    p.add_argument("path", help="checkpoint file or folder (protected with 'fastckpt protect')")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="OTHER",
        help="file (or, for a folder, folder) to copy leaves with the expected digest from; repeatable",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be repaired and from where; write nothing"
    )
    p.add_argument(
        "--no-backup", action="store_true", help="do not keep the damaged original as PATH.damaged"
    )
    p.add_argument("--sidecar", metavar="FILE", help="sidecar to use (default: PATH.fastckpt)")
    p.add_argument("--threads", type=int, default=0, help="worker threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def _regions(entries: list[dict[str, Any]], indent: str, what: str) -> None:
    for e in entries[:MAX_REGIONS_SHOWN]:
        lo, n = e["offset"], e["length"]
        print(f"{indent}  {what} bytes [{lo}, {lo + n}) ({n} bytes): {_elements(e)}")
    if len(entries) > MAX_REGIONS_SHOWN:
        print(f"{indent}  ... and {len(entries) - MAX_REGIONS_SHOWN} more regions (see --json)")


def _sources(r: dict[str, Any]) -> str:
    parts = []
    if r["rebuilt_from_parity"]:
        parts.append(f"{r['rebuilt_from_parity']} leaves from parity")
    parts += [f"{c['leaves']} leaves from {c['path']}" for c in r["copied_from"]]
    if r["appended"]:
        parts.append(f"{r['appended']} appended bytes cut")
    return ", ".join(parts) or "nothing to rebuild"


def _print_file(r: dict[str, Any], indent: str = "") -> None:
    name = r["path"]
    if r.get("error"):
        print(f"{indent}{name}: ERROR: {r['error']}")
        return
    would = r["dry_run"]
    if r["intact"]:
        print(f"{indent}{name}: OK (intact{'' if r['sidecar_damaged'] else ', nothing to repair'})")
    if not r["repairable"]:
        total = sum(e["length"] for e in r["unrecoverable"])
        print(f"{indent}{name}: NOT REPAIRABLE: {total} bytes cannot be restored; the file was not modified")
        _regions(r["unrecoverable"], indent, "lost")
        if r["lost_groups"]:
            print(f"{indent}  ({r['lost_groups']} parity groups lost more leaves than they have parity)")
        return
    if not r["intact"]:
        verb = "WOULD REPAIR" if would else "REPAIRED"
        print(f"{indent}{name}: {verb} ({_sources(r)})")
        _regions(r["damaged"], indent, "damaged")
        if r["backup"]:
            print(f"{indent}  original kept as {r['backup']}")
    if r["sidecar_damaged"]:
        state = "would be restored" if would else "restored"
        print(f"{indent}  sidecar {r['sidecar']} was damaged, {state} ({'; '.join(r['sidecar_problems'])})")


def run(args: argparse.Namespace) -> int:
    from ..repair import exit_code, repair_path

    report = repair_path(
        args.path,
        sources=args.sources,
        dry_run=args.dry_run,
        backup=not args.no_backup,
        sidecar=args.sidecar,
        threads=args.threads,
        progress=not args.quiet,
    )
    for w in report["warnings"]:
        sys.stderr.write(f"fastckpt: warning: {w}\n")
    if args.json:
        print_json(report)
    elif "files" in report:
        files = report["files"]
        fixed = sum(1 for f in files if f["repaired"])
        lost = sum(1 for f in files if not f["ok"])
        print(
            f"{report['path'].rstrip(os.sep)}{os.sep}: {len(files)} files, "
            f"{fixed} {'would be ' if args.dry_run else ''}repaired, {lost} not repairable or unreadable"
        )
        if report["sidecar_problems"]:
            print(f"  folder manifest {'would be ' if args.dry_run else ''}restored")
        for f in files:
            _print_file(f, "  ")
    else:
        _print_file(report)
    return exit_code(report)
