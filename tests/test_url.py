"""fastckpt._url: the URL test every command runs on its path, checked against the RFC 3986 scheme
grammar written as a regular expression (the implementation avoids `re` for start-up time)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from fastckpt._url import is_url, local_path

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


def reference_is_url(path: object) -> bool:
    if not isinstance(path, str):
        return False
    m = SCHEME.match(path)
    return m is not None and m.group(1).lower() != "file"


CASES = [
    "s3://b/k", "gs://b/k", "memory://x", "hf+https://x", "a.b-c://x", "/tmp/x", "file:///tmp/x",
    "FILE://x", "FiLe://y", "C:x", "C:\\x", "1s3://x", "://x", "s 3://x", "s3:/x", "http://a://b", "",
    "x://", "é://x", "ab\u00e9://x", "s3:://x", "./s3://x",
]  # fmt: skip


def test_known_cases() -> None:
    for c in CASES:
        assert is_url(c) == reference_is_url(c), c
    assert not is_url(None) and not is_url(b"s3://x")
    assert is_url("s3://b/k") and not is_url("file:///tmp/x") and not is_url("/tmp/x")


@given(st.text(alphabet="aZ09+.-:/ é_", max_size=12))
def test_matches_the_scheme_grammar(path: str) -> None:
    assert is_url(path) == reference_is_url(path)


def test_local_path() -> None:
    assert local_path("file:///tmp/a%20b") == "/tmp/a b"
    assert local_path("FILE://localhost/tmp/x") == "/tmp/x"
    assert local_path("/plain/path") == "/plain/path" and local_path("s3://b/k") == "s3://b/k"
