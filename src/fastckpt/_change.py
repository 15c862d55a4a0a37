"""How much a tensor moved between consecutive checkpoints: sums of squares from which the report
derives the RMS-based relative change ||B-A|| / ||A||.

`sequence_sums(buffers, dtype)` runs the native kernel (csrc/cpu/sumsq.cpp), which walks the same
tensor in all checkpoints at once so each byte is read from memory once. `reference_sequence_sums`
is the numpy oracle with the same, normative reduction order (csrc/cpu/sumsq.hpp); the tests hold
the two equal bit for bit. Never imports torch; numpy only for the reference and float8 tables.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from . import _native

BLOCK = 4096  # elements per block (kSumsqBlock)
TASK_BLOCKS = 64  # blocks per task (kSumsqTaskBlocks)
LANES = 16

SUPPORTED: tuple[str, ...] = tuple(_native.sumsq_dtypes())
_FLOAT8 = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")


def supported(dtype: str) -> bool:
    return dtype in SUPPORTED


def sequence_sums(
    buffers: Sequence[Any | None], dtype: str, *, threads: int = 0
) -> tuple[list[float], list[float]]:
    """Sums of squares over one tensor in consecutive checkpoints.

    `buffers[j]` holds the tensor's bytes in checkpoint j (all of one length), or None when it is
    identical to `buffers[j - 1]` (then it is not read, and its difference is exactly 0). Returns
    (sum(X_j^2) for each j, sum((X_j - X_{j-1})^2) for each j >= 1). Values are converted to
    double; complex values count as (re, im) pairs. Non-finite values propagate into the sums.
    Raises ValueError for an unsupported dtype or buffers of different lengths.
    """
    sq, sq_diff = _native.sumsq_sequence(list(buffers), dtype, threads)
    return list(sq), list(sq_diff)


def relative_change(sq_diff: float, sq_a: float) -> float | None:
    """||B-A|| / ||A||; 0 when nothing changed, None when undefined (A is zero and B is not, or a
    sum is not finite)."""
    if not (math.isfinite(sq_diff) and math.isfinite(sq_a)):
        return None
    if sq_diff == 0.0:
        return 0.0
    if sq_a == 0.0:
        return None
    return math.sqrt(sq_diff / sq_a)


# ---------------------------------------------------------------------------------------------
# The numpy reference (test oracle), with the reduction order of csrc/cpu/sumsq.hpp
# ---------------------------------------------------------------------------------------------


def decode_float8(code: int, dtype: str) -> float:
    """The value of a float8 code: e4m3fn (no infinities, S.1111.111 is NaN), e5m2 (IEEE-like),
    and the fnuz variants (bias + 1, 0x80 is the only NaN, no negative zero)."""
    exp_bits, man_bits = (4, 3) if "e4m3" in dtype else (5, 2)
    fnuz = dtype.endswith("fnuz")
    fn = dtype.endswith("fn") or fnuz
    bias = (1 << (exp_bits - 1)) - 1 + (1 if fnuz else 0)
    sign = -1.0 if code & 0x80 else 1.0
    e = (code >> man_bits) & ((1 << exp_bits) - 1)
    m = code & ((1 << man_bits) - 1)
    if fnuz and code == 0x80:
        return math.nan
    if not fnuz:
        if fn and e == (1 << exp_bits) - 1 and m == (1 << man_bits) - 1:
            return math.nan
        if not fn and e == (1 << exp_bits) - 1:
            return math.nan if m else sign * math.inf
    if e == 0:
        return sign * m * 2.0 ** (1 - bias - man_bits)
    return sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)


@functools.cache
def _float8_table(dtype: str) -> Any:
    import numpy as np

    return np.array([decode_float8(c, dtype) for c in range(256)], dtype=np.float64)


_VIEWS = {
    "float32": "<f4",
    "float64": "<f8",
    "float16": "<f2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "u1",
    "int16": "<i2",
    "uint16": "<u2",
    "int32": "<i4",
    "uint32": "<u4",
    "int64": "<i8",
    "uint64": "<u8",
    "complex32": "<f2",
    "complex64": "<f4",
    "complex128": "<f8",
}
# dtypes whose values are exact in float32 and whose terms are computed in float32.
SINGLE = ("float32", "float16", "bfloat16", *_FLOAT8, "complex32", "complex64")


def to_float(buf: Any, dtype: str) -> Any:
    """The elements of a little-endian byte buffer as float32 (SINGLE dtypes) or float64 (others);
    complex values become (re, im) pairs. Every conversion is exact except int64/uint64 beyond 2**53,
    which round to nearest like a C cast."""
    import numpy as np

    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype == "bfloat16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype in _FLOAT8:
        return _float8_table(dtype)[raw].astype(np.float32)
    if dtype in _VIEWS:
        return raw.view(_VIEWS[dtype]).astype(np.float32 if dtype in SINGLE else np.float64)
    raise ValueError(f"no relative change for dtype {dtype!r}")


def _lanes_total(terms: Any) -> float:
    """Terms added to lane i % 16 in their own precision, lanes folded pairwise in double."""
    import numpy as np

    pad = -terms.size % LANES
    if pad:
        terms = np.concatenate([terms, np.zeros(pad, dtype=terms.dtype)])
    acc = (
        np.cumsum(terms.reshape(-1, LANES), axis=0, dtype=terms.dtype)[-1] if terms.size else np.zeros(LANES)
    )
    v = [float(x) for x in acc]
    return (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) + (
        ((v[8] + v[9]) + (v[10] + v[11])) + ((v[12] + v[13]) + (v[14] + v[15]))
    )


def _block_total(x: Any, y: Any | None) -> float:
    import numpy as np

    t = x * x if y is None else (x - y) * (x - y)
    total = _lanes_total(t)
    if math.isinf(total) and x.dtype == np.float32:
        x64 = x.astype(np.float64)
        t = x64 * x64 if y is None else (x64 - y.astype(np.float64)) ** 2
        total = _lanes_total(t)
    return total


def _ordered_sum(block_totals: list[float]) -> float:
    total = 0.0
    for lo in range(0, len(block_totals), TASK_BLOCKS):
        task = 0.0
        for bt in block_totals[lo : lo + TASK_BLOCKS]:
            task += bt
        total += task
    return total


def reference_sequence_sums(buffers: Sequence[Any | None], dtype: str) -> tuple[list[float], list[float]]:
    """Pure numpy version of `sequence_sums`, in the normative order (slow; for tests)."""
    import numpy as np

    if not buffers or buffers[0] is None:
        raise ValueError("the first buffer must be given")
    with np.errstate(all="ignore"):  # overflow and inf - inf are part of the definition
        return _reference(buffers, dtype)


def _reference(buffers: Sequence[Any | None], dtype: str) -> tuple[list[float], list[float]]:
    xs = [None if b is None else to_float(b, dtype) for b in buffers]
    n = int(to_float(buffers[0], dtype).size)
    n_blocks = -(-n // BLOCK)
    sq: list[float] = []
    sq_diff: list[float] = []
    prev: Any = None
    for j, x in enumerate(xs):
        if x is None:
            sq.append(sq[-1])
            sq_diff.append(0.0)
            continue
        sq.append(_ordered_sum([_block_total(x[b * BLOCK : (b + 1) * BLOCK], None) for b in range(n_blocks)]))
        if j:
            sq_diff.append(
                _ordered_sum(
                    [
                        _block_total(x[b * BLOCK : (b + 1) * BLOCK], prev[b * BLOCK : (b + 1) * BLOCK])
                        for b in range(n_blocks)
                    ]
                )
            )
        prev = x
    return sq, sq_diff
