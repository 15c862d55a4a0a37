"""The two sides of a diff: a checkpoint file or folder, or an in-memory (nested) state_dict,
flattened into tensor leaves and non-tensor leaves keyed by dotted path, in model order.

File tensors are read zero-copy from an mmap of the file at the offsets the format readers give;
nothing from a file is executed. In-memory tensors stay where they are (CPU or GPU).
"""

from __future__ import annotations

import ast
import contextlib
import math
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InputError, UsageError

if TYPE_CHECKING:
    import torch


@dataclass
class Leaf:
    """One tensor leaf. Exactly one of `tensor` and `buffer` holds its data."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    tensor: Any = None  # torch.Tensor (in-memory side, or a file tensor that is not a plain byte range)
    buffer: Any = None  # memoryview of the file's mmap: the tensor's contiguous logical bytes
    digest: int | None = None  # v1 tensor digest when known without reading (a sidecar)

    @property
    def device(self) -> str:
        if self.buffer is not None:
            return "cpu"
        return str(self.tensor.device)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def as_tensor(self) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor  # type: ignore[no-any-return]
        return buffer_tensor(self.buffer, self.dtype, self.shape)


@dataclass
class Side:
    label: str
    format: str
    leaves: dict[str, Leaf] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    # keys whose value is only known as an abbreviated repr from a format reader (long lists,
    # long strings, objects); the diff confirms equal reprs with exact values when it can.
    inexact: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors __metadata__ (not compared)
    sidecar_files: list[str] = field(default_factory=list)  # files whose tensor digests came from sidecars
    path: str | None = None
    _maps: list[mmap.mmap] = field(default_factory=list, repr=False)
    _views: list[memoryview] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for leaf in self.leaves.values():
            leaf.buffer = None
            leaf.tensor = None
        for v in reversed(self._views):
            with contextlib.suppress(BufferError):  # still exported to a tensor the caller holds
                v.release()
        self._views.clear()
        for m in self._maps:
            with contextlib.suppress(BufferError):  # a tensor made from it is still referenced
                m.close()
        self._maps.clear()


def buffer_tensor(buf: Any, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A zero-copy tensor over a read-only buffer (a slice of a mapped file). torch warns that
    the buffer is not writable; nothing here writes to it."""
    import warnings

    import torch

    dt = getattr(torch, dtype, None)
    if not isinstance(dt, torch.dtype):
        raise UsageError(f"cannot compare a {dtype} tensor from a file with an in-memory tensor")
    if memoryview(buf).nbytes == 0:
        return torch.empty(shape, dtype=dt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(buf, dtype=dt).reshape(shape)


# ---- in-memory state_dicts -------------------------------------------------------------------


def _is_tensor(v: Any) -> bool:
    t = type(v)
    return t.__module__.startswith("torch") and hasattr(v, "data_ptr") and hasattr(v, "dtype")


def walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(dotted path, leaf, is_tensor) for nested dicts, lists and tuples. A list or tuple of plain
    scalars (betas, a param id list) is one value leaf, as in the format readers."""
    if _is_tensor(obj):
        yield prefix, obj, True
    elif isinstance(obj, Mapping) and not obj and not prefix:
        return  # an empty state_dict has no leaves
    elif isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            yield from walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and not all(isinstance(x, _SCALARS) for x in obj):
        for i, v in enumerate(obj):
            yield from walk(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix or "<root>", obj, False


_SCALARS = (int, float, complex, str, bytes, bytearray, bool, type(None))


def memory_side(obj: Any, label: str) -> Side:
    from ._tensors import logical_bytes_tensor
    from .digest import dtype_name

    if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, Mapping):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise UsageError(f"diff expects a path or a (nested) state_dict mapping, got {type(obj).__name__}")
    side = Side(label=label, format="state_dict")
    for key, v, is_tensor in walk(obj):
        if key in side.leaves or key in side.values:
            side.warnings.append(
                f"key {key!r} appears twice (e.g. 'a.b' and 'a' -> 'b'); the last is compared"
            )
        if is_tensor:
            t = logical_bytes_tensor(v)
            side.leaves[key] = Leaf(
                key, dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size(), tensor=t
            )
        else:
            side.values[key] = v
    return side


# ---- files -------------------------------------------------------------------------------------


def file_side(path: str, use_sidecars: bool = True) -> Side:
    from . import formats
    from .remote import exists, is_url, isdir, local_path  # ---- remote storage (report issue)

    path = local_path(path)
    if is_url(path):
        if not exists(path):
            raise InputError(path, None, "expected an existing object, but there is none at this URL")
        if isdir(path):
            raise InputError(
                path, None, "expected a checkpoint object (folders are compared only when local)"
            )
        return _layout_side(formats, path, use_sidecars)
    # ---- end remote storage
    if not os.path.exists(path):
        raise InputError(path, None, "no such file or directory")
    return _layout_side(formats, path, use_sidecars)


# Reader problems that leave the tensors' bytes trustworthy (we never execute pickles).
_BENIGN_PROBLEMS = ("unsafe-pickle", "extra-file", "bad-crc", "other")
# Safetensors `__metadata__` (e.g. format=pt) describes the file, not the checkpoint.
METADATA_PREFIX = "__metadata__."


def _layout_side(fmts: Any, path: str, use_sidecars: bool) -> Side:
    if os.path.isdir(path):
        dl = fmts.read_dir_layout(path)
        side = Side(label=path, format=dl.format, path=path)
        _check_problems(path, dl.problems, side)
        files = [f for f in dl.files if not f.endswith(".index.json") and os.path.basename(f) != ".metadata"]
        for rel in files:
            _add_file(fmts, os.path.join(path, rel), side, rel + ":", use_sidecars)
        return side
    side = Side(label=path, format="", path=path)
    side.format = _add_file(fmts, path, side, "", use_sidecars)
    return side


def sidecar_digests(path: str, size: int) -> dict[tuple[str, int, int], int]:
    """(key, offset, nbytes) -> v1 tensor digest, from the sidecar `protect` wrote beside the file.

    Used only when the sidecar is current: it records the file's size, it is not older than the
    file, its leaf size is the default one (digests must match those computed here), and the
    entry is a v1 tensor digest (not a raw byte range). A file damaged in place after `protect`
    without a change of size or time is not detected here; that is `fastckpt verify`'s job.
    """
    try:
        from .digest import DEFAULT_LEAF_SIZE
        from .sidecar import read_sidecar, sidecar_path_for
    except ImportError:  # pragma: no cover - the sidecar module ships with fastckpt
        return {}
    spath = sidecar_path_for(path)
    try:
        if os.path.getmtime(spath) < os.path.getmtime(path):
            return {}
        sc = read_sidecar(spath)
    except (OSError, InputError):
        return {}
    m = sc.manifest
    if getattr(m, "file_size", None) != size or getattr(m, "leaf_size", None) != DEFAULT_LEAF_SIZE:
        return {}
    try:
        entries = m.tensor_entries()  # type: ignore[union-attr]
    except InputError:
        return {}
    return {(e.key, e.offset, e.nbytes): e.digest for e in entries if not e.raw_range}


def _check_problems(path: str, problems: list[Any], side: Side) -> None:
    for q in problems:
        if q.kind in _BENIGN_PROBLEMS:
            side.warnings.append(f"{path}: {q}")
        else:
            raise InputError(
                path, q.offset, f"a readable checkpoint; found {q.kind}: {q.message} (see 'fastckpt verify')"
            )


def _add_file(fmts: Any, path: str, side: Side, where: str, use_sidecars: bool) -> str:
    layout = fmts.read_layout(path, check_crc=False)
    if layout.format in ("opaque", "zip") and not layout.tensors:
        if where:  # a folder may hold other files
            return str(layout.format)
        raise InputError(
            path,
            None,
            f"a checkpoint (torch.save, safetensors, DCP, sharded folder); found {layout.format} data",
        )
    _check_problems(path, layout.problems, side)
    if layout.unsafe_globals:
        side.warnings.append(f"{path}: pickle references {', '.join(layout.unsafe_globals)} (never executed)")
    for key, v in layout.non_tensor_entries.items():
        if key.startswith(METADATA_PREFIX):
            side.metadata[key[len(METADATA_PREFIX) :]] = v
        else:
            side.values[key], exact = parse_repr(v)
            if not exact:
                side.inexact.add(key)
    known = sidecar_digests(path, layout.size) if use_sidecars and layout.tensors else {}
    if known:
        side.sidecar_files.append(path)
    spans = [t for t in layout.tensors if t.nbytes > 0]
    mm = _map(path, layout.size) if spans else None
    if mm is not None:
        side._maps.append(mm)
    view = memoryview(mm) if mm is not None else None
    if view is not None:
        side._views.append(view)
    for t in layout.tensors:
        if t.key in side.leaves:
            side.warnings.append(f"{path}: key {t.key!r} appears twice; the first is compared")
            continue
        numel = t.numel
        nbytes = numel * t.itemsize
        if t.offset < 0 or t.offset + t.nbytes > layout.size:
            raise InputError(path, t.offset, f"tensor {t.key!r} to lie inside the file ({layout.size} bytes)")
        leaf = Leaf(t.key, t.dtype, tuple(t.shape), nbytes)
        if numel == 0:
            leaf.buffer = b""
        elif t.contiguous:
            assert view is not None
            leaf.buffer = view[t.offset : t.offset + nbytes]
            side._views.append(leaf.buffer)
            if nbytes == t.nbytes:
                leaf.digest = known.get((t.key, t.offset, t.nbytes))
        else:
            assert view is not None
            leaf.tensor = _strided_tensor(view[t.offset : t.offset + t.nbytes], t)
        side.leaves[t.key] = leaf
    return str(layout.format)


_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def parse_repr(r: Any) -> tuple[Any, bool]:
    """A reader's short repr of a non-tensor leaf back to the value, when it is a complete
    Python literal (ints, floats, strings, tuples of them); otherwise (r, False)."""
    if not isinstance(r, str):
        return r, True
    if r in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[r], True
    if r.endswith("...") or len(r) > 4096:
        return r, False
    try:
        return ast.literal_eval(r), True
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return r, False


def _map(path: str, size: int) -> mmap.mmap:
    from .remote import fetch_to_memory, is_url  # ---- remote storage (report issue)

    if is_url(path):
        return fetch_to_memory(path, expected_size=size)  # type: ignore[no-any-return]
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < size:
            raise InputError(path, None, f"{size} bytes (the file shrank while being read)")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _strided_tensor(buf: memoryview, span: Any) -> torch.Tensor:
    """The logical (contiguous) bytes of a view saved with its strides: copied by torch from the
    covering storage range, which lies inside the mapped file."""
    flat = buffer_tensor(buf, span.dtype, (len(buf) // span.itemsize,))
    return flat.as_strided(span.shape, span.stride, 0).contiguous()


def open_side(obj: Any, label: str, use_sidecars: bool = True) -> Side:
    if isinstance(obj, (str, os.PathLike)):
        return file_side(os.fspath(obj), use_sidecars)
    return memory_side(obj, label)


def exact_values(side: Side) -> dict[str, Any]:
    """The exact non-tensor values of a torch file whose reader gave abbreviated reprs. torch's
    weights_only unpickler rebuilds them (it never runs code from the file); tensor data is
    mapped, not read. Returns {} when that is impossible."""
    if side.path is None or side.format not in ("torch-zip", "torch-legacy"):
        return {}
    try:
        import torch

        obj = torch.load(side.path, map_location="cpu", weights_only=True, mmap=side.format == "torch-zip")
    except Exception as e:
        side.warnings.append(f"some non-tensor values compared by their short form ({type(e).__name__})")
        return {}
    return {k: v for k, v, is_tensor in walk(obj) if not is_tensor}
