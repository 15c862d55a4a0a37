"""`fastckpt.diff(a, b)`: compare two checkpoints (files of any supported format, folders) or
in-memory state_dicts (CPU or GPU), bitwise and numerically.

This module owns the diff orchestration and the `DiffReport` data model (its JSON form is the
`fastckpt diff --json` contract, docs/CLI.md). Sides are flattened by `_diffsource`, keys are
paired by `renames`, and each pair of tensors is compared in one pass by `_diffkernel`.
Semantics: docs/DIFF_SEMANTICS.md.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
import types
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ._diffsource import Leaf, Side, open_side
from .errors import UsageError
from .renames import infer_renames

STATUSES = ("equal", "different", "only_a", "only_b", "dtype_changed", "shape_changed", "renamed")
JSON_FORMAT = "fastckpt-diff-v1"


@dataclass
class TensorChange:
    """One tensor key of the report. Statistics are None where they do not apply (a key on one
    side only, a dtype or shape change, or a pair that was not read because digests matched)."""

    key: str
    status: str
    key_b: str | None = None
    dtype: str | None = None
    dtype_b: str | None = None
    shape: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    numel: int | None = None
    n_different: int | None = None
    first_diff_index: int | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    mean_abs_diff: float | None = None
    rms_diff: float | None = None
    rel_change: float | None = None
    nan_inf_introduced: int | None = None
    nan_inf_removed: int | None = None
    max_ulp: int | None = None
    # for renamed entries: whether the tensors under the two names are bitwise equal
    content_equal: bool | None = None
    within_tolerance: bool = False
    order: float = 0.0

    @property
    def fraction_different(self) -> float | None:
        if self.n_different is None or self.numel is None:
            return None
        return self.n_different / self.numel if self.numel else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "key_b": self.key_b,
            "status": self.status,
            "dtype": self.dtype,
            "dtype_b": self.dtype_b,
            "shape": list(self.shape) if self.shape is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "numel": self.numel,
            "n_different": self.n_different,
            "fraction_different": _json_float(self.fraction_different),
            "first_diff_index": self.first_diff_index,
            "max_abs_diff": _json_float(self.max_abs_diff),
            "max_rel_diff": _json_float(self.max_rel_diff),
            "mean_abs_diff": _json_float(self.mean_abs_diff),
            "rms_diff": _json_float(self.rms_diff),
            "rel_change": _json_float(self.rel_change),
            "nan_inf_introduced": self.nan_inf_introduced,
            "nan_inf_removed": self.nan_inf_removed,
            "max_ulp": self.max_ulp,
            "content_equal": self.content_equal,
            "within_tolerance": self.within_tolerance,
        }


@dataclass
class ValueChange:
    """One non-tensor leaf (step, lr, betas, ...), compared by value."""

    key: str
    status: str  # equal | different | only_a | only_b
    a: Any = None
    b: Any = None
    within_tolerance: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "a": _json_value(self.a),
            "b": _json_value(self.b),
            "within_tolerance": self.within_tolerance,
        }


@dataclass
class DiffReport:
    """The result of `diff(a, b)`. `identical` means bitwise identical keys, dtypes, shapes,
    tensor bytes and non-tensor values; `ok` also accepts differences within atol/rtol."""

    a: str
    b: str
    format_a: str
    format_b: str
    atol: float | None
    rtol: float | None
    tensors: list[TensorChange] = field(default_factory=list)
    values: list[ValueChange] = field(default_factory=list)
    renames: list[str] = field(default_factory=list)
    rename_counts: list[tuple[str, int]] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)  # B key -> A key
    ambiguous: list[tuple[list[str], list[str]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)  # files whose tensor digests came from sidecars
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return all(t.status == "equal" for t in self.tensors) and all(
            v.status == "equal" for v in self.values
        )

    @property
    def ok(self) -> bool:
        """Identical, or every difference within tolerance (exit code 0)."""
        return all(t.status == "equal" or t.within_tolerance for t in self.tensors) and all(
            v.status == "equal" or v.within_tolerance for v in self.values
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def by_status(self, status: str) -> list[TensorChange]:
        return [t for t in self.tensors if t.status == status]

    def changed_keys(self) -> set[str]:
        """A's keys (and B's keys for only_b) of every tensor and value that is not equal."""
        keys = {t.key for t in self.tensors if t.status != "equal"}
        keys |= {t.key_b for t in self.tensors if t.status == "renamed" and t.key_b}
        return keys | {v.key for v in self.values if v.status != "equal"}

    @property
    def compat(self) -> dict[str, Any]:
        """What loading B into A's model needs: B's keys renamed by `mapping`, and what would
        still be missing, unexpected or mismatched."""
        missing = [t.key for t in self.tensors if t.status == "only_a"]
        unexpected = [t.key for t in self.tensors if t.status == "only_b"]
        mismatched = [
            t.key
            for t in self.tensors
            if t.status in ("dtype_changed", "shape_changed")
            or (t.status == "renamed" and (t.dtype != t.dtype_b or t.shape != t.shape_b))
        ]
        shape_mismatch = [
            t.key
            for t in self.tensors
            if t.status == "shape_changed" or (t.status == "renamed" and t.shape != t.shape_b)
        ]
        return {
            "mapping": dict(self.mapping),
            "missing": missing,
            "unexpected": unexpected,
            "mismatched": mismatched,
            "loads_strict": not missing and not unexpected and not shape_mismatch,
        }

    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for t in self.tensors:
            counts[t.status] += 1
        counts["within_tolerance"] = sum(
            1 for t in self.tensors if t.status != "equal" and t.within_tolerance
        )
        counts["values_different"] = sum(1 for v in self.values if v.status != "equal")
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "identical": self.identical,
            "ok": self.ok,
            "a": self.a,
            "b": self.b,
            "format_a": self.format_a,
            "format_b": self.format_b,
            "atol": self.atol,
            "rtol": self.rtol,
            "summary": self.summary(),
            "tensors": [t.to_json() for t in self.tensors],
            "values": [v.to_json() for v in self.values],
            "renames": list(self.renames),
            "rename_rules": [{"rule": r, "pairs": n} for r, n in self.rename_counts],
            "compat": self.compat,
            "ambiguous": [{"keys_a": ka, "keys_b": kb} for ka, kb in self.ambiguous],
            "warnings": list(self.warnings),
            "sidecars": list(self.sidecars),
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 6),
        }

    def sorted_changes(self) -> list[TensorChange]:
        """Changed entries (renames of equal tensors are summarized by their rules instead),
        structural changes first, then by largest relative change."""
        rank = {
            "only_a": 0,
            "only_b": 0,
            "dtype_changed": 0,
            "shape_changed": 0,
            "renamed": 1,
            "different": 2,
        }

        def key(t: TensorChange) -> tuple[int, float, float]:
            rel = t.rel_change if t.rel_change is not None else -1.0
            mx = t.max_rel_diff if t.max_rel_diff is not None else -1.0
            return (rank.get(t.status, 3), -_sortable(rel), -_sortable(mx))

        return sorted(
            (
                t
                for t in self.tensors
                if t.status != "equal" and not (t.status == "renamed" and t.content_equal)
            ),
            key=key,
        )

    def format_text(self, limit: int = 50) -> str:
        from ._difftext import format_report

        return format_report(self, limit)

    def __str__(self) -> str:
        return self.format_text()


def _sortable(x: float) -> float:
    return 1e300 if math.isinf(x) or math.isnan(x) else x


def _json_float(x: float | None) -> float | str | None:
    if x is None:
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return repr(v)


# ---- values -------------------------------------------------------------------------------------


def _bitwise_equal(va: Any, vb: Any) -> bool:
    """Equality by value, bitwise for floats (-0.0 != 0.0; NaN == NaN with the same payload)."""
    if isinstance(va, float) and isinstance(vb, float):
        return struct.pack("<d", va) == struct.pack("<d", vb)
    if type(va) is not type(vb):
        return False
    if isinstance(va, (list, tuple)):
        return len(va) == len(vb) and all(_bitwise_equal(x, y) for x, y in zip(va, vb, strict=False))
    if isinstance(va, dict):
        return va.keys() == vb.keys() and all(_bitwise_equal(va[k], vb[k]) for k in va)
    try:
        return bool(va == vb)
    except Exception:
        return repr(va) == repr(vb)


def _within(va: Any, vb: Any, atol: float | None, rtol: float | None) -> bool:
    num = (int, float)
    if isinstance(va, bool) or isinstance(vb, bool):
        return False
    if isinstance(va, num) and isinstance(vb, num):
        if not (math.isfinite(va) and math.isfinite(vb)):
            return False
        d = abs(vb - va)
        return (atol is not None and d <= atol) or (rtol is not None and d <= rtol * abs(va))
    if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)) and len(va) == len(vb):
        return all(_bitwise_equal(x, y) or _within(x, y, atol, rtol) for x, y in zip(va, vb, strict=False))
    return False


def _compare_values(
    sa: Side, sb: Side, atol: float | None, rtol: float | None, warnings: list[str]
) -> list[ValueChange]:
    from ._diffsource import exact_values

    exact: dict[int, dict[str, Any]] = {}

    def resolve(side: Side, key: str, v: Any) -> tuple[Any, bool]:
        if key not in side.inexact:
            return v, True
        if id(side) not in exact:
            exact[id(side)] = exact_values(side)
        got = exact[id(side)]
        return (got[key], True) if key in got else (v, False)

    out: list[ValueChange] = []
    for key, va in sa.values.items():
        if key not in sb.values:
            out.append(ValueChange(key, "only_a", a=va))
            continue
        vb = sb.values[key]
        if key in sa.inexact or key in sb.inexact:
            (va, ea), (vb, eb) = resolve(sa, key, va), resolve(sb, key, vb)
            if not (ea and eb):
                warnings.append(f"value {key!r} compared by its abbreviated form")
                va, vb = (va if not ea else repr(va)), (vb if not eb else repr(vb))
        if _bitwise_equal(va, vb):
            out.append(ValueChange(key, "equal", va, vb, True))
        else:
            within = (atol is not None or rtol is not None) and _within(va, vb, atol, rtol)
            out.append(ValueChange(key, "different", va, vb, within))
    out += [ValueChange(k, "only_b", b=v) for k, v in sb.values.items() if k not in sa.values]
    return out


# ---- tensors ------------------------------------------------------------------------------------


def _leaf_digest(leaf: Leaf) -> int:
    if leaf.digest is not None:
        return leaf.digest
    if leaf.buffer is not None:
        from . import _native
        from .digest import DEFAULT_LEAF_SIZE, _digest_from_leaves

        leaves = _native.leaf_digests(leaf.buffer, DEFAULT_LEAF_SIZE, 0)
        leaf.digest = _digest_from_leaves(
            leaves, DEFAULT_LEAF_SIZE, leaf.nbytes, leaf.dtype, leaf.shape
        ).value
    else:
        from .digest import hash_tensor

        leaf.digest = hash_tensor(leaf.tensor).value
    return leaf.digest


def _tensor_pair(la: Leaf, lb: Leaf) -> tuple[Any, Any]:
    """The two tensors of a pair on one device. Device bytes never go to the host: when one side
    is on a GPU, the other side (host memory or a mapped file) is copied to that GPU."""
    ta, tb = la.as_tensor(), lb.as_tensor()
    if ta.device != tb.device:
        if ta.device.type == "cuda":
            tb = tb.to(ta.device)
        elif tb.device.type == "cuda":
            ta = ta.to(tb.device)
        else:  # pragma: no cover - only cpu and cuda tensors reach here
            tb = tb.to(ta.device)
    return ta, tb


def _set_equal(t: TensorChange, numel: int, dtype: str) -> None:
    """The statistics of a bitwise-equal pair, whether it was read or its digests matched."""
    from ._diffkernel import has_float_stats

    t.numel, t.n_different, t.first_diff_index = numel, 0, None
    t.max_abs_diff = t.max_rel_diff = t.mean_abs_diff = t.rms_diff = t.rel_change = 0.0
    t.nan_inf_introduced = t.nan_inf_removed = 0
    t.max_ulp = 0 if has_float_stats(dtype) else None
    if t.status == "renamed":
        t.content_equal = True
        t.within_tolerance = False  # a rename is a difference
    else:
        t.within_tolerance = True


def _fill_stats(t: TensorChange, st: Any, atol: float | None, rtol: float | None) -> None:
    if st.equal:
        _set_equal(t, st.n_elements, t.dtype or "")
        return
    t.numel = st.n_elements
    t.n_different = st.n_different
    t.first_diff_index = st.first_diff_index
    t.max_abs_diff = st.max_abs_diff
    t.max_rel_diff = st.max_rel_diff
    t.mean_abs_diff = st.mean_abs_diff
    t.rms_diff = st.rms_diff
    t.nan_inf_introduced = st.nan_inf_introduced
    t.nan_inf_removed = st.nan_inf_removed
    t.max_ulp = st.max_ulp
    if st.nan_inf_introduced or st.nan_inf_removed:
        t.rel_change = math.inf  # ||B-A|| is not finite
    elif st.rms_diff is not None and st.norm_a is not None:
        diff_norm = st.rms_diff * math.sqrt(st.n_elements)
        t.rel_change = diff_norm / st.norm_a if st.norm_a > 0 else (math.inf if diff_norm > 0 else 0.0)
    if t.status == "different" and (atol is not None or rtol is not None):
        t.within_tolerance = (
            not st.nan_inf_introduced
            and not st.nan_inf_removed
            and st.max_abs_diff is not None
            and (
                (atol is not None and st.max_abs_diff <= atol)
                or (rtol is not None and st.max_rel_diff is not None and st.max_rel_diff <= rtol)
            )
        )


def _run_pairs(
    jobs: list[tuple[TensorChange, Leaf, Leaf]],
    atol: float | None,
    rtol: float | None,
    threads: int,
    progress: Callable[[int], None],
) -> None:
    from ._diffkernel import compare_buffers, compare_tensor_pairs

    def finish(job: tuple[TensorChange, Leaf, Leaf], st: Any) -> None:
        t, la, lb = job
        if t.status == "renamed":
            t.content_equal = bool(st.equal)
        elif not st.equal:
            t.status = "different"
        _fill_stats(t, st, atol, rtol)
        progress(la.nbytes + lb.nbytes)

    def on_buffers(job: tuple[TensorChange, Leaf, Leaf], n_threads: int) -> None:
        _, la, lb = job
        finish(job, compare_buffers(la.buffer, lb.buffer, la.dtype, la.shape, n_threads))

    host = [j for j in jobs if j[1].buffer is not None and j[2].buffer is not None]
    others = [j for j in jobs if not (j[1].buffer is not None and j[2].buffer is not None)]
    if others:
        # In-memory tensors: one batch; GPU pairs share the kernel launches on their device.
        pairs = [_tensor_pair(la, lb) for _, la, lb in others]
        for j, st in zip(others, compare_tensor_pairs(pairs, threads), strict=True):
            finish(j, st)
    # Large pairs one after another, each spread over all threads by the kernel; small pairs
    # side by side, one thread each (the kernel runs small inputs on one thread anyway).
    n = threads or os.cpu_count() or 1
    big = sorted((j for j in host if j[1].nbytes >= _BIG_PAIR_BYTES), key=lambda j: -j[1].nbytes)
    small = [j for j in host if j[1].nbytes < _BIG_PAIR_BYTES]
    for j in big:
        on_buffers(j, n)
    if n == 1 or len(small) <= 1:
        for j in small:
            on_buffers(j, 1)
    else:
        with ThreadPoolExecutor(min(n, len(small))) as pool:
            list(pool.map(lambda j: on_buffers(j, 1), small))


_BIG_PAIR_BYTES = 8 << 20


def _order_entries(sa: Side, sb: Side, entries: dict[str, TensorChange], b_only: Iterable[str]) -> None:
    """Model order: A's key order; a key only in B goes right after the B key before it."""
    pos_a = {k: float(i) for i, k in enumerate(sa.leaves)}
    for t in entries.values():
        t.order = pos_a.get(t.key, 0.0)
    b_to_a = {t.key_b or t.key: t.key for t in entries.values() if t.status != "only_b"}
    b_only = set(b_only)
    anchor, sub = -1.0, 0
    for kb in sb.leaves:
        if kb in b_only:
            sub += 1
            entries[f"\0b:{kb}"].order = anchor + sub / (len(sb.leaves) + 2)
        elif kb in b_to_a:
            anchor, sub = pos_a.get(b_to_a[kb], anchor), 0


