"""Helpers shared by subcommands: JSON output and common options."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")


def add_quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")


def add_leaf_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--leaf-size",
        type=int,
        default=65536,
        metavar="N",
        help="leaf size in bytes, a power of two (default 65536)",
    )


def print_json(obj: Any) -> None:
    import json  # only when asked: every command's start-up pays for the imports at the top

    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def leaf_hex(leaves: list[int]) -> list[str]:
    return [f"{v:016x}" for v in leaves]
