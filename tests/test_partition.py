"""The CUDA leaf kernel's work partition, run on the CPU (`_native.emulate_cuda_leaf_digests`),
against the `xxhash` package: this tests the GPU's arithmetic and its split of each leaf over a
warp (8 groups x 4 pair threads, serial chain between groups) on machines without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import _native


def pattern(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def xxh3_leaves(data: bytes, leaf_size: int) -> list[int]:
    return [xxhash.xxh3_64_intdigest(data[i : i + leaf_size]) for i in range(0, len(data), leaf_size)]


def emulated(data: bytes | memoryview, leaf_size: int) -> list[int]:
    return memoryview(_native.emulate_cuda_leaf_digests(data, leaf_size)).cast("Q").tolist()


# Every regime of the partition: short paths (<= 240), one partial block (241..1024), block
# boundaries (1024*k, +-1), a partial last round (blocks not a multiple of 8), exactly 8 blocks per
# round and more than one round, and the last stripe overlapping the previous one.
BOUNDARY_LENGTHS = sorted(
    set(
        list(range(0, 260))
        + list(range(260, 4161, 7))
        + [1023, 1024, 1025, 2047, 2048, 2049, 8191, 8192, 8193, 8 * 1024 + 64, 9 * 1024 - 1, 9 * 1024 + 1]
        + [16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 17 * 1024 + 640, 65535, 65536, 65537]
    )
)


def test_every_boundary_length_single_leaf() -> None:
    data = pattern(70000, seed=1)
    leaf_size = 1 << 17  # every length below is one (possibly short) leaf
    for n in BOUNDARY_LENGTHS:
        assert emulated(data[:n], leaf_size) == xxh3_leaves(data[:n], leaf_size), n


@pytest.mark.parametrize("leaf_size", [64, 128, 256, 512, 1024, 2048, 4096, 8192, 65536, 1 << 20])
def test_leaf_sizes_with_odd_totals(leaf_size: int) -> None:
    data = pattern(3 * 65536 + 12345, seed=leaf_size)
    for n in (leaf_size - 1, leaf_size, leaf_size + 1, 240, 241, len(data) - 7, len(data)):
        if n < 0:
            continue
        assert emulated(data[:n], leaf_size) == xxh3_leaves(data[:n], leaf_size), (leaf_size, n)


@pytest.mark.parametrize("offset", range(16))
def test_unaligned_start(offset: int) -> None:
    buf = pattern(40000 + 16, seed=7)
    view = memoryview(buf)[offset : offset + 40000]
    assert emulated(view, 4096) == xxh3_leaves(bytes(view), 4096)


def test_matches_cpu_backend_on_a_large_input() -> None:
    data = pattern((1 << 21) + 333, seed=3)
    assert _native.emulate_cuda_leaf_digests(data, 65536) == _native.leaf_digests(data, 65536)


def test_structured_data() -> None:
    # Zeros and all-ones saturate the 32x32 products and the additions in ways random data does not.
    for fill in (0x00, 0xFF, 0x80):
        data = bytes([fill]) * (9 * 1024 + 77)
        assert emulated(data, 8192) == xxh3_leaves(data, 8192)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=20000), st.sampled_from([64, 256, 1024, 4096, 16384]))
def test_property_matches_xxhash(data: bytes, leaf_size: int) -> None:
    assert emulated(data, leaf_size) == xxh3_leaves(data, leaf_size)


def test_rejects_bad_leaf_size() -> None:
    with pytest.raises(ValueError, match="power of two"):
        _native.emulate_cuda_leaf_digests(b"abc", 100)