def diff(
    a: Any,
    b: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    threads: int = 0,
    progress: bool = False,
    sidecars: bool = True,
) -> DiffReport:
    """Compare two checkpoints or state_dicts.

    `a` and `b` are each a path (any supported format; the two may differ) or an in-memory
    state_dict, possibly nested (model + optimizer + scheduler + step), with tensors on the CPU
    or a GPU. GPU tensors are compared on their device; no tensor bytes go to the host.
    `atol`/`rtol` classify differing tensors and numbers as within tolerance (docs/CLI.md, "diff").
    With `sidecars`, tensor digests recorded by `fastckpt protect` in a current sidecar are used:
    a pair whose digests are equal is reported equal without reading its bytes.
    """
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and (not isinstance(tol, (int, float)) or not tol >= 0):
            raise UsageError(f"{name} must be a non-negative number, got {tol!r}")
    t0 = time.perf_counter()
    sa = open_side(a, "<state_dict A>", sidecars)
    try:
        sb = open_side(b, "<state_dict B>", sidecars)
        try:
            return _diff_sides(sa, sb, atol, rtol, threads, progress, t0)
        finally:
            sb.close()
    finally:
        sa.close()


def _same_file(a: str | None, b: str | None) -> bool:
    """A path compared with itself (or a hard link to it): its tensors are equal without reading."""
    if a is None or b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _diff_sides(
    sa: Side, sb: Side, atol: float | None, rtol: float | None, threads: int, progress: bool, t0: float
) -> DiffReport:
    report = DiffReport(sa.label, sb.label, sa.format, sb.format, atol, rtol)
    report.warnings += [f"A: {w}" for w in sa.warnings] + [f"B: {w}" for w in sb.warnings]
    report.sidecars = sa.sidecar_files + sb.sidecar_files
    if sa.metadata != sb.metadata and sa.metadata and sb.metadata:
        report.warnings.append(
            f"safetensors metadata differs: {sa.metadata!r} vs {sb.metadata!r} (not compared)"
        )
    entries: dict[str, TensorChange] = {}
    jobs: list[tuple[TensorChange, Leaf, Leaf]] = []
    same_file = _same_file(sa.path, sb.path)

    for key, la in sa.leaves.items():
        lb = sb.leaves.get(key)
        if lb is None:
            continue
        t = TensorChange(key, "equal", dtype=la.dtype, dtype_b=lb.dtype, shape=la.shape, shape_b=lb.shape)
        entries[key] = t
        if la.dtype != lb.dtype:
            t.status = "dtype_changed"
        elif la.shape != lb.shape:
            t.status = "shape_changed"
        elif same_file or (la.digest is not None and la.digest == lb.digest):
            _set_equal(t, la.numel, la.dtype)
        else:
            jobs.append((t, la, lb))

    only_a = [k for k in sa.leaves if k not in sb.leaves]
    only_b = [k for k in sb.leaves if k not in sa.leaves]
    renames = None
    if only_a and only_b:
        da = {k: _leaf_digest(sa.leaves[k]) for k in only_a}
        db = {k: _leaf_digest(sb.leaves[k]) for k in only_b}
        report.bytes_read += sum(sa.leaves[k].nbytes for k in only_a) + sum(
            sb.leaves[k].nbytes for k in only_b
        )

        # A key that a learned rule maps to exactly one key of B is paired even when its dtype or
        # shape changed: "renamed and converted" says more than one key removed and one added.
        renames = infer_renames(da, db, compatible=lambda ka, kb: True)
        report.renames = renames.rule_strings
        report.rename_counts = [(str(r), n) for r, n in renames.rules]
        report.mapping = renames.b_to_a()
        report.ambiguous = renames.ambiguous
    paired_b = set(renames.pairs.values()) if renames else set()

    for key in only_a:
        la = sa.leaves[key]
        kb = renames.pairs.get(key) if renames else None
        if kb is None:
            entries[key] = TensorChange(key, "only_a", dtype=la.dtype, shape=la.shape, numel=la.numel)
            continue
        lb = sb.leaves[kb]
        t = TensorChange(
            key, "renamed", key_b=kb, dtype=la.dtype, dtype_b=lb.dtype, shape=la.shape, shape_b=lb.shape
        )
        entries[key] = t
        if renames is not None and key in renames.equal_pairs:
            _set_equal(t, la.numel, la.dtype)
        elif la.dtype != lb.dtype or la.shape != lb.shape:
            t.content_equal = False  # not compared: see dtype/dtype_b, shape/shape_b
        else:
            jobs.append((t, la, lb))
    b_only_keys = [k for k in only_b if k not in paired_b]
    for key in b_only_keys:
        lb = sb.leaves[key]
        entries[f"\0b:{key}"] = TensorChange(
            key, "only_b", dtype_b=lb.dtype, shape_b=lb.shape, numel=lb.numel
        )

    total = sum(la.nbytes + lb.nbytes for _, la, lb in jobs)
    from ._progress import Progress

    with Progress(f"diff {sa.label} {sb.label}", total, enabled=progress) as bar:
        _run_pairs(jobs, atol, rtol, threads, bar.update)
    report.bytes_read += total

    _order_entries(sa, sb, entries, b_only_keys)
    report.tensors = sorted(entries.values(), key=lambda t: t.order)
    report.values = _compare_values(sa, sb, atol, rtol, report.warnings)
    report.seconds = time.perf_counter() - t0
    return report


class _CallableModule(types.ModuleType):
    """`fastckpt.diff` is this module's `diff` function, imported lazily by the package; if the
    submodule object ever shadows it (it was imported first, e.g. by `fastckpt.report`), calling
    the module still diffs."""

    def __call__(self, *args: Any, **kwargs: Any) -> DiffReport:
        return diff(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
