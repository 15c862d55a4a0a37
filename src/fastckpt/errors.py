"""Exceptions fastckpt raises. Every user-facing failure carries one line of text that names the
input, where in it the problem is, and what was expected; the CLI prints that line and exits 2."""

from __future__ import annotations


class FastckptError(Exception):
    """Base class. `str(err)` is a complete one-line message suitable for a terminal."""


class InputError(FastckptError, ValueError):
    """The input is unreadable or malformed (exit code 2)."""

    def __init__(self, path: str, offset: int | None, expected: str) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {expected}")
        self.path = path
        self.offset = offset
        self.expected = expected

    def __reduce__(self) -> tuple[type, tuple[str, int | None, str]]:
        # Picklable (torch.distributed gathers exceptions from other ranks by pickling them).
        return (type(self), (self.path, self.offset, self.expected))


class UsageError(FastckptError, ValueError):
    """An argument is invalid (exit code 2)."""


class CorruptCheckpointError(FastckptError, RuntimeError):
    """A checkpoint failed verification (raised by `fastckpt.load`, `fastckpt.save`'s checks and the
    DCP reader). `damaged` lists what is hit: tensor keys (dotted paths), DCP item keys, or, for
    damage outside tensor data, a description in angle brackets such as `<pickle archive/data.pkl>`.
    `report` is the verify report (the `fastckpt verify --json` object) when there is one."""

    def __init__(
        self, path: str, damaged: list[str], message: str, report: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.damaged = list(damaged)
        self.report = report

    def __reduce__(self) -> tuple[type, tuple[str, list[str], str, dict[str, object] | None]]:
        return (type(self), (self.path, self.damaged, str(self), self.report))
