"""What kind of location a path string names: a URL read through fsspec, or a local path.

Kept apart from `fastckpt.remote` (thread pools, fsspec glue) so that commands working on local files,
`fastckpt verify FILE` above all, can ask the question without importing any of that, nor `re`.
"""

from __future__ import annotations

import os
from typing import Any

# RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_CHARS = _ALPHA | frozenset("0123456789+-.")


def is_url(path: Any) -> bool:
    """True for a URL with a scheme other than file:// (those are read through fsspec)."""
    if not isinstance(path, str):
        return False
    end = path.find("://")
    if end <= 0:
        return False
    scheme = path[:end]
    if scheme[0] not in _ALPHA or not all(c in _SCHEME_CHARS for c in scheme):
        return False
    return scheme.lower() != "file"


def local_path(path: str | os.PathLike[str]) -> str:
    """A local path for `path`, turning `file:///x` into `/x`; other URLs are returned unchanged."""
    p = os.fspath(path)
    if p[:7].lower() == "file://":
        rest = p[len("file://") :]
        # file://localhost/x and file:///x both name /x
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        from urllib.parse import unquote

        return unquote(rest)
    return p
