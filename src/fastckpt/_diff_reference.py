"""Pure-numpy reference of the bitwise diff (docs/DIFF_SEMANTICS.md): the test oracle.

It is written from the specification, vectorised but otherwise naive, and shares no code with the
native kernels (it decodes float8 through its own table built with `math.ldexp`). The CPU and CUDA
kernels must agree with it bit for bit, including the two float64 sums, whose order of addition is
part of the specification. Nothing in the fast paths imports this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LANES = 256
CHUNK_BYTES = 16
CHUNKS_PER_LANE = 8
TILE_BYTES = LANES * CHUNKS_PER_LANE * CHUNK_BYTES
TILES_PER_SUPER = 256

# name -> (width in bits, exponent bits, mantissa bits)
FLOAT_FORMATS: dict[str, tuple[int, int, int]] = {
    "float64": (64, 11, 52),
    "float32": (32, 8, 23),
    "float16": (16, 5, 10),
    "bfloat16": (16, 8, 7),
    "float8_e4m3fn": (8, 4, 3),
    "float8_e5m2": (8, 5, 2),
}
BITWISE_SIZES: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
    "uint64": 8, "int64": 8, "complex32": 4, "complex64": 8, "complex128": 16,
    "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "raw1": 1, "raw2": 2, "raw4": 4, "raw8": 8, "raw16": 16,
}  # fmt: skip


def itemsize(dtype: str) -> int:
    if dtype in FLOAT_FORMATS:
        return FLOAT_FORMATS[dtype][0] // 8
    return BITWISE_SIZES[dtype]


def _small_float_table(exp_bits: int, man_bits: int, fn: bool) -> np.ndarray:
    """Value of every 8-bit pattern (NaN/Inf entries are never read: they are classified first)."""
    bias = (1 << (exp_bits - 1)) - 1
    out = np.zeros(256, dtype=np.float64)
    for bits in range(256):
        sign = -1.0 if bits & 0x80 else 1.0
        e = (bits >> man_bits) & ((1 << exp_bits) - 1)
        m = bits & ((1 << man_bits) - 1)
        if e == 0:
            out[bits] = sign * math.ldexp(m, 1 - bias - man_bits)
        elif e == (1 << exp_bits) - 1 and not fn:
            out[bits] = math.nan
        else:
            out[bits] = sign * math.ldexp(m + (1 << man_bits), e - bias - man_bits)
    return out


def _decode(u: np.ndarray, dtype: str) -> np.ndarray:
    """Exact float64 values of the raw bit patterns `u` (uint64 array)."""
    if dtype == "float64":
        return u.view(np.float64)
    if dtype == "float32":
        return u.astype(np.uint32).view(np.float32).astype(np.float64)
    if dtype == "float16":
        return u.astype(np.uint16).view(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        widened: np.ndarray = u.astype(np.uint32) << np.uint32(16)
        return widened.view(np.float32).astype(np.float64)
    if dtype == "float8_e4m3fn":
        return _small_float_table(4, 3, fn=True)[u.astype(np.intp)]
    if dtype == "float8_e5m2":
        return _small_float_table(5, 2, fn=False)[u.astype(np.intp)]
    raise KeyError(dtype)


def _classify(u: np.ndarray, dtype: str) -> np.ndarray:
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf (float8_e4m3fn has no Inf; only S.1111.111 is NaN)."""
    width, e_bits, m_bits = FLOAT_FORMATS[dtype]
    e = (u >> np.uint64(m_bits)) & np.uint64((1 << e_bits) - 1)
    m = u & np.uint64((1 << m_bits) - 1)
    top = e == np.uint64((1 << e_bits) - 1)
    cls = np.zeros(u.shape, dtype=np.uint8)
    if dtype == "float8_e4m3fn":
        cls[top & (m == np.uint64((1 << m_bits) - 1))] = 1
        return cls
    neg = ((u >> np.uint64(width - 1)) & np.uint64(1)) == 1
    cls[top & (m != 0)] = 1
    cls[top & (m == 0) & ~neg] = 2
    cls[top & (m == 0) & neg] = 3
    return cls


def _ordered(u: np.ndarray, width: int) -> np.ndarray:
    mag = (u & np.uint64((1 << (width - 1)) - 1)).astype(np.int64)
    neg = ((u >> np.uint64(width - 1)) & np.uint64(1)) == 1
    out: np.ndarray = np.where(neg, -mag - 1, mag)
    return out


