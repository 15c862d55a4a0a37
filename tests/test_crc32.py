"""Native CRC-32 (csrc/cpu/crc32*.cpp) against zlib.crc32, for every implementation compiled in."""

from __future__ import annotations

import os
import random
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import _native

ISAS = _native.crc32_isas()


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_isas_listed() -> None:
    assert ISAS[0] == "slice8"
    assert _native.crc32_default_isa() == ISAS[-1]
    with pytest.raises(ValueError, match="unknown CRC-32 implementation 'nope'"):
        _native.crc32(b"x", isa="nope")


@pytest.mark.parametrize("isa", ISAS)
def test_every_length_up_to_4160(isa: str) -> None:
    data = pattern(4160, 1)
    for n in range(4161):
        chunk = data[:n]
        assert _native.crc32(chunk, isa=isa) == zlib.crc32(chunk), n


@pytest.mark.parametrize("isa", ISAS)
def test_unaligned_starts_and_initial_values(isa: str) -> None:
    buf = bytearray(pattern(70000, 2))
    view = memoryview(buf)
    for start in range(64):
        for n in (0, 1, 17, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 4096 + 13, 65536 + 7):
            chunk = view[start : start + n]
            for value in (0, 1, 0xFFFFFFFF, 0x12345678):
                assert _native.crc32(chunk, value, isa=isa) == zlib.crc32(chunk, value), (start, n, value)


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
def test_random_large_sizes_threaded(isa: str) -> None:
    rng = np.random.default_rng(3)
    for n in (8 << 20, (8 << 20) + 1, 23_456_789):
        a = rng.integers(0, 256, size=n + 5, dtype=np.uint8)
        view = memoryview(a)[5:]  # unaligned start
        expect = zlib.crc32(view)
        for threads in (1, 2, 3, 0):
            assert _native.crc32(view, threads=threads, isa=isa) == expect, (n, threads)
        assert _native.crc32(view, 77, isa=isa) == zlib.crc32(view, 77)


def test_buffer_types() -> None:
    data = pattern(5000, 4)
    expect = zlib.crc32(data)
    for obj in (data, bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        assert _native.crc32(obj) == expect
    with pytest.raises(TypeError, match="C-contiguous"):
        _native.crc32(np.frombuffer(data, dtype=np.uint8)[::2])
    with pytest.raises(ValueError, match=r"value must be a CRC-32 value in \[0, 2\*\*32\), got -1"):
        _native.crc32(data, -1)
    with pytest.raises(ValueError, match="got 4294967296"):
        _native.crc32(data, 1 << 32)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000), st.sampled_from(ISAS))
def test_split_invariance(a: bytes, b: bytes, isa: str) -> None:
    assert (
        _native.crc32(b, _native.crc32(a, isa=isa), isa=isa)
        == _native.crc32(a + b, isa=isa)
        == zlib.crc32(a + b)
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_combine(a: bytes, b: bytes) -> None:
    assert _native.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_combine_huge_length() -> None:
    # Appending n zero bytes: crc32_combine must agree with streaming zeros through zlib.
    n = (1 << 24) + 3
    a = pattern(100, 5)
    assert _native.crc32_combine(zlib.crc32(a), zlib.crc32(bytes(n)), n) == zlib.crc32(
        bytes(n), zlib.crc32(a)
    )
    with pytest.raises(ValueError, match="len2 must be >= 0"):
        _native.crc32_combine(0, 0, -1)


@pytest.mark.parametrize("isa", ISAS)
def test_ranges(isa: str) -> None:
    rng = random.Random(6)
    data = os.urandom(3 << 20)
    offsets, lengths = [], []
    for _ in range(500):
        off = rng.randrange(len(data))
        offsets.append(off)
        lengths.append(rng.randrange(min(len(data) - off, 70000) + 1))
    offsets += [0, len(data), 0]
    lengths += [len(data), 0, 0]
    expect = [zlib.crc32(data[o : o + n]) for o, n in zip(offsets, lengths, strict=True)]
    for threads in (1, 2, 0):
        assert _native.crc32_ranges(data, offsets, lengths, threads=threads, isa=isa) == expect


@pytest.mark.slow
def test_ranges_large_records_split_and_combined() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, size=30 << 20, dtype=np.uint8)
    offsets = [0, 3, 12 << 20, (30 << 20) - 9]
    lengths = [30 << 20, (9 << 20) + 5, (18 << 20), 9]
    view = memoryview(a)
    assert _native.crc32_ranges(a, offsets, lengths) == [
        zlib.crc32(view[o : o + n]) for o, n in zip(offsets, lengths, strict=True)
    ]


def test_ranges_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"range 1 \[10, \+1\) is outside the buffer of 10 bytes"):
        _native.crc32_ranges(bytes(10), [0, 10], [1, 1])
    with pytest.raises(ValueError, match="outside the buffer"):
        _native.crc32_ranges(bytes(10), [-1], [1])
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        _native.crc32_ranges(bytes(10), [0, 1], [1])
    assert _native.crc32_ranges(bytes(10), [], []) == []
