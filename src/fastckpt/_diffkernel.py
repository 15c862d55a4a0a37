"""The tensor-pair comparison behind `fastckpt.diff`: the native one-pass diff kernel
(`fastckpt.tensordiff`, docs/DIFF_SEMANTICS.md) plus ||A||, which the relative change
||B-A||/||A|| needs. On the CPU the kernel returns ||A||^2 itself (`norm_a=True`: summed while it
reads A for the difference, so differing tensors are read once); GPU tensors get it from torch on
their device.

File tensors arrive as read-only buffers (slices of an mmap) and need neither torch nor numpy;
in-memory tensors go through `compare_many`, which keeps GPU pairs on their device.
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
    from .tensordiff import TensorDiff, _buffer_stats

    n = 1
    for d in shape:
        n *= d
    nbytes = memoryview(a).nbytes
    itemsize = nbytes // n if n else 1
    kd = kernel_dtype(dtype, itemsize)
    stats = _buffer_stats(a, b, kd, threads, norm_a=True)
    # Sub-byte formats are compared byte by byte: their "elements" are then bytes.
    use_shape = shape if kd != "raw1" or itemsize == 1 else (int(stats["n_elements"]),)
    td = TensorDiff.from_stats(stats, kd, tuple(use_shape))
    sum_sq_a = stats.get("sum_sq_a")
    norm = None if td.equal or td.rms_diff is None or sum_sq_a is None else math.sqrt(sum_sq_a)
    return _stats(td, norm)


def compare_tensor_pairs(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], threads: int = 0
) -> list[PairStats]:
    """`compare_many` over torch tensor pairs (each pair on one device; GPU pairs stay there).
    ||A|| of a differing CPU pair comes from the kernel's own pass; of a GPU pair, from torch."""
    from .tensordiff import _compare_many

    try:
        results = _compare_many(list(pairs), threads=threads, norm_a=True)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = []
    for (a, _), (td, sum_sq_a) in zip(pairs, results, strict=True):
        if td.equal or td.rms_diff is None:
            norm = None
        elif sum_sq_a is not None:
            norm = math.sqrt(sum_sq_a)
        else:
            norm = tensor_norm(a)
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
