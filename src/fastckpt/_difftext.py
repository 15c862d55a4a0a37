"""Terminal rendering of a DiffReport: a table of changed tensors sorted by largest relative
change, renames, value changes, and a one-line verdict."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .diff import DiffReport, TensorChange


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"


def fmt_shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "[" + ",".join(map(str, s)) + "]"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def short(v: Any, limit: int = 40) -> str:
    r = v if isinstance(v, str) else repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def change_label(t: TensorChange) -> str:
    if t.status == "renamed":
        return "renamed" if t.content_equal else "renamed*"
    if t.status == "different" and t.within_tolerance:
        return "within-tol"
    return t.status


def _row(t: TensorChange) -> list[str]:
    key = t.key if t.status != "renamed" else f"{t.key} -> {t.key_b}"
    if t.dtype_b is not None and t.dtype is not None and t.dtype != t.dtype_b:
        what = f"{t.dtype} -> {t.dtype_b}"
    elif t.shape is not None and t.shape_b is not None and t.shape != t.shape_b:
        what = f"{fmt_shape(t.shape)} -> {fmt_shape(t.shape_b)}"
    else:
        what = f"{t.dtype or t.dtype_b} {fmt_shape(t.shape if t.shape is not None else t.shape_b)}"
    frac = t.fraction_different
    nan = ""
    if t.nan_inf_introduced or t.nan_inf_removed:
        nan = f"+{t.nan_inf_introduced}/-{t.nan_inf_removed}"
    return [
        change_label(t),
        key,
        what,
        "-" if frac is None else f"{frac * 100:.3g}%",
        fmt_num(t.max_abs_diff),
        fmt_num(t.max_rel_diff),
        fmt_num(t.rel_change),
        "-" if t.max_ulp is None or not t.n_different else str(t.max_ulp),
        nan or "-",
    ]


HEADER = [
    "status",
    "key",
    "dtype/shape",
    "diff el.",
    "max|B-A|",
    "max rel",
    "|B-A|/|A|",
    "max ULP",
    "NaN/Inf +/-",
]


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    key_col = 1
    widths[key_col] = min(widths[key_col], 60)

    def line(r: list[str]) -> str:
        cells = []
        for i, c in enumerate(r):
            if i == key_col and len(c) > widths[i]:
                c = "..." + c[-(widths[i] - 3) :]
            cells.append(c.ljust(widths[i]) if i <= 2 else c.rjust(widths[i]))
        return "  ".join(cells).rstrip()

    return [line(header)] + [line(r) for r in rows]


def format_report(r: DiffReport, limit: int = 50) -> str:
    out: list[str] = []
    n_a = sum(1 for t in r.tensors if t.status != "only_b")
    n_b = sum(1 for t in r.tensors if t.status != "only_a")
    out.append(f"A: {r.a} ({r.format_a}, {n_a} tensors)")
    out.append(f"B: {r.b} ({r.format_b}, {n_b} tensors)")
    changes = r.sorted_changes()
    if changes:
        shown = changes if limit <= 0 else changes[:limit]
        out.append("")
        out += table([_row(t) for t in shown], HEADER)
        if len(shown) < len(changes):
            out.append(f"... {len(changes) - len(shown)} more changed tensors (--limit 0 shows all)")
    if any(t.status == "renamed" and not t.content_equal for t in changes):
        out.append("(renamed*: renamed and changed)")
    if r.renames:
        out.append("")
        out.append("renames (A -> B):")
        for rule, n in r.rename_counts:
            out.append(f"  {rule}  ({n} keys)")
    for ka, kb in r.ambiguous:
        out.append(f"  ambiguous: {short(ka, 60)} <-> {short(kb, 60)} (equal tensors, no unique pairing)")
    vals = [v for v in r.values if v.status != "equal"]
    if vals:
        out.append("")
        out.append("values:")
        for v in vals:
            if v.status == "only_a":
                out.append(f"  {v.key}: only in A ({short(v.a)})")
            elif v.status == "only_b":
                out.append(f"  {v.key}: only in B ({short(v.b)})")
            else:
                tol = "  (within tolerance)" if v.within_tolerance else ""
                out.append(f"  {v.key}: {short(v.a)} -> {short(v.b)}{tol}")
    for w in r.warnings:
        out.append(f"warning: {w}")
    s = r.summary()
    parts = [
        f"{s[k]} {k.replace('_', ' ')}"
        for k in ("equal", "different", "renamed", "only_a", "only_b", "dtype_changed", "shape_changed")
        if s[k]
    ]
    if s["within_tolerance"]:
        parts.append(f"{s['within_tolerance']} within tolerance")
    if s["values_different"]:
        parts.append(f"{s['values_different']} values differ")
    out.append("")
    out.append("summary: " + (", ".join(parts) or "no tensors"))
    rate = r.bytes_read / r.seconds / 1e9 if r.seconds > 0 else 0.0
    out.append(f"read {fmt_bytes(r.bytes_read)} in {r.seconds:.3f} s ({rate:.2f} GB/s)")
    verdict = "IDENTICAL" if r.identical else ("WITHIN TOLERANCE" if r.ok else "DIFFERENT")
    out.append(f"result: {verdict}")
    return "\n".join(out)
