"""CRC-32 (the zip polynomial) for record checks.

Uses the native implementation when the extension provides one (`fastckpt._native.crc32(buffer,
value=0) -> int`, added by the verify work), and zlib otherwise. Both compute the same function,
so callers never need to know which one ran."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any


def _pick() -> Callable[[Any], int]:
    try:
        from .. import _native

        native = getattr(_native, "crc32", None)
    except ImportError:  # pragma: no cover - the extension is always built
        native = None
    if native is not None:
        return native  # type: ignore[no-any-return]
    return zlib.crc32


_impl = _pick()


def crc32(data: Any) -> int:
    return int(_impl(data))
