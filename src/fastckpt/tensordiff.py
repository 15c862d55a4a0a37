"""Bitwise tensor diff: `compare_tensors`, `compare_many`, `compare_buffers` and `TensorDiff`.

This module owns the public diff API and its dispatch. CUDA tensors are compared on their GPU (all
pairs of one device in two kernel launches) when `backends()["cuda"]["usable"]`; everything else,
and everything under FASTCKPT_FORCE_CPU=1, goes to the multi-threaded CPU kernel. Both kernels and
the numpy reference (`_diff_reference`) give bit-identical statistics; docs/DIFF_SEMANTICS.md
defines them. torch is imported only when a torch tensor is passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["TensorDiff", "compare_buffers", "compare_many", "compare_tensors"]


@dataclass(frozen=True)
class TensorDiff:
    """What differs between two tensors of the same dtype and shape, compared bit for bit.

    The float statistics (`max_abs_diff` ... `max_ulp`) are None for dtypes compared bitwise only
    (integers, bool, complex, float formats with non-IEEE specials). They cover element pairs whose
    bits differ and where both values are finite; pairs involving NaN or Inf are counted in
    `nan_inf_introduced`/`nan_inf_removed` instead. `mean_abs_diff` and `rms_diff` average over all
    `n_elements`. `max_rel_diff` is |a-b|/|a|, infinite where a is ±0 and b is non-zero.
    """

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
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], dtype: str, shape: tuple[int, ...]) -> TensorDiff:
        """Builds the result from the raw statistics of `_native.diff_buffers`/`cuda_diff`."""
        n = int(stats["n_elements"])
        n_diff = int(stats["n_different"])
        first = int(stats["first_diff_index"])
        floats = bool(stats["float_stats"])
        mean = stats["sum_abs_diff"] / n if n else 0.0
        rms = math.sqrt(stats["sum_sq_diff"] / n) if n else 0.0
        return cls(
            equal=n_diff == 0,
            n_elements=n,
            n_different=n_diff,
            first_diff_index=first if first >= 0 else None,
            max_abs_diff=float(stats["max_abs_diff"]) if floats else None,
            max_rel_diff=float(stats["max_rel_diff"]) if floats else None,
            mean_abs_diff=float(mean) if floats else None,
            rms_diff=float(rms) if floats else None,
            nan_inf_introduced=int(stats["nan_inf_introduced"]) if floats else None,
            nan_inf_removed=int(stats["nan_inf_removed"]) if floats else None,
            max_ulp=int(stats["max_ulp"]) if floats else None,
            dtype=dtype,
            shape=tuple(shape),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinities become the strings "inf" (JSON has no infinity)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("max_abs_diff", "max_rel_diff", "mean_abs_diff", "rms_diff"):
            if d[k] is not None and math.isinf(d[k]):
                d[k] = "inf"
        return d


def _diff_dtype(name: str, itemsize: int) -> str:
    """The diff kernel's dtype for a dtype name: itself when known, else raw bytes of its size."""
    if name in _native.diff_dtypes():
        return name
    if itemsize in (1, 2, 4, 8, 16):
        return f"raw{itemsize}"
    raise UsageError(f"cannot diff dtype {name} ({itemsize}-byte elements): view it as uint8 first")


def _check_same(a_desc: str, b_desc: str, a_key: tuple[Any, ...], b_key: tuple[Any, ...]) -> None:
    if a_key != b_key:
        raise UsageError(
            f"cannot diff {a_desc} against {b_desc}: dtype and shape must match (cast or reshape one first)"
        )


def compare_buffers(
    a: Any, b: Any, dtype: str, shape: Sequence[int] | None = None, *, threads: int = 0
) -> TensorDiff:
    """Diff of two equal-length bytes-like objects holding elements of `dtype` (a torch dtype name
    such as "bfloat16", or rawN for N-byte elements compared bitwise), on the CPU."""
    stats = _buffer_stats(a, b, dtype, threads)
    n = int(stats["n_elements"])
    return TensorDiff.from_stats(stats, dtype, tuple(shape) if shape is not None else (n,))


def _buffer_stats(a: Any, b: Any, dtype: str, threads: int, norm_a: bool = False) -> Mapping[str, Any]:
    """The native statistics dict of two buffers (with "sum_sq_a" when `norm_a`)."""
    try:
        va, vb = memoryview(a), memoryview(b)
    except TypeError:
        raise UsageError("compare_buffers expects two bytes-like objects") from None
    if not (va.c_contiguous and vb.c_contiguous):
        import numpy as np

        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    try:
        return _native.diff_buffers(a, b, dtype, threads, norm_a=norm_a)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def compare_tensors(a: Any, b: Any, *, threads: int = 0) -> TensorDiff:
    """Bitwise diff of two torch tensors or numpy arrays of the same dtype and shape.

    Non-contiguous inputs are compared by their logical (C-order) elements. Two CUDA tensors are
    compared on the GPU (on the current stream of `a`'s device) when the CUDA backend is usable.
    """
    return compare_many([(a, b)], threads=threads)[0]


def compare_many(pairs: Sequence[tuple[Any, Any]], *, threads: int = 0) -> list[TensorDiff]:
    """`compare_tensors` for many pairs; the CUDA pairs of one device share two kernel launches."""
    return [td for td, _ in _compare_many(pairs, threads)]


