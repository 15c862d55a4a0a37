"""Native `_native.sum_squares` (||A|| for the diff's relative change) against an exact Python
reference: every float dtype, boundary lengths around the vector widths, unaligned addresses,
NaN/Inf/subnormal values, thread counts. The summation order is unspecified (the result feeds a
ratio shown to people), so sums are compared to the exactly rounded sum within 1e-12 relative;
the NaN/Inf count is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import _native

torch = pytest.importorskip("torch")

DTYPES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]


def reference(raw: bytes, dtype: str) -> tuple[float, int]:
    t = torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)) if raw else torch.empty(0)
    vals = t.to(torch.float64).tolist() if raw else []
    finite = [v for v in vals if math.isfinite(v)]
    return math.fsum(v * v for v in finite), len(vals) - len(finite)


def special_bytes(dtype: str, n: int, seed: int) -> bytes:
    if n == 0:
        return b""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal(n) * 10.0 ** rng.integers(-6, 4, n))
    t = x.to(getattr(torch, dtype))
    if n > 3:
        t[1] = float("nan")
        if dtype != "float8_e4m3fn":
            t[2] = float("inf")
            t[3] = float("-inf")
    if n > 5:
        t.view(torch.uint8)[5 * t.element_size()] = 1  # a subnormal (or tiny) pattern
    return t.view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, 4099])
def test_matches_exact_reference(dtype: str, n: int) -> None:
    raw = special_bytes(dtype, n, seed=n)
    want_sum, want_bad = reference(raw, dtype)
    for threads in (1, 2):
        got_sum, got_bad = _native.sum_squares(raw, dtype, threads)
        assert got_bad == want_bad
        assert got_sum == pytest.approx(want_sum, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_unaligned_addresses(dtype: str, offset: int) -> None:
    raw = special_bytes(dtype, 257, seed=offset)
    buf = bytearray(offset) + bytearray(raw)
    view = memoryview(buf)[offset:]
    assert _native.sum_squares(view, dtype, 1) == pytest.approx(reference(raw, dtype), rel=1e-12)


def test_large_input_is_split_over_threads() -> None:
    x = np.random.default_rng(3).standard_normal((9 << 20) // 4 + 3).astype(np.float32)
    x[12345] = np.inf
    ref = float(
        np.dot(
            np.where(np.isfinite(x), x, 0).astype(np.float64),
            np.where(np.isfinite(x), x, 0).astype(np.float64),
        )
    )
    for threads in (0, 1, 2, 3):
        s, bad = _native.sum_squares(x, "float32", threads)
        assert bad == 1
        assert s == pytest.approx(ref, rel=1e-12)


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="unsupported dtype int32"):
        _native.sum_squares(b"\0" * 8, "int32")
    with pytest.raises(ValueError, match="not a multiple"):
        _native.sum_squares(b"\0" * 7, "float32")


@settings(max_examples=80, deadline=None)
@given(dtype=st.sampled_from(DTYPES), data=st.binary(max_size=600))
def test_any_bit_patterns(dtype: str, data: bytes) -> None:
    size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 1)
    raw = data[: len(data) // size * size]
    want_sum, want_bad = reference(raw, dtype)
    got_sum, got_bad = _native.sum_squares(raw, dtype, 1)
    assert got_bad == want_bad
    if math.isinf(want_sum):
        assert got_sum == want_sum
    else:
        assert got_sum == pytest.approx(want_sum, rel=1e-12, abs=0.0)


def test_reference_decodes_e4m3fn_top_binade_as_finite() -> None:
    # 0x7e is 448 in e4m3fn (finite); 0x7f is NaN: the reference and the kernel agree on that.
    raw = bytes([0x7E, 0x7F])
    assert reference(raw, "float8_e4m3fn") == (448.0**2, 1)
    assert _native.sum_squares(raw, "float8_e4m3fn") == (448.0**2, 1)
