"""The `fastckpt` command line: argument parsing, exit codes and error reporting.

Each subcommand lives in `fastckpt.commands.<name>` with `add_parser(subparsers)` and
`run(args) -> int`. Command modules must import cheaply (no torch at module level): the parser for
every command is built on each invocation.

Exit codes (all commands): 0 success / intact / identical, 1 damage or difference found,
2 unreadable input or usage error. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import FastckptError

# Order here is the order in `fastckpt --help`.
COMMANDS = ["hash", "protect", "verify", "repair", "inspect", "diff", "migrate", "latest", "report", "demo"]

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"fastckpt: error: {message}\n")
        raise SystemExit(EXIT_ERROR)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with `only` one subcommand's (so running a command imports just its
    module); with `only=""` none (`--version` needs no command's module)."""
    from . import __version__

    parser = _Parser(
        prog="fastckpt",
        description="Verify, repair and compare PyTorch checkpoints at memory speed.",
        epilog="Exit codes: 0 ok/intact/identical, 1 damage or difference found, 2 error. "
        "Run 'fastckpt COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"fastckpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in [only] if only in COMMANDS else [] if only == "" else COMMANDS:
        module = importlib.import_module(f"fastckpt.commands.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The first word names the command when it is one; global options (--help, --version) come first
    # otherwise, and then the full parser is built so help and "invalid choice" list every command.
    first = args_list[0] if args_list else None
    parser = build_parser(first if first in COMMANDS else "" if first == "--version" else None)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args._run(args))
    except FastckptError as e:
        sys.stderr.write(f"fastckpt: error: {e}\n")
        return EXIT_ERROR
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"fastckpt: error: {where}{e.strerror or e}\n")
        return EXIT_ERROR
    except MemoryError:
        sys.stderr.write("fastckpt: error: out of memory\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("fastckpt: interrupted\n")
        return 130


# Modules whose presence means something may still want the interpreter's normal shutdown: torch
# and multiprocessing register exit handlers, an executor joins its worker threads.
_NEEDS_SHUTDOWN = ("torch", "concurrent.futures", "multiprocessing")


def _needs_shutdown() -> bool:
    if any(name in sys.modules for name in _NEEDS_SHUTDOWN):
        return True
    threading = sys.modules.get("threading")
    return threading is not None and threading.active_count() > 1


def console_main() -> None:
    """The `fastckpt` console script and `python -m fastckpt`: main(), then exit.

    After a command that imported nothing with exit-time duties (hash, verify with a sidecar), the
    interpreter's shutdown (tearing down modules and objects, ~10-15 ms) is skipped: the streams are
    flushed and the process ends. Anything else exits normally."""
    code = main()
    if _needs_shutdown():
        raise SystemExit(code)
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let the normal exit report it
        raise SystemExit(code) from None
    os._exit(code)


if __name__ == "__main__":
    console_main()
