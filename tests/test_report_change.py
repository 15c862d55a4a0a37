"""The relative-change kernel: native sums of squares (csrc/cpu/sumsq.cpp) against the numpy
reference in the normative reduction order, bit for bit, and against an independent float64 norm."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import _native
from fastckpt._change import (
    BLOCK,
    SUPPORTED,
    TASK_BLOCKS,
    decode_float8,
    reference_sequence_sums,
    relative_change,
    sequence_sums,
)

NUMPY = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
}
SIZES = [0, 1, 7, 15, 16, 17, 255, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5, TASK_BLOCKS * BLOCK + 17]


def same(a: list[float], b: list[float]) -> bool:
    """Bitwise equality of two lists of doubles (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or struct.pack("<d", x) == struct.pack("<d", y)
        for x, y in zip(a, b, strict=True)
    )


def random_bytes(rng: np.random.Generator, dtype: str, n: int) -> bytes:
    if dtype in NUMPY:
        t = NUMPY[dtype]
        if np.issubdtype(t, np.integer):
            info = np.iinfo(t)
            return rng.integers(info.min, info.max, size=n, dtype=t, endpoint=True).tobytes()
        return (rng.standard_normal(n) * 10).astype(t).tobytes()
    if dtype == "bool":
        return rng.integers(0, 2, size=n, dtype=np.uint8).tobytes()
    if dtype == "bfloat16":
        return (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype.startswith("float8"):
        return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    if dtype == "complex32":
        return (rng.standard_normal(2 * n)).astype(np.float16).tobytes()
    if dtype == "complex64":
        return rng.standard_normal(2 * n).astype(np.float32).tobytes()
    if dtype == "complex128":
        return rng.standard_normal(2 * n).tobytes()
    raise AssertionError(dtype)


def test_dtype_list_matches_reference() -> None:
    assert set(SUPPORTED) == set(_native.sumsq_dtypes())
    assert {
        "float32",
        "bfloat16",
        "float16",
        "float64",
        "float8_e4m3fn",
        "int64",
        "bool",
        "complex64",
    } <= set(SUPPORTED)


@pytest.mark.parametrize("dtype", sorted(_native.sumsq_dtypes()))
@pytest.mark.parametrize("n", SIZES)
def test_native_equals_reference_every_dtype_and_boundary(dtype: str, n: int) -> None:
    rng = np.random.default_rng(n * 7 + len(dtype))
    bufs = [random_bytes(rng, dtype, n) for _ in range(3)]
    got_sq, got_d = sequence_sums(bufs, dtype)
    ref_sq, ref_d = reference_sequence_sums(bufs, dtype)
    assert same(got_sq, ref_sq), (got_sq, ref_sq)
    assert same(got_d, ref_d), (got_d, ref_d)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_result_does_not_depend_on_threads(threads: int) -> None:
    rng = np.random.default_rng(5)
    n = 40 * TASK_BLOCKS * BLOCK // 16  # several tasks, above the threading threshold with k=4
    bufs = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    one = _native.sumsq_sequence(bufs, "float32", 1)
    many = _native.sumsq_sequence(bufs, "float32", threads)
    assert same(one[0], many[0]) and same(one[1], many[1])


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_unaligned_buffers(offset: int) -> None:
    rng = np.random.default_rng(offset)
    n = 2 * BLOCK + 9
    raw = [bytearray(offset) + bytearray(random_bytes(rng, "float32", n)) for _ in range(3)]
    views = [memoryview(r)[offset:] for r in raw]
    aligned = [bytes(v) for v in views]
    assert sequence_sums(views, "float32") == sequence_sums(aligned, "float32")
    assert same(sequence_sums(views, "float32")[1], reference_sequence_sums(aligned, "float32")[1])


def test_none_means_identical_to_previous() -> None:
    rng = np.random.default_rng(2)
    a, b = (random_bytes(rng, "bfloat16", 1000) for _ in range(2))
    sq, d = sequence_sums([a, None, b, None, None], "bfloat16")
    full_sq, full_d = sequence_sums([a, a, b, b, b], "bfloat16")
    assert sq == full_sq
    assert d[0] == 0.0 and d[2] == 0.0 and d[3] == 0.0
    assert d[1] == full_d[1]
    assert same(sq, reference_sequence_sums([a, None, b, None, None], "bfloat16")[0])


def test_identical_nan_buffers_count_as_unchanged_only_when_given_as_none() -> None:
    a = np.array([1.0, np.nan, np.inf], dtype=np.float32).tobytes()
    _, d_none = sequence_sums([a, None], "float32")
    _, d_same = sequence_sums([a, a], "float32")
    assert d_none == [0.0]
    assert math.isnan(d_same[0])  # inf - inf and nan - nan are nan, as IEEE says
    assert same(d_same, reference_sequence_sums([a, a], "float32")[1])


def test_float32_overflow_is_recomputed_in_double() -> None:
    big = np.full(100, 3e19, dtype=np.float32)
    sq, d = sequence_sums([big.tobytes(), (big * np.float32(0.5)).tobytes()], "float32")
    assert math.isfinite(sq[0]) and math.isfinite(d[0])
    assert sq[0] == pytest.approx(100 * 9e38, rel=1e-6)
    assert d[0] == pytest.approx(100 * (1.5e19) ** 2, rel=1e-6)
    ref = reference_sequence_sums([big.tobytes(), (big * np.float32(0.5)).tobytes()], "float32")
    assert same(sq, ref[0]) and same(d, ref[1])


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="supported"):
        sequence_sums([b"\0" * 4, b"\0" * 4], "qint8")
    with pytest.raises(ValueError, match="differ in length"):
        sequence_sums([b"\0" * 8, b"\0" * 4], "float32")
    with pytest.raises(ValueError, match="whole number"):
        sequence_sums([b"\0" * 6], "float32")
    with pytest.raises(ValueError, match="first buffer"):
        sequence_sums([None, b"\0" * 4], "float32")
    with pytest.raises(TypeError, match="contiguous"):
        sequence_sums([np.zeros(8, np.float32)[::2]], "float32")


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"])
def test_float8_decoding_matches_torch(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype, None)
    if tdt is None:
        pytest.skip(f"torch has no {dtype}")
    want = torch.arange(256, dtype=torch.uint8).view(tdt).to(torch.float64).tolist()
    got = [decode_float8(c, dtype) for c in range(256)]
    for c, (g, w) in enumerate(zip(got, want, strict=True)):
        assert (math.isnan(g) and math.isnan(w)) or g == w, (c, g, w)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_relative_change_matches_torch_norms(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(3 * BLOCK + 11, generator=gen).to(getattr(torch, dtype))
    b = (a.double() + 1e-2 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).to(a.dtype)
    sq, d = sequence_sums([a.view(torch.uint8).numpy(), b.view(torch.uint8).numpy()], dtype)
    want = float((b.double() - a.double()).norm() / a.double().norm())
    assert relative_change(d[0], sq[0]) == pytest.approx(want, rel=1e-5)
    assert sq[1] == pytest.approx(float(b.double().pow(2).sum()), rel=1e-5)


def test_relative_change_edge_cases() -> None:
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.0, 5.0) == 0.0
    assert relative_change(4.0, 0.0) is None
    assert relative_change(math.nan, 1.0) is None
    assert relative_change(4.0, 16.0) == 0.5


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["float32", "bfloat16", "float16", "int16", "float8_e5m2", "complex64"]),
    n=st.integers(0, 3 * BLOCK),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    same_mask=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_property_native_equals_reference(
    dtype: str, n: int, k: int, seed: int, same_mask: list[bool]
) -> None:
    rng = np.random.default_rng(seed)
    bufs: list[bytes | None] = [random_bytes(rng, dtype, n) for _ in range(k)]
    for j in range(1, k):
        if same_mask[j]:
            bufs[j] = None
    got = sequence_sums(bufs, dtype)
    ref = reference_sequence_sums(bufs, dtype)
    assert same(got[0], ref[0]) and same(got[1], ref[1])
