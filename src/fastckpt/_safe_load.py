"""Loading a checkpoint's Python objects without executing anything stored in it.

Commands that need values rather than a layout (`inspect --check-optimizer`, `migrate`) load
through here:

- torch.save files: the format reader first (it names any pickle global outside the allowlist
  without importing it), then `torch.load(weights_only=True, mmap=True)` (zip) or
  `weights_only=True` (legacy, which torch cannot map);
- safetensors files: the safetensors package, plus the header's `__metadata__`;
- torch.distributed.checkpoint folders: the restricted reader of `.metadata` locates every item,
  each item's torch.save blob is read (bounded by the shard's size) and loaded with
  `weights_only=True`, tensor chunks are stitched into whole tensors and the flattened keys are
  nested again from the metadata's `planner_data` (DCP's own `FileSystemReader` unpickles
  `.metadata` with `pickle.load`, which would run code, so it is not used).

Nothing here imports torch at module level.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

__all__ = ["Loaded", "load_dcp", "load_file"]

TORCH_FORMATS = ("torch-zip", "torch-legacy")


@dataclass
class Loaded:
    """A loaded checkpoint: the object, the format it came from and, for safetensors, the header's
    `__metadata__`."""

    obj: Any
    format: str
    metadata: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def refuse_unsafe(path: str, unsafe: list[str]) -> InputError:
    shown = ", ".join(unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
    return InputError(
        path,
        None,
        f"not loaded: the pickle names globals outside the weights_only allowlist ({shown}); "
        "loading it would import and call them (nothing was executed)",
    )


def load_file(path: str, *, layout: Any = None) -> Loaded:
    """The objects of one checkpoint file, loaded without executing code.

    `layout` is the formats reader's Layout when the caller already has one. Raises InputError when
    the file has a dangerous pickle global, structural problems, or a format that holds no Python
    objects fastckpt can load."""
    from .formats import read_layout

    path = os.fspath(path)
    if layout is None:
        layout = read_layout(path, check_crc=False)
    if layout.unsafe_globals:
        raise refuse_unsafe(path, list(layout.unsafe_globals))
    damage = [p for p in layout.problems if p.kind != "unsafe-pickle"]
    if damage:
        where = f"at offset {damage[0].offset}: " if damage[0].offset is not None else ""
        raise InputError(
            path,
            None,
            f"not loaded: the file is damaged ({damage[0].kind}: {where}{damage[0].message}); "
            "`fastckpt verify` shows every problem",
        )
    fmt = layout.format
    if fmt == "safetensors":
        return _load_safetensors(path)
    if fmt not in TORCH_FORMATS:
        raise InputError(path, None, f"a torch.save or safetensors file, found format {fmt!r}")
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for refused or bad input
        raise InputError(path, None, f"torch.load(weights_only=True) failed: {_first_line(e)}") from None
    return Loaded(obj, fmt)


def _load_safetensors(path: str) -> Loaded:
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(
            path, None, "reading a safetensors file needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata()
            obj = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:
        raise InputError(path, None, f"safetensors could not read the file: {_first_line(e)}") from None
    return Loaded(obj, "safetensors", dict(metadata) if metadata else None)


# ---------------------------------------------------------------------------------------------
# DCP folders
# ---------------------------------------------------------------------------------------------


def _planner_data(dirpath: str) -> dict[str, tuple[Any, ...]] | None:
    """`Metadata.planner_data` (flattened key -> original path) through the restricted unpickler."""
    from .formats._dcp import _MAX_METADATA, DCP_ALLOWED, METADATA_NAME, _state
    from .formats._io import FileView
    from .formats._pickle import PickleError, RestrictedUnpickler
    from .formats._torch import REDUCERS

    with FileView(os.path.join(dirpath, METADATA_NAME)) as fv:
        if fv.size > _MAX_METADATA:
            return None
        try:
            root = RestrictedUnpickler(fv.read(0, fv.size), allowed=DCP_ALLOWED, reducers=REDUCERS).load()
        except PickleError:
            return None
    pd = _state(root).get("planner_data")
    if not isinstance(pd, dict):
        return None
    out: dict[str, tuple[Any, ...]] = {}
    for k, v in pd.items():
        if isinstance(k, str) and isinstance(v, tuple) and v and all(isinstance(p, (str, int)) for p in v):
            out[k] = v
    return out


def optimizer_roots(paths: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Paths of the subtrees that look like optimizer state_dicts: parents of a 'param_groups' entry."""
    roots = set()
    for p in paths:
        for i, part in enumerate(p):
            if part == "param_groups":
                roots.add(tuple(p[:i]))
    return roots


def _set_path(root: dict[Any, Any], path: tuple[Any, ...], value: Any, where: str) -> None:
    """Places `value` at `path` the way DCP nests flattened keys: an int step is a list index."""
    cur: Any = root
    for i, part in enumerate(path):
        last = i == len(path) - 1
        default: Any = None if last else ([] if isinstance(path[i + 1], int) else {})
        if isinstance(cur, list) and isinstance(part, int) and 0 <= part < 1 << 24:
            while len(cur) <= part:
                cur.append(None)
            if last:
                cur[part] = value
                return
            if cur[part] is None:
                cur[part] = default
            cur = cur[part]
        elif isinstance(cur, dict):
            if last:
                cur[part] = value
                return
            cur = cur.setdefault(part, default)
        else:
            raise InputError(where, None, f"planner_data paths that nest consistently, got {path!r}")