def _compare_many(
    pairs: Sequence[tuple[Any, Any]], threads: int, norm_a: bool = False
) -> list[tuple[TensorDiff, float | None]]:
    """`compare_many` plus, with `norm_a`, the CPU kernel's ||A||^2 ("sum_sq_a" of
    docs/DIFF_SEMANTICS.md) of each differing float pair it compared (None elsewhere: GPU pairs,
    equal pairs, bitwise-only dtypes)."""
    results: list[tuple[TensorDiff, float | None] | None] = [None] * len(pairs)
    torch_pairs: list[int] = []
    for i, (a, b) in enumerate(pairs):
        if _is_torch_tensor(a) or _is_torch_tensor(b):
            torch_pairs.append(i)
        else:
            results[i] = (_compare_arrays(a, b, threads), None)
    if torch_pairs:
        got = _compare_torch([pairs[i] for i in torch_pairs], threads, norm_a)
        for i, res in zip(torch_pairs, got, strict=True):
            results[i] = res
    return [r for r in results if r is not None]


def _compare_arrays(a: Any, b: Any, threads: int) -> TensorDiff:
    import numpy as np

    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        raise UsageError(
            f"compare_tensors expects torch tensors or numpy arrays, got {type(a).__name__} and "
            f"{type(b).__name__} (for raw bytes use compare_buffers with a dtype)"
        )
    _check_same(
        f"{a.dtype}{list(a.shape)}", f"{b.dtype}{list(b.shape)}", (a.dtype, a.shape), (b.dtype, b.shape)
    )
    dtype = _diff_dtype(a.dtype.name, a.dtype.itemsize)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    stats = _native.diff_buffers(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8), dtype, threads)
    return TensorDiff.from_stats(stats, a.dtype.name, tuple(a.shape))


def _compare_torch(
    pairs: Sequence[tuple[Any, Any]], threads: int, norm_a: bool = False
) -> list[tuple[TensorDiff, float | None]]:
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ._backend import cuda_usable
    from ._tensors import logical_bytes_tensor
    from .digest import dtype_name

    prepared: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []
    for a, b in pairs:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            raise UsageError(
                f"cannot diff a {type(a).__name__} against a {type(b).__name__}: pass two torch tensors"
            )
        _check_same(
            f"{dtype_name(a.dtype)}{list(a.shape)}",
            f"{dtype_name(b.dtype)}{list(b.shape)}",
            (a.dtype, tuple(a.shape)),
            (b.dtype, tuple(b.shape)),
        )
        name = dtype_name(a.dtype)
        prepared.append(
            (logical_bytes_tensor(a), logical_bytes_tensor(b), name, _diff_dtype(name, a.element_size()))
        )

    results: list[tuple[TensorDiff, float | None] | None] = [None] * len(prepared)
    gpu = cuda_usable()
    by_device: dict[int, list[int]] = {}
    for i, (a, b, _, _) in enumerate(prepared):
        if gpu and a.device.type == "cuda" and b.device.type == "cuda":
            by_device.setdefault(_device_index(a), []).append(i)
    for device, idxs in by_device.items():
        from ._cuda import cuda_diff

        batch = []
        for i in idxs:
            a, b, _, kernel_dtype = prepared[i]
            batch.append((a, b if _device_index(b) == device else b.to(a.device), kernel_dtype))
        for i, stats in zip(idxs, cuda_diff(batch, device), strict=True):
            results[i] = (TensorDiff.from_stats(stats, prepared[i][2], tuple(prepared[i][0].shape)), None)

    def on_host(i: int, n_threads: int) -> None:
        a, b, name, kernel_dtype = prepared[i]
        ha = a if a.device.type == "cpu" else a.cpu()
        hb = b if b.device.type == "cpu" else b.cpu()
        nbytes = ha.numel() * ha.element_size()
        # ha and hb stay referenced for the duration of the call (raw-pointer contract).
        stats = _native.diff_buffers_at(
            ha.data_ptr() if nbytes else 0,
            hb.data_ptr() if nbytes else 0,
            nbytes,
            kernel_dtype,
            n_threads,
            norm_a=norm_a,
        )
        results[i] = (TensorDiff.from_stats(stats, name, tuple(a.shape)), stats.get("sum_sq_a"))

    host = [i for i in range(len(prepared)) if results[i] is None]
    # Large pairs one after another, each spread over the threads by the kernel; small pairs (which
    # the kernel runs on one thread) side by side, the GIL released inside the kernel.
    big = {i for i in host if prepared[i][0].numel() * prepared[i][0].element_size() >= _BIG_PAIR_BYTES}
    small = [i for i in host if i not in big]
    for i in sorted(big):
        on_host(i, threads)
    n = threads or os.cpu_count() or 1
    if n > 1 and len(small) > 1:
        with ThreadPoolExecutor(min(n, len(small))) as pool:
            list(pool.map(lambda i: on_host(i, 1), small))
    else:
        for i in small:
            on_host(i, threads)
    return [r for r in results if r is not None]


_BIG_PAIR_BYTES = 8 << 20  # the kernel's own threading threshold


def _device_index(t: torch.Tensor) -> int:
    import torch

    return t.device.index if t.device.index is not None else torch.cuda.current_device()
