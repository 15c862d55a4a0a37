"""The native XXH3-64/128 against the `xxhash` package, on every short-path boundary and every
compiled instruction set, from unaligned addresses."""

from __future__ import annotations

import random

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import _native

ISAS = _native.available_isas()
rng = random.Random(1234)
# One pseudo-random buffer, sliced at every length: covers 0..4160 (short paths, first blocks, the
# 1 KiB block boundary and the last-stripe logic) without generating 4161 buffers.
POOL = rng.randbytes(8192 + 64)


def test_xxh3_64_every_length_0_to_4160() -> None:
    for n in range(4161):
        data = POOL[:n]
        assert _native.xxh3_64(data) == xxhash.xxh3_64_intdigest(data), n


def test_xxh3_128_every_length_0_to_4160() -> None:
    for n in range(4161):
        data = POOL[:n]
        assert _native.xxh3_128(data) == xxhash.xxh3_128_intdigest(data), n


@pytest.mark.parametrize("isa", ISAS)
def test_each_isa_long_loop_matches_xxhash(isa: str) -> None:
    # Leaf size 64 would never reach the long path; hash single large leaves instead.
    for n in [
        241,
        255,
        256,
        257,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        4095,
        4096,
        4097,
        65535,
        65536,
        65537,
        1 << 20,
        (1 << 20) + 13,
    ]:
        data = (POOL * ((n // len(POOL)) + 1))[:n]
        got = memoryview(_native.leaf_digests(data, 1 << 21, 1, isa)).cast("Q").tolist()
        assert got == [xxhash.xxh3_64_intdigest(data)], (isa, n)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("misalign", range(0, 16))
def test_unaligned_start(isa: str, misalign: int) -> None:
    buf = bytearray(POOL)
    for n in (0, 17, 240, 241, 1000, 4160):
        view = memoryview(buf)[misalign : misalign + n]
        expect = xxhash.xxh3_64_intdigest(bytes(view))
        assert _native.xxh3_64(view) == expect
        got = memoryview(_native.leaf_digests(view, 1 << 20, 1, isa)).cast("Q").tolist()
        assert got == ([expect] if n else [])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_hypothesis_matches_xxhash(data: bytes) -> None:
    assert _native.xxh3_64(data) == xxhash.xxh3_64_intdigest(data)
    assert _native.xxh3_128(data) == xxhash.xxh3_128_intdigest(data)


def test_rejects_non_contiguous_buffer() -> None:
    np = pytest.importorskip("numpy")
    strided = np.arange(100, dtype=np.uint8)[::2]
    with pytest.raises(TypeError, match="C-contiguous"):
        _native.xxh3_64(strided)


def test_unknown_isa_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown instruction set 'neon'"):
        _native.leaf_digests(b"abc", 65536, 1, "neon")
