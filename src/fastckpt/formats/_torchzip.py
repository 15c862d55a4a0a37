"""torch.save zip archives (the default format since torch 1.6) and any other zip.

A torch.save archive holds `<root>/data.pkl` (the object tree, whose tensors name storages by
persistent id), one STORED record `<root>/data/<key>` per storage, and small metadata records
(`.format_version`, `.storage_alignment`, `byteorder`, `version`, `.data/serialization_id`). The
root folder name varies. This module maps each storage to its record's bytes and each tensor to
its byte range, using the restricted unpickler, so nothing in the archive is ever executed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._io import FileView
from ._pickle import PickleError, RestrictedUnpickler
from ._torch import (
    DTYPE_ITEMSIZE,
    REDUCERS,
    TORCH_ALLOWED,
    StorageRef,
    TensorRef,
    WalkResult,
    storage_type_dtype,
    walk,
)
from ._types import Problem, Segment, TensorSpan
from ._zip import ZipEntry, ZipInfo, check_crcs, read_zip

_METADATA_RECORDS = {
    ".format_version",
    ".storage_alignment",
    "byteorder",
    "version",
    ".data/serialization_id",
    ".data/version",
}


@dataclass
class PickleResult:
    """What one torch pickle says: tensors, leaves, globals, and where it ended."""

    walk: WalkResult | None = None
    storages: dict[str, StorageRef] = field(default_factory=dict)
    globals_seen: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    unsafe_offsets: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    end: int | None = None  # absolute offset after STOP
    root: Any = None


def run_torch_pickle(
    data: bytes | memoryview,
    base: int,
    *,
    pos: int = 0,
    legacy: bool = False,
    what: str = "data.pkl",
) -> PickleResult:
    """Interprets a torch.save pickle (zip `data.pkl` or the legacy main pickle)."""
    res = PickleResult()

    def persistent_load(pid: Any, off: int) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise PickleError(off, f"unsupported persistent id {pid!r}"[:200])
        stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        if not isinstance(key, str):
            key = str(key)
        dtype = storage_type_dtype(stype, off)
        if not (isinstance(numel, int) and not isinstance(numel, bool) and numel >= 0):
            raise PickleError(off, f"storage {key!r} has an invalid element count {numel!r}"[:200])
        ref = res.storages.get(key)
        if ref is None:
            ref = StorageRef(key, dtype, DTYPE_ITEMSIZE[dtype], numel, str(location), off)
            res.storages[key] = ref
        if legacy and len(pid) >= 6 and pid[5] is not None:
            # Legacy storage views: (view_key, offset_in_elements, view_size) of the root storage.
            view = pid[5]
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and isinstance(view[1], int)
                and isinstance(view[2], int)
            ):
                raise PickleError(off, "invalid legacy storage view metadata")
            vkey = str(view[0])
            vref = res.storages.get(vkey)
            if vref is None:
                vref = StorageRef(vkey, dtype, ref.itemsize, view[2], str(location), off)
                vref.record = f"view:{key}:{view[1]}"
                res.storages[vkey] = vref
            return vref
        return ref

    up = RestrictedUnpickler(
        data, base=base, pos=pos, allowed=TORCH_ALLOWED, reducers=REDUCERS, persistent_load=persistent_load
    )
    try:
        root = up.load()
        res.end = base + up.pos
        res.root = root
        res.walk = walk(root)
        if res.walk.truncated:
            res.problems.append(
                Problem(base + pos, f"{what}: object tree too large; only part of it was listed", "other")
            )
    except PickleError as e:
        res.problems.append(
            Problem(e.offset, f"{what}: {e.message}", "truncated" if e.truncated else "bad-pickle")
        )
    res.globals_seen = up.globals_seen
    res.unsafe = up.unsafe
    res.unsafe_offsets = up.unsafe_offsets
    for g in up.unsafe:
        res.problems.append(
            Problem(
                up.unsafe_offsets[g],
                f"{what} imports {g}, which is not on the allowlist of checkpoint globals; "
                "torch.load(weights_only=False) would import and call it (it was not executed)",
                "unsafe-pickle",
            )
        )
    return res


def tensor_spans(
    res: PickleResult,
    problems: list[Problem],
    key_prefix: str = "",
    cut: frozenset[str] | set[str] = frozenset(),
) -> list[TensorSpan]:
    """TensorSpans for every walked tensor whose storage has been resolved to file bytes."""
    spans: list[TensorSpan] = []
    if res.walk is None:
        return spans
    for path, ref in res.walk.tensors:
        key = f"{key_prefix}{path}" if path else (key_prefix.rstrip(".") or "<root>")
        if isinstance(ref, StorageRef):
            st = ref
            shape: tuple[int, ...] = (st.numel or 0,)
            t = TensorRef(st, 0, shape, (1,), st.dtype, st.itemsize)
        else:
            t = ref
            st = ref.storage  # type: ignore[assignment]
        if st is None or st.data_offset is None:
            continue
        span = t.span_elements()
        start = t.storage_offset * t.itemsize
        nbytes = span * t.itemsize
        avail = st.data_length if st.data_length is not None else 0
        if span and start + nbytes > avail and st.record not in cut:
            problems.append(
                Problem(
                    st.data_offset + min(start, avail),
                    f"tensor {key!r} ({t.dtype} {list(t.shape)}, storage offset {t.storage_offset}) needs bytes "
                    f"[{start}, {start + nbytes}) of storage {st.record!r}, which has {avail}",
                    "size-mismatch",
                )
            )
        spans.append(
            TensorSpan(
                key, t.dtype, t.shape, st.data_offset + start, nbytes, t.itemsize, st.record, stride=t.stride
            )
        )
    return spans


@dataclass
class ZipLayout:
    zip: ZipInfo
    segments: list[Segment]
    tensors: list[TensorSpan]
    problems: list[Problem]
    unsafe: list[str]
    globals_seen: list[str]
    non_tensor: dict[str, str]
    info: dict[str, Any]
    is_torch: bool
    expected_size: int | None = None


def _find_root(entries: list[ZipEntry]) -> str | None:
    roots = [
        e.name[: -len("data.pkl")] for e in entries if e.name.endswith("/data.pkl") and e.name.count("/") == 1
    ]
    if len(roots) == 1:
        return roots[0]
    if any(e.name == "data.pkl" for e in entries):
        return ""
    return roots[0] if roots else None


def read_torch_zip(
    fv: FileView,
    *,
    base: int = 0,
    end: int | None = None,
    check_crc: bool = True,
    key_prefix: str = "",
    pickle: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ZipLayout:
    end = fv.size if end is None else end
    pickle_cache: dict[int, PickleResult] = {}

    def pickle_at(e: ZipEntry, limit: int) -> PickleResult:
        assert e.data_offset is not None
        if e.data_offset not in pickle_cache:
            view = fv.view(e.data_offset, max(0, limit - e.data_offset))
            pickle_cache[e.data_offset] = run_torch_pickle(view, e.data_offset)
        return pickle_cache[e.data_offset]

    def size_hint(e: ZipEntry) -> int | None:
        # Used only when the central directory is gone: sizes come from the pickle itself.
        assert e.data_offset is not None
        if e.name.endswith("data.pkl"):
            r = pickle_at(e, end)
            return None if r.end is None else r.end - e.data_offset
        m = re.search(r"(?:^|/)data/([^/]+)$", e.name)
        if m and pickle_cache:
            for r in pickle_cache.values():
                st = r.storages.get(m.group(1))
                if st is not None and st.numel is not None:
                    return st.numel * st.itemsize
        return None

    zi = read_zip(fv, base=base, end=end, size_hint=size_hint)
    problems = list(zi.problems)
    segments = list(zi.segments)
    info: dict[str, Any] = {}
    entries = zi.entries
    root = _find_root(entries)
    names = {e.name for e in entries}
    is_script = root is not None and (
        f"{root}constants.pkl" in names or any(n.startswith(f"{root}code/") for n in names)
    )
    is_torch = root is not None and not is_script
    info["zip_root"] = root
    info["records"] = len(entries)
    if is_script:
        info["torchscript"] = True
    res: PickleResult | None = None
    tensors: list[TensorSpan] = []
    if is_torch and pickle:
        pkl = next(e for e in entries if e.name == f"{root}data.pkl")
        if pkl.data_offset is not None and pkl.data_end <= end and not pkl.recovered:
            res = pickle_at(pkl, pkl.data_end)
            if res.end is not None and res.end != pkl.data_end:
                problems.append(
                    Problem(
                        res.end,
                        f"data.pkl: pickle ends {pkl.data_end - res.end} bytes before its record does",
                        "bad-pickle",
                    )
                )
        elif pkl.data_offset is not None and pkl.recovered:
            res = pickle_cache.get(pkl.data_offset) or pickle_at(pkl, end)
        if res is not None:
            problems.extend(res.problems)
            by_name = {e.name: e for e in entries}
            lost: set[str] = set()
            for key, st in res.storages.items():
                rec = by_name.get(f"{root}data/{key}")
                st.record = f"{root}data/{key}"
                if rec is None or rec.data_offset is None:
                    if zi.truncated:
                        lost.add(key)  # reported once below, as tensors lost to the truncation
                        continue
                    problems.append(
                        Problem(
                            st.pid_offset,
                            f"storage {key!r} has no record {st.record!r} in the archive",
                            "missing-record",
                        )
                    )
                    continue
                st.data_offset = rec.data_offset
                st.data_length = max(0, min(rec.csize, end - rec.data_offset))
                want = (st.numel or 0) * st.itemsize
                if rec.method != 0:
                    problems.append(
                        Problem(
                            rec.lh_offset,
                            f"storage record {rec.name!r} is compressed (method {rec.method}); torch.save stores records uncompressed",
                            "bad-header",
                        )
                    )
                elif rec.csize != want:
                    problems.append(
                        Problem(
                            rec.data_offset,
                            f"storage record {rec.name!r} holds {rec.csize} bytes, its storage needs {want} ({st.numel} x {st.dtype})",
                            "size-mismatch",
                        )
                    )
            # The record cut by the end of the file explains its own short storage.
            cut = {e.name for e in entries if e.data_end > end}
            tensors = tensor_spans(res, problems, key_prefix, cut)
            if lost and res.walk is not None:
                lost_keys = [
                    f"{key_prefix}{path}" or "<root>"
                    for path, r in res.walk.tensors
                    if _storage_key(r) in lost
                ]
                if lost_keys:
                    problems.append(
                        Problem(
                            end,
                            f"{len(lost_keys)} tensor(s) are stored after the end of the file, e.g. {lost_keys[0]!r}",
                            "truncated",
                        )
                    )
            info["optimizers"] = res.walk.optimizers if res.walk else []
    # segments for record data
    for e in entries:
        if e.data_offset is None or e.data_offset >= end:
            continue
        rel = e.name[len(root) :] if root and e.name.startswith(root) else e.name
        if rel.endswith(".pkl"):
            kind = "pickle"
        elif is_torch and rel.startswith("data/"):
            kind = "tensor-data"
        elif rel in _METADATA_RECORDS or rel.startswith(".data/"):
            kind = "metadata"
        elif is_script and rel.startswith(("data/", "constants/")):
            kind = "tensor-data"
        else:
            kind = "other"
        segments.append(Segment(e.data_offset, e.csize, kind, e.name))
        if rel == "byteorder" and e.csize <= 16 and e.data_end <= end:
            info["byteorder"] = fv.read(e.data_offset, e.csize).decode("ascii", "replace")
        if rel in (".format_version", "version") and e.csize <= 16 and e.data_end <= end:
            info[rel.lstrip(".")] = fv.read(e.data_offset, e.csize).decode("ascii", "replace").strip()
    if info.get("byteorder") not in (None, "little"):
        problems.append(
            Problem(
                None,
                f"archive byteorder is {info['byteorder']!r}; tensor bytes are not little-endian",
                "other",
            )
        )
    if check_crc and not zi.truncated:
        check_crcs(fv, zi, progress=progress)
        problems.extend(p for p in zi.problems if p.kind == "bad-crc" or p not in problems)
        info["crc_recorded"] = zi.crc_recorded
    expected = None if zi.expected_size is None else base + zi.expected_size
    return ZipLayout(
        zi,
        segments,
        tensors,
        _dedupe(problems),
        res.unsafe if res else [],
        res.globals_seen if res else [],
        {
            f"{key_prefix}{k}" if k != "<root>" else (key_prefix.rstrip(".") or k): v
            for k, v in (res.walk.non_tensor.items() if res and res.walk else [])
        },
        info,
        is_torch,
        expected,
    )


def _storage_key(r: TensorRef | StorageRef) -> str | None:
    st = r.storage if isinstance(r, TensorRef) else r
    return st.key if st is not None else None


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[Any, str, str]] = set()
    out = []
    for p in problems:
        k = (p.offset, p.message, p.kind)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out
