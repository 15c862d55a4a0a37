"""The tensor-pair comparison used by `fastckpt.diff`: one pass over two equal-dtype, equal-shape
tensors (or byte ranges of mapped files) giving bitwise equality and the difference statistics.

TEMPORARY stand-in written in torch until the native kernel of the GPU engine lands
(`fastckpt.tensordiff`); only this module changes when it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")


def has_float_stats(dtype: str) -> bool:
    """Whether the comparison reports ULP distances for this dtype."""
    return dtype in FLOAT_DTYPES


@dataclass
class PairStats:
    """Statistics of B - A for one pair (docs/DIFF_SEMANTICS.md)."""

    equal: bool
    n_elements: int
    n_different: int
    first_diff_index: int | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    mean_abs_diff: float | None
    rms_diff: float | None
    nan_inf_introduced: int
    nan_inf_removed: int
    max_ulp: int | None
    norm_a: float | None  # ||A||_2 over A's finite elements (for ||B-A||/||A||)


_INT_VIEW = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
_CHUNK = 1 << 24


def _bits(t: torch.Tensor) -> torch.Tensor:
    import torch

    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if t.is_complex():
        t = torch.view_as_real(t)
        return t.view(getattr(torch, _INT_VIEW[t.element_size()])).reshape(-1, 2)
    return t.view(getattr(torch, _INT_VIEW[t.element_size()]))


def _ordered(bits: torch.Tensor, nbits: int) -> torch.Tensor:
    """Sign-magnitude float bits as integers that order like the floats (for ULP distance)."""
    import torch

    b = bits.to(torch.int64)
    if nbits < 64:
        b = b & ((1 << nbits) - 1)
        sign = 1 << (nbits - 1)
        neg = b >= sign
        return torch.where(neg, sign - b, b)
    return torch.where(b < 0, (-(2**63)) - b, b)


def compare_tensors(a: torch.Tensor, b: torch.Tensor) -> PairStats:
    """One comparison of two tensors of the same dtype, shape and device."""
    import torch

    a = a.detach().reshape(-1)
    b = b.detach().reshape(-1)
    n = a.numel()
    is_float = a.is_floating_point()
    is_complex = a.is_complex()
    n_diff = 0
    first: int | None = None
    max_abs = 0.0
    max_rel = 0.0
    sum_abs = 0.0
    sum_sq = 0.0
    norm_sq = 0.0
    intro = removed = 0
    max_ulp = 0
    for start in range(0, n, _CHUNK):
        ca, cb = a[start : start + _CHUNK], b[start : start + _CHUNK]
        ne = _bits(ca) != _bits(cb)
        if ne.dim() == 2:
            ne = ne.any(dim=1)
        k = int(ne.sum())
        if k and first is None:
            first = start + int(ne.to(torch.uint8).argmax())
        n_diff += k
        if a.dtype == torch.bool:
            fa, fb = ca.to(torch.float64), cb.to(torch.float64)
        elif is_complex:
            fa, fb = ca.to(torch.complex128), cb.to(torch.complex128)
        else:
            fa, fb = ca.to(torch.float64), cb.to(torch.float64)
        fin_a, fin_b = torch.isfinite(fa), torch.isfinite(fb)
        intro += int((fin_a & ~fin_b).sum())
        removed += int((~fin_a & fin_b).sum())
        norm_sq += float((torch.where(fin_a, fa, 0).abs() ** 2).sum())
        if not k:
            continue
        both = fin_a & fin_b & ne
        d = torch.where(both, (fb - fa).abs(), torch.zeros((), dtype=torch.float64, device=fa.device))
        max_abs = max(max_abs, float(d.max()))
        sum_abs += float(d.sum())
        sum_sq += float((d * d).sum())
        mag = fa.abs()
        rel = torch.where(mag > 0, d / torch.where(mag > 0, mag, 1), torch.where(d > 0, math.inf, 0.0))
        max_rel = max(max_rel, float(rel.max()))
        if is_float:
            nbits = ca.element_size() * 8
            oa, ob = _ordered(_bits(ca), nbits), _ordered(_bits(cb), nbits)
            valid = ~torch.isnan(fa) & ~torch.isnan(fb) & ne
            if bool(valid.any()):
                dist = (ob.double() - oa.double()).abs()
                max_ulp = max(max_ulp, int(dist[valid].max()))
    has_stats = n_diff > 0
    return PairStats(
        equal=n_diff == 0,
        n_elements=n,
        n_different=n_diff,
        first_diff_index=first,
        max_abs_diff=max_abs if has_stats else 0.0,
        max_rel_diff=max_rel if has_stats else 0.0,
        mean_abs_diff=sum_abs / n if n else 0.0,
        rms_diff=math.sqrt(sum_sq / n) if n else 0.0,
        nan_inf_introduced=intro,
        nan_inf_removed=removed,
        max_ulp=max_ulp if is_float else None,
        norm_a=math.sqrt(norm_sq),
    )


def buffer_tensor(buf: Any, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A zero-copy tensor over a read-only buffer (a slice of a mapped file)."""
    import warnings

    import torch

    dt = getattr(torch, dtype)
    if memoryview(buf).nbytes == 0:
        return torch.empty(shape, dtype=dt)
    with warnings.catch_warnings():
        # The buffer is read-only; nothing here writes to it.
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(buf, dtype=dt).reshape(shape)


def compare_buffers(a: Any, b: Any, dtype: str, shape: tuple[int, ...]) -> PairStats:
    return compare_tensors(buffer_tensor(a, dtype, shape), buffer_tensor(b, dtype, shape))
