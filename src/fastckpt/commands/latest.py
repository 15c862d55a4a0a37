"""`fastckpt latest RUN_DIR`: print the newest checkpoint of a run that passes verify (see
fastckpt.latest). stdout holds only the path, so `$(fastckpt latest RUN)` can feed a resume flag."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import add_json_flag, add_quiet_flag, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "latest",
        help="newest checkpoint of a run that is complete and intact",
        description="Find the checkpoints under RUN_DIR (step_100.pt, epoch=3-step=1000.ckpt, DCP step "
        "folders, Hugging Face checkpoint-N folders), order them by step number then modification time, "
        "and print the newest one that passes 'fastckpt verify' (by sidecar, or structurally) and is "
        "complete. Temporary files and folders are skipped. Exit 0 found, 1 none valid, 2 error. "
        "--json prints {ok, run_dir, path, step, format, candidates, checked: [{path, step, ok, reason, "
        "kind, format, check, mtime, unsafe}], skipped: [{path, reason}]}.",
    )
    p.add_argument("run_dir", help="training run folder to search (up to 4 levels deep)")
    p.add_argument(
        "--all", action="store_true", help="check every candidate, not just down to the newest valid one"
    )
    p.add_argument("--threads", type=int, default=0, help="hashing threads (default: all cores)")
    add_json_flag(p)
    add_quiet_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..latest import find_latest

    result = find_latest(args.run_dir, check_all=args.all, threads=args.threads)
    if args.json:
        print_json(result)
    else:
        if not args.quiet:
            for entry in result["checked"]:
                if not entry["ok"]:
                    sys.stderr.write(f"fastckpt: skipped {entry['path']}: {entry['reason']}\n")
        if result["path"] is not None:
            print(result["path"])
        else:
            sys.stderr.write(
                f"fastckpt: no valid checkpoint under {result['run_dir']} "
                f"({result['candidates']} candidate(s), {len(result['skipped'])} temporary)\n"
            )
    return 0 if result["ok"] else 1
