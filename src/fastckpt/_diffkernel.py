"""The tensor-pair comparison behind `fastckpt.diff`: the native one-pass diff kernel
(`fastckpt.tensordiff`, docs/DIFF_SEMANTICS.md) plus ||A||, which the relative change
||B-A||/||A|| needs and the kernel does not report.

File tensors arrive as read-only buffers (slices of an mmap) and never need torch; in-memory
tensors go through `compare_many`, which keeps GPU pairs on their device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import UsageError

if TYPE_CHECKING:
    import torch


@dataclass
class PairStats:
    """One pair's statistics: the kernel's TensorDiff fields and ||A||_2 over A's finite elements
    (None when the kernel has no float statistics for the dtype, or the pair is equal)."""

    equal: bool
    n_elements: int
    n_different: int
    first_diff_index: int | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    mean_abs_diff: float | None
    rms_diff: float | None
    nan_inf_introduced: int | None
    nan_inf_removed: int | None
    max_ulp: int | None
    norm_a: float | None = None


def _stats(td: Any, norm_a: float | None) -> PairStats:
    return PairStats(
        td.equal,
        td.n_elements,
        td.n_different,
        td.first_diff_index,
        td.max_abs_diff,
        td.max_rel_diff,
        td.mean_abs_diff,
        td.rms_diff,
        td.nan_inf_introduced,
        td.nan_inf_removed,
        td.max_ulp,
        norm_a,
    )


def has_float_stats(dtype: str) -> bool:
    """Whether the kernel reports float statistics (abs/rel differences, ULP) for this dtype."""
    entry = _native.diff_dtypes().get(dtype)
    return bool(entry and entry[0])


def kernel_dtype(dtype: str, itemsize: int) -> str:
    """The kernel's name for a dtype: itself when known, else raw bytes of the element size."""
    if dtype in _native.diff_dtypes():
        return dtype
    if itemsize in (1, 2, 4, 8, 16):
        return f"raw{itemsize}"
    return "raw1"  # sub-byte or odd formats: compared byte by byte


def compare_buffers(a: Any, b: Any, dtype: str, shape: tuple[int, ...], threads: int = 0) -> PairStats:
    """One pass over two equal-length host buffers (e.g. tensors inside mapped files)."""
    from .tensordiff import compare_buffers as native_compare

    n = 1
    for d in shape:
        n *= d
    nbytes = memoryview(a).nbytes
    itemsize = nbytes // n if n else 1
    kd = kernel_dtype(dtype, itemsize)
    # Sub-byte formats are compared byte by byte: their "elements" are then bytes.
    td = native_compare(a, b, kd, shape if kd != "raw1" or itemsize == 1 else None, threads=threads)
    norm = None if td.equal or td.rms_diff is None else buffer_norm(a, dtype)
    return _stats(td, norm)


def compare_tensor_pairs(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], threads: int = 0
) -> list[PairStats]:
    """`compare_many` over torch tensor pairs (each pair on one device; GPU pairs stay there)."""
    from .tensordiff import compare_many

    try:
        results = compare_many(list(pairs), threads=threads)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = []
    for (a, _), td in zip(pairs, results, strict=True):
        norm = None if td.equal or td.rms_diff is None else tensor_norm(a)
        out.append(_stats(td, norm))
    return out


def tensor_norm(t: torch.Tensor) -> float:
    """||t||_2 over its finite elements, summed in float64 on the tensor's device, in chunks so
    that no full-size temporary is made."""
    import torch

    x = t.detach().reshape(-1)
    total = 0.0
    for start in range(0, x.numel(), _TENSOR_CHUNK):
        c = x[start : start + _TENSOR_CHUNK]
        if c.element_size() == 1:  # float8: torch does not promote it to float64 directly
            c = c.float()
        n = torch.linalg.vector_norm(c, dtype=torch.float64)
        if not bool(torch.isfinite(n)):
            c = torch.where(torch.isfinite(c), c, torch.zeros((), dtype=c.dtype, device=c.device))
            n = torch.linalg.vector_norm(c, dtype=torch.float64)
        total += float(n) ** 2
    return math.sqrt(total)


_TENSOR_CHUNK = 1 << 26


# ---- ||A|| of a host buffer, without torch ------------------------------------------------------

_CHUNK_ELEMS = 1 << 20


def _fp8_table(exp_bits: int, man_bits: int, ieee_specials: bool) -> list[float]:
    """float32 values of all 256 codes of an 8-bit float (e4m3fn: no Inf, NaN at S.1111.111;
    e5m2: IEEE-style Inf and NaN)."""
    bias = (1 << (exp_bits - 1)) - 1
    out = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> man_bits) & ((1 << exp_bits) - 1)
        m = code & ((1 << man_bits) - 1)
        if ieee_specials and e == (1 << exp_bits) - 1:
            out.append(sign * math.inf if m == 0 else math.nan)
        elif not ieee_specials and (code & 0x7F) == 0x7F:
            out.append(math.nan)
        elif e == 0:
            out.append(sign * m * 2.0 ** (1 - bias - man_bits))
        else:
            out.append(sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    return out


def buffer_norm(buf: Any, dtype: str) -> float | None:
    """||A||_2 over the finite elements of a float buffer, or None without numpy or for other
    dtypes. Chunks are summed in float64; within a chunk float32 data is summed by BLAS in float32,
    which is ample for a ratio shown with three digits."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is present wherever torch is
        return None
    codes = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}
    if dtype in codes:
        x = np.frombuffer(buf, dtype=codes[dtype])
    elif dtype in ("float8_e4m3fn", "float8_e5m2"):
        x = np.frombuffer(buf, dtype=np.uint8)
        table = np.asarray(
            _fp8_table(4, 3, False) if dtype == "float8_e4m3fn" else _fp8_table(5, 2, True), np.float32
        )
    else:
        return None
    total = 0.0
    for start in range(0, x.size, _CHUNK_ELEMS):
        c = x[start : start + _CHUNK_ELEMS]
        if dtype == "bfloat16":
            c = (c.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "float16":
            c = c.astype(np.float32)
        elif dtype.startswith("float8"):
            c = table[c]
        s = float(np.dot(c, c))
        if not math.isfinite(s):
            c = np.where(np.isfinite(c), c, 0).astype(np.float64)
            s = float(np.dot(c, c))
        total += s
    return math.sqrt(total)