def _int_state_keys(obj: Any) -> None:
    """DCP writes dict keys as strings; optimizer state keyed by int param ids gets its ints back."""
    from .optimizer_check import find_optimizer_states

    for _, sd in find_optimizer_states(obj):
        state = sd["state"]
        ids = [p for g in sd["param_groups"] if isinstance(g, Mapping) for p in g.get("params", [])]
        if (
            isinstance(state, dict)
            and ids
            and all(isinstance(p, int) for p in ids)
            and all(isinstance(k, str) and k.isdigit() for k in state)
        ):
            converted = {int(k): v for k, v in state.items()}
            state.clear()
            state.update(converted)


def load_dcp(dirpath: str, *, only_optimizer: bool = False) -> Loaded:
    """The state of a torch.distributed.checkpoint folder (written by FileSystemWriter with the
    default torch.save item serialization), nested as it was saved.

    `only_optimizer` loads only the subtrees that hold optimizer state (a model's weights are not
    read). Raises InputError for folders with problems, transformed (compressed) items and
    safetensors-serialized shards."""
    import torch

    from .formats._dcp import METADATA_NAME, check_dcp_files, read_dcp_metadata
    from .formats._io import FileView
    from .formats._safetensors import looks_like_safetensors

    dirpath = os.fspath(dirpath)
    md = read_dcp_metadata(dirpath)
    _, _, file_problems = check_dcp_files(dirpath, md) if not md.problems else ([], [], [])
    problems = [p for p in md.problems + file_problems if p.kind != "extra-file"]
    if md.unsafe:
        raise refuse_unsafe(os.path.join(dirpath, METADATA_NAME), list(md.unsafe))
    if problems:
        raise InputError(
            dirpath,
            None,
            f"not loaded: {problems[0].kind}: {problems[0].message}; `fastckpt verify` shows every problem",
        )
    planner = _planner_data(dirpath)

    def path_of(fqn: str) -> tuple[Any, ...]:
        return planner.get(fqn, (fqn,)) if planner else (fqn,)

    fqns = list(dict.fromkeys(it.fqn for it in md.items))
    if only_optimizer:
        roots = optimizer_roots([path_of(f) for f in fqns])
        fqns = [f for f in fqns if any(path_of(f)[: len(r)] == r for r in roots)]
    wanted = set(fqns)
    chunks: dict[str, list[tuple[tuple[int, ...] | None, Any]]] = {f: [] for f in fqns}
    views: dict[str, FileView] = {}
    try:
        for it in md.items:
            if it.fqn not in wanted:
                continue
            where = f"{os.path.join(dirpath, it.file)} (item {it.key!r})"
            if it.transformed:
                raise InputError(
                    where, None, "an untransformed item (compressed DCP items are not supported)"
                )
            fv = views.get(it.file)
            if fv is None:
                fv = views[it.file] = FileView(os.path.join(dirpath, it.file))
                if looks_like_safetensors(fv):
                    raise InputError(
                        fv.path,
                        None,
                        "a torch.save item shard (safetensors-serialized DCP shards are not supported)",
                    )
            if it.offset + it.length > fv.size:
                raise InputError(
                    where, fv.size, f"{it.length} bytes at offset {it.offset} (the shard is cut short)"
                )
            blob = fv.read(it.offset, it.length)
            try:
                value = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            except Exception as e:
                raise InputError(
                    where, it.offset, f"an item torch.load(weights_only=True) reads: {_first_line(e)}"
                ) from None
            chunks[it.fqn].append((it.chunk_offsets, value))
    finally:
        for fv in views.values():
            fv.close()
    root: dict[Any, Any] = {}
    for fqn in fqns:
        value = _assemble(dirpath, fqn, chunks[fqn], md.tensors.get(fqn))
        _set_path(root, path_of(fqn), value, dirpath)
    _int_state_keys(root)
    return Loaded(root, "dcp")


def _assemble(dirpath: str, fqn: str, parts: list[tuple[tuple[int, ...] | None, Any]], meta: Any) -> Any:
    """One value from its items: a non-tensor, a whole tensor, or a tensor stitched from chunks."""
    import torch

    if not parts:
        raise InputError(dirpath, None, f"an item for {fqn!r} in the metadata's storage_data")
    if len(parts) == 1 and not isinstance(parts[0][1], torch.Tensor):
        return parts[0][1]
    size = tuple(meta["size"]) if meta and meta.get("size") is not None else None
    if len(parts) == 1 and (size is None or tuple(parts[0][1].shape) == size):
        return parts[0][1]
    if size is None:
        raise InputError(dirpath, None, f"the global size of the chunked tensor {fqn!r} in the metadata")
    first = parts[0][1]
    full = torch.zeros(size, dtype=first.dtype)
    for offsets, chunk in parts:
        if not isinstance(chunk, torch.Tensor) or offsets is None or len(offsets) != len(size):
            raise InputError(dirpath, None, f"tensor chunks with offsets for {fqn!r}")
        index = tuple(slice(o, o + n) for o, n in zip(offsets, chunk.shape, strict=True))
        if any(s.stop > d for s, d in zip(index, size, strict=True)):
            raise InputError(dirpath, None, f"chunks of {fqn!r} inside its global size {list(size)}")
        full[index] = chunk
    return full
