"""The two sides of a diff: a checkpoint file or folder, or an in-memory (nested) state_dict,
flattened into tensor leaves and non-tensor leaves keyed by dotted path, in model order.

File tensors are read zero-copy from an mmap of the file at the offsets the format readers give;
nothing from a file is executed. In-memory tensors stay where they are (CPU or GPU).
"""

from __future__ import annotations

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
        from ._diffkernel import buffer_tensor

        return buffer_tensor(self.buffer, self.dtype, self.shape)


@dataclass
class Side:
    label: str
    format: str
    leaves: dict[str, Leaf] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    # True when `values` holds the values themselves; False when they are short reprs from a
    # reader (long lists abbreviated), in which case equal reprs are confirmed with exact values.
    values_exact: bool = True
    warnings: list[str] = field(default_factory=list)
    path: str | None = None
    _maps: list[mmap.mmap] = field(default_factory=list, repr=False)
    _views: list[memoryview] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for leaf in self.leaves.values():
            leaf.buffer = None
            leaf.tensor = None
        for v in self._views:
            v.release()
        self._views.clear()
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # a tensor made from it is still referenced by the caller
                pass
        self._maps.clear()


# ---- in-memory state_dicts -------------------------------------------------------------------


def _is_tensor(v: Any) -> bool:
    t = type(v)
    return t.__module__.startswith("torch") and hasattr(v, "data_ptr") and hasattr(v, "dtype")


def walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(dotted path, leaf, is_tensor) for nested dicts, lists and tuples. A list or tuple of plain
    scalars (betas, a param id list) is one value leaf, as in the format readers."""
    if _is_tensor(obj):
        yield prefix, obj, True
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
        if is_tensor:
            t = logical_bytes_tensor(v)
            side.leaves[key] = Leaf(key, dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size(), tensor=t)
        else:
            side.values[key] = v
    return side


# ---- files -------------------------------------------------------------------------------------


def _formats() -> Any:
    try:
        from . import formats
    except ImportError:
        return None
    return formats


def file_side(path: str) -> Side:
    if not os.path.exists(path):
        raise InputError(path, None, "no such file or directory")
    fmts = _formats()
    if fmts is None:
        return _torch_load_side(path)
    return _layout_side(fmts, path)


def _layout_side(fmts: Any, path: str) -> Side:  # pragma: no cover - replaced when formats lands
    raise NotImplementedError


def _torch_load_side(path: str) -> Side:
    """Stand-in until the format readers land: torch.load with weights_only and mmap."""
    import torch

    from ._tensors import logical_bytes_tensor
    from .digest import dtype_name

    if os.path.isdir(path):
        raise InputError(path, None, "expected a checkpoint file, found a directory")
    fmt = "safetensors" if path.endswith(".safetensors") else "torch-zip"
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(path, None, f"a readable checkpoint ({type(e).__name__}: {e})") from None
    side = Side(label=path, format=fmt, path=path)
    for key, v, is_tensor in walk(obj):
        if is_tensor:
            t = logical_bytes_tensor(v)
            side.leaves[key] = Leaf(key, dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size(), tensor=t)
        else:
            side.values[key] = v
    return side


def open_side(obj: Any, label: str) -> Side:
    if isinstance(obj, (str, os.PathLike)):
        return file_side(os.fspath(obj))
    return memory_side(obj, label)


def exact_values(side: Side) -> dict[str, Any]:
    """The exact non-tensor values of a file side whose reader gave abbreviated reprs. torch's
    weights_only unpickler rebuilds them (it never runs code from the file); tensor data is
    mapped, not read. Falls back to the reprs when that is impossible."""
    if side.values_exact or side.path is None or side.format not in ("torch-zip", "torch-legacy"):
        return side.values
    try:
        import torch

        obj = torch.load(side.path, map_location="cpu", weights_only=True, mmap=side.format == "torch-zip")
    except Exception as e:
        side.warnings.append(f"non-tensor values compared by their short form ({type(e).__name__})")
        return side.values
    return {k: v for k, v, is_tensor in walk(obj) if not is_tensor}
