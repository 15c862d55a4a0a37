"""Leaf digests and v1 digests of byte ranges against the pure-Python reference (fastckpt._reference),
including leaf boundaries +-1, every ISA, threading, and files through mmap."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt import _native, _reference

ISAS = _native.available_isas()
rng = random.Random(99)


def packed(leaves: bytes) -> list[int]:
    return memoryview(leaves).cast("Q").tolist()


@pytest.mark.parametrize("leaf_size", [64, 1024, 4096, 65536])
def test_leaf_boundaries(leaf_size: int) -> None:
    data = rng.randbytes(4 * leaf_size + 2)
    for n in {
        0,
        1,
        leaf_size - 1,
        leaf_size,
        leaf_size + 1,
        2 * leaf_size - 1,
        2 * leaf_size,
        2 * leaf_size + 1,
        4 * leaf_size + 1,
    }:
        chunk = data[:n]
        assert packed(_native.leaf_digests(chunk, leaf_size, 1)) == _reference.leaf_digests(chunk, leaf_size)
        d = fastckpt.hash_bytes(chunk, leaf_size=leaf_size)
        assert d.value == _reference.bytes_digest(chunk, leaf_size)
        assert d.leaves == _reference.leaf_digests(chunk, leaf_size)
        assert len(d.leaves) == -(-n // leaf_size)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_same_leaves(isa: str) -> None:
    data = rng.randbytes(3 * 65536 + 777)
    assert packed(_native.leaf_digests(data, 4096, 1, isa)) == _reference.leaf_digests(data, 4096)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_threads_do_not_change_result(threads: int) -> None:
    np = pytest.importorskip("numpy")
    size = (48 << 20) + 4097  # above the threading threshold, odd tail
    arr = np.frombuffer(os.urandom(size), dtype=np.uint8)
    got = packed(_native.leaf_digests(arr, 65536, threads))
    assert got == _reference.leaf_digests(arr.tobytes(), 65536)


def test_random_large_sizes() -> None:
    for _ in range(5):
        n = rng.randrange(1, 3 << 20)
        data = rng.randbytes(n)
        leaf = 1 << rng.randrange(6, 18)
        assert fastckpt.hash_bytes(data, leaf_size=leaf).value == _reference.bytes_digest(data, leaf)


def test_hash_bytes_accepts_bytes_like_and_arrays() -> None:
    np = pytest.importorskip("numpy")
    data = rng.randbytes(10000)
    expect = _reference.bytes_digest(data, 65536)
    for obj in (data, bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        assert fastckpt.hash_bytes(obj).value == expect
    # A strided array hashes as its contiguous copy.
    arr = np.frombuffer(data, dtype=np.uint8).reshape(100, 100)[:, ::3]
    assert fastckpt.hash_bytes(arr).value == _reference.bytes_digest(
        np.ascontiguousarray(arr).tobytes(), 65536
    )


def test_hash_file_matches_reference(tmp_path) -> None:
    for n in (0, 1, 65535, 65536, 65537, 300_001):
        p = tmp_path / f"f{n}"
        data = rng.randbytes(n)
        p.write_bytes(data)
        d = fastckpt.hash_file(p)
        assert (d.nbytes, d.value) == (n, _reference.bytes_digest(data, 65536))
        assert d.leaves == _reference.leaf_digests(data, 65536)


def test_hash_file_with_progress_path_identical(tmp_path, monkeypatch) -> None:
    from fastckpt import digest

    data = rng.randbytes(5 * 65536 + 3)
    p = tmp_path / "f"
    p.write_bytes(data)
    monkeypatch.setattr(digest, "_PROGRESS_CHUNK", 2 * 65536)
    chunked = digest._hash_file_with_progress(str(p), 65536, 0)
    assert chunked == fastckpt.hash_file(p)


def test_hash_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        fastckpt.hash_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        fastckpt.hash_file(tmp_path)


@pytest.mark.parametrize("bad", [0, 63, 100, 3 << 10, 1 << 31, -1])
def test_bad_leaf_size(bad: int) -> None:
    with pytest.raises(fastckpt.UsageError, match="leaf_size must be a power of two"):
        fastckpt.hash_bytes(b"x", leaf_size=bad)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=6, max_value=12))
def test_hypothesis_digest_equals_reference(data: bytes, log_leaf: int) -> None:
    leaf = 1 << log_leaf
    assert fastckpt.hash_bytes(data, leaf_size=leaf).value == _reference.bytes_digest(data, leaf)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(min_value=0, max_value=2999), st.integers(0, 7))
def test_hypothesis_one_bit_flip_changes_exactly_one_leaf(data: bytes, pos: int, bit: int) -> None:
    pos %= len(data)
    flipped = bytearray(data)
    flipped[pos] ^= 1 << bit
    a = fastckpt.hash_bytes(data, leaf_size=256)
    b = fastckpt.hash_bytes(bytes(flipped), leaf_size=256)
    diff = [i for i, (x, y) in enumerate(zip(a.leaves, b.leaves, strict=True)) if x != y]
    assert diff == [pos // 256]
    assert a.value != b.value