def canonical_sum(contrib: np.ndarray, elem_size: int) -> float:
    """Sum of per-element float64 contributions in the specified order (docs/DIFF_SEMANTICS.md)."""
    per_chunk = CHUNK_BYTES // elem_size
    per_tile = LANES * CHUNKS_PER_LANE * per_chunk
    n_tiles = -(-contrib.size // per_tile)
    if n_tiles == 0:
        return 0.0
    padded = np.zeros(n_tiles * per_tile, dtype=np.float64)
    padded[: contrib.size] = contrib
    r = padded.reshape(n_tiles, CHUNKS_PER_LANE, LANES, per_chunk)
    lanes = np.zeros((n_tiles, LANES), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return _ordered_sum(r, lanes, n_tiles)


def _ordered_sum(r: np.ndarray, lanes: np.ndarray, n_tiles: int) -> float:
    per_chunk = r.shape[3]
    for k in range(CHUNKS_PER_LANE):
        for v in range(per_chunk):
            lanes = lanes + r[:, k, :, v]
    h = LANES // 2
    while h >= 1:
        lanes[:, :h] = lanes[:, :h] + lanes[:, h : 2 * h]
        h //= 2
    tiles = lanes[:, 0]
    n_supers = -(-n_tiles // TILES_PER_SUPER)
    padded_tiles = np.zeros(n_supers * TILES_PER_SUPER, dtype=np.float64)
    padded_tiles[:n_tiles] = tiles
    st = padded_tiles.reshape(n_supers, TILES_PER_SUPER)
    supers = np.zeros(n_supers, dtype=np.float64)
    for j in range(TILES_PER_SUPER):
        supers = supers + st[:, j]
    total = 0.0
    for x in supers.tolist():
        total = total + x
    return total


def reference_sum_sq_a(a: Any, dtype: str) -> float:
    """||A||^2 as `_native.diff_buffers(..., norm_a=True)` defines it: a * a (one float64 product)
    for every finite element of A, +0.0 for NaN/Inf, added in the canonical order."""
    a8 = np.frombuffer(memoryview(a).cast("B"), dtype=np.uint8)
    size = itemsize(dtype)
    ua = a8.view(f"<u{size}").astype(np.uint64)
    finite = _classify(ua, dtype) == 0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        x = np.where(finite, _decode(ua, dtype), 0.0)
        return canonical_sum(x * x, size)


def reference_diff(a: Any, b: Any, dtype: str, norm_a: bool = False) -> dict[str, Any]:
    """The raw statistics dict (the keys of `_native.diff_buffers`) for two equal-length buffers;
    with `norm_a`, also "sum_sq_a" (None unless the dtype has float statistics and a != b)."""
    out = _reference_diff(a, b, dtype)
    if norm_a:
        differs = out["float_stats"] and out["n_different"] > 0
        out["sum_sq_a"] = reference_sum_sq_a(a, dtype) if differs else None
    return out


def _reference_diff(a: Any, b: Any, dtype: str) -> dict[str, Any]:
    a8 = np.frombuffer(memoryview(a).cast("B"), dtype=np.uint8)
    b8 = np.frombuffer(memoryview(b).cast("B"), dtype=np.uint8)
    if a8.size != b8.size:
        raise ValueError("buffers differ in length")
    size = itemsize(dtype)
    n = a8.size // size
    is_float = dtype in FLOAT_FORMATS
    out: dict[str, Any] = {
        "n_elements": n,
        "n_different": 0,
        "first_diff_index": -1,
        "float_stats": is_float,
        "sum_abs_diff": 0.0,
        "sum_sq_diff": 0.0,
        "max_abs_diff": 0.0,
        "max_rel_diff": 0.0,
        "max_ulp": 0,
        "nan_inf_introduced": 0,
        "nan_inf_removed": 0,
    }
    if n == 0:
        return out
    if size == 16:
        wa = a8.view("<u8").reshape(n, 2)
        wb = b8.view("<u8").reshape(n, 2)
        differs = (wa != wb).any(axis=1)
    else:
        ua = a8.view(f"<u{size}").astype(np.uint64)
        ub = b8.view(f"<u{size}").astype(np.uint64)
        differs = ua != ub
    idx = np.flatnonzero(differs)
    out["n_different"] = int(idx.size)
    out["first_diff_index"] = int(idx[0]) if idx.size else -1
    if not is_float or idx.size == 0:
        return out

    ca, cb = _classify(ua, dtype), _classify(ub, dtype)
    nonfinite = (ca != 0) | (cb != 0)
    out["nan_inf_introduced"] = int(np.count_nonzero(differs & (cb != 0) & (cb != ca)))
    out["nan_inf_removed"] = int(np.count_nonzero(differs & (ca != 0) & (ca != cb)))

    sel = differs & ~nonfinite
    va = _decode(ua[sel], dtype)
    vb = _decode(ub[sel], dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        d = np.abs(va - vb)
        aa = np.abs(va)
        rel = np.where(aa == 0, np.where(d == 0, 0.0, np.inf), d / np.where(aa == 0, 1.0, aa))
        sq = d * d
    width = FLOAT_FORMATS[dtype][0]
    oa, ob = _ordered(ua[sel], width), _ordered(ub[sel], width)
    ulp = np.where(oa >= ob, oa.view(np.uint64) - ob.view(np.uint64), ob.view(np.uint64) - oa.view(np.uint64))
    if d.size:
        out["max_abs_diff"] = float(d.max())
        out["max_rel_diff"] = float(rel.max())
        out["max_ulp"] = int(ulp.max())
    c_abs = np.zeros(n, dtype=np.float64)
    c_sq = np.zeros(n, dtype=np.float64)
    c_abs[sel] = d
    c_sq[sel] = sq
    out["sum_abs_diff"] = canonical_sum(c_abs, size)
    out["sum_sq_diff"] = canonical_sum(c_sq, size)
    return out
