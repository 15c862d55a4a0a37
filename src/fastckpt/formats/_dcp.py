"""torch.distributed.checkpoint (DCP) folders: `.metadata` plus `*.distcp` storage files.

`.metadata` is a pickle of `torch.distributed.checkpoint.metadata.Metadata`. It is read with the
restricted unpickler (the dataclasses become inert placeholders) to get, for every item, the
storage file, byte offset and length (`storage_data: MetadataIndex -> _StorageInfo`) and, for
tensors, dtype, global size and chunk offsets (`state_dict_metadata`). With the default
FileSystemWriter every item is a torch.save zip blob inside the .distcp file; those blobs are
mapped like torch.save files so damage resolves to tensor keys.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ._io import FileView, OutOfBounds
from ._pickle import Global, Obj, PickleError, RestrictedUnpickler
from ._safetensors import looks_like_safetensors, read_safetensors
from ._segments import tile
from ._torch import DTYPE_ITEMSIZE, REDUCERS, TORCH_ALLOWED
from ._torchzip import read_torch_zip
from ._types import Layout, Problem, Segment, TensorSpan

METADATA_NAME = ".metadata"
_MAX_METADATA = 1 << 30

DCP_ALLOWED = (
    TORCH_ALLOWED
    | {
        f"torch.distributed.checkpoint.metadata.{n}"
        for n in (
            "Metadata",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "MetadataIndex",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",
        )
    }
    | {
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "torch.distributed.checkpoint.planner.WriteItemType",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "builtins.getattr",  # enum members pickle as getattr(EnumClass, name) in some versions
    }
)


@dataclass
class DcpItem:
    fqn: str
    chunk_offsets: tuple[int, ...] | None
    file: str
    offset: int
    length: int
    transformed: bool = False
    # tensor metadata when known
    dtype: str | None = None
    size: tuple[int, ...] | None = None
    chunk_sizes: tuple[int, ...] | None = None

    @property
    def key(self) -> str:
        if self.chunk_offsets and any(self.chunk_offsets):
            return f"{self.fqn}@{','.join(map(str, self.chunk_offsets))}"
        return self.fqn


@dataclass
class DcpMetadata:
    items: list[DcpItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    globals_seen: list[str] = field(default_factory=list)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)  # fqn -> dtype/size/chunks
    bytes_items: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _state(o: Any) -> dict[str, Any]:
    if isinstance(o, Obj):
        st = o.state
        if isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict):
            st = {**(st[0] or {}), **st[1]}
        if isinstance(st, dict):
            return st
        if o.kwargs:
            return dict(o.kwargs)
    return {}


def _ints(v: Any) -> tuple[int, ...] | None:
    if isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return tuple(v)
    return None


def read_dcp_metadata(dirpath: str) -> DcpMetadata:
    md = DcpMetadata()
    mpath = os.path.join(dirpath, METADATA_NAME)
    try:
        with FileView(mpath) as fv:
            if fv.size > _MAX_METADATA:
                md.problems.append(
                    Problem(
                        None,
                        f"{METADATA_NAME} is {fv.size} bytes, larger than the {_MAX_METADATA}-byte limit",
                        "bad-header",
                    )
                )
                return md
            up = RestrictedUnpickler(fv.read(0, fv.size), allowed=DCP_ALLOWED, reducers=REDUCERS)
            try:
                root = up.load()
            except PickleError as e:
                md.problems.append(
                    Problem(
                        e.offset,
                        f"{METADATA_NAME}: {e.message}",
                        "truncated" if e.truncated else "bad-pickle",
                    )
                )
                return md
            finally:
                md.unsafe = up.unsafe
                md.globals_seen = up.globals_seen
                for g in up.unsafe:
                    md.problems.append(
                        Problem(up.unsafe_offsets[g], f"{METADATA_NAME} imports {g}, which is not on the allowlist of DCP metadata globals; "
                                "unpickling it would import and call it (it was not executed)", "unsafe-pickle")
                    )  # fmt: skip
    except OutOfBounds as e:  # pragma: no cover - reads are bounded by fv.size above
        md.problems.append(Problem(e.offset, str(e), "truncated"))
        return md
    if not (isinstance(root, Obj) and isinstance(root.func, Global) and root.func.name == "Metadata"):
        md.problems.append(
            Problem(
                0,
                f"{METADATA_NAME} does not hold a torch.distributed.checkpoint Metadata object",
                "bad-header",
            )
        )
        return md
    st = _state(root)
    sdm = st.get("state_dict_metadata")
    if isinstance(sdm, dict):
        for fqn, meta in sdm.items():
            if not isinstance(meta, Obj) or not isinstance(meta.func, Global):
                continue
            if meta.func.name == "BytesStorageMetadata":
                md.bytes_items.append(str(fqn))
                continue
            ms = _state(meta)
            props = ms.get("properties")
            dtype = None
            pst = props.state if isinstance(props, Obj) else None
            if isinstance(pst, tuple) and pst and isinstance(pst[0], Global):
                dtype = pst[0].name
            elif isinstance(pst, dict) and isinstance(pst.get("dtype"), Global):
                dtype = pst["dtype"].name
            chunks = []
            for c in ms.get("chunks") or []:
                cs = _state(c)
                chunks.append((_ints(cs.get("offsets")), _ints(cs.get("sizes"))))
            md.tensors[str(fqn)] = {"dtype": dtype, "size": _ints(ms.get("size")), "chunks": chunks}
    sd = st.get("storage_data")
    if not isinstance(sd, dict):
        md.problems.append(
            Problem(
                None,
                f"{METADATA_NAME} has no storage_data map (not written by FileSystemWriter?)",
                "bad-header",
            )
        )
        return md
    for idx, sinfo in sd.items():
        i_st = _state(idx)
        s_st = _state(sinfo)
        fqn = i_st.get("fqn")
        rel, off, length = s_st.get("relative_path"), s_st.get("offset"), s_st.get("length")
        if (
            not isinstance(fqn, str)
            or not isinstance(rel, str)
            or not isinstance(off, int)
            or not isinstance(length, int)
            or off < 0
            or length < 0
        ):
            md.problems.append(
                Problem(None, f"{METADATA_NAME}: malformed storage entry for {fqn!r}", "bad-header")
            )
            continue
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            md.problems.append(
                Problem(
                    None,
                    f"{METADATA_NAME}: storage file {rel!r} for {fqn!r} is outside the checkpoint folder",
                    "bad-header",
                )
            )
            continue
        item = DcpItem(
            fqn,
            _ints(i_st.get("offset")),
            rel,
            off,
            length,
            transformed=bool(s_st.get("transform_descriptors")),
        )
        t = md.tensors.get(fqn)
        if t is not None:
            item.dtype = t["dtype"]
            item.size = t["size"]
            for co, cs in t["chunks"]:
                if co == item.chunk_offsets:
                    item.chunk_sizes = cs
        md.items.append(item)
    md.info["version"] = st.get("version")
    return md


def storage_files(md: DcpMetadata) -> list[str]:
    return sorted({it.file for it in md.items})


def check_dcp_files(dirpath: str, md: DcpMetadata) -> tuple[list[str], list[str], list[Problem]]:
    """(missing files, extra files, problems) of a DCP folder against its metadata."""
    problems: list[Problem] = []
    need: dict[str, int] = {}
    for it in md.items:
        need[it.file] = max(need.get(it.file, 0), it.offset + it.length)
    missing = []
    for rel, n in sorted(need.items()):
        p = os.path.join(dirpath, rel)
        if not os.path.isfile(p):
            missing.append(rel)
            keys = sorted({it.key for it in md.items if it.file == rel})
            problems.append(
                Problem(
                    None, f"shard {rel!r} is missing ({len(keys)} item(s), e.g. {keys[0]!r})", "missing-file"
                )
            )
            continue
        size = os.path.getsize(p)
        st_problems = _safetensors_shard_problems(p, rel, md)
        if st_problems is not None:  # SAFETENSORS serialization: the file's own header places items
            problems.extend(st_problems)
            continue
        if size < n:
            cut = sorted(it.key for it in md.items if it.file == rel and it.offset + it.length > size)
            problems.append(
                Problem(
                    size,
                    f"shard {rel!r} is {size} bytes, the metadata needs {n}: {len(cut)} item(s) cut off, e.g. {cut[0]!r}",
                    "truncated",
                )
            )
        elif size > n:
            problems.append(
                Problem(
                    n, f"shard {rel!r} has {size - n} bytes after its last item (offset {n})", "size-mismatch"
                )
            )
    extra = []
    for root, dirs, files in os.walk(dirpath):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(root, f), dirpath)
            if rel == METADATA_NAME or rel in need or rel.endswith(".fastckpt"):
                continue
            extra.append(rel)
            if rel.endswith(".distcp"):
                problems.append(
                    Problem(None, f"storage file {rel!r} is not referenced by {METADATA_NAME}", "extra-file")
                )
    return missing, extra, problems


def read_dcp_shard(fv: FileView, path: str, *, check_crc: bool = True) -> Layout:
    size = fv.size
    dirpath = os.path.dirname(os.path.abspath(path))
    rel = os.path.basename(path)
    layout = Layout(path, "dcp-shard", size, [], [], [], [], {})
    if not os.path.isfile(os.path.join(dirpath, METADATA_NAME)):
        layout.problems.append(
            Problem(
                None, f"no {METADATA_NAME} next to this shard: its items cannot be located", "missing-file"
            )
        )
        layout.segments = tile(size, [])
        return layout
    md = read_dcp_metadata(dirpath)
    layout.problems.extend(md.problems)
    layout.unsafe_globals = list(md.unsafe)
    layout.globals_seen = list(md.globals_seen)
    items = sorted((it for it in md.items if it.file == rel), key=lambda i: i.offset)
    if looks_like_safetensors(fv):
        return _safetensors_shard(fv, layout, items)
    segments: list[Segment] = []
    need = max((it.offset + it.length for it in items), default=0)
    if need > size:
        layout.expected_size = need
    for it in items:
        end = it.offset + it.length
        if end > size:
            layout.problems.append(
                Problem(
                    min(it.offset, size),
                    f"item {it.key!r} needs bytes [{it.offset}, {end}), the shard has {size}",
                    "truncated",
                )
            )
        if it.offset >= size:
            continue
        is_zip = it.length >= 4 and fv.read(it.offset, 4) == b"PK\x03\x04" and not it.transformed
        if is_zip:
            z = read_torch_zip(
                fv, base=it.offset, end=min(end, size), check_crc=check_crc, key_prefix=it.key + "."
            )
            segments.extend(z.segments)
            # storage ids must be unique within the shard: every blob has its own archive/data/0
            layout.tensors.extend(
                dataclasses.replace(t, storage=f"{rel}@{it.offset}:{t.storage}") for t in z.tensors
            )
            layout.problems.extend(z.problems)
            layout.non_tensor_entries.update(z.non_tensor)
            for g in z.unsafe:
                if g not in layout.unsafe_globals:
                    layout.unsafe_globals.append(g)
        elif it.dtype in DTYPE_ITEMSIZE and it.chunk_sizes is not None and not it.transformed:
            isz = DTYPE_ITEMSIZE[it.dtype]
            segments.append(Segment(it.offset, it.length, "tensor-data", it.key))
            numel = 1
            for d in it.chunk_sizes:
                numel *= d
            if numel * isz != it.length:
                layout.problems.append(
                    Problem(
                        it.offset,
                        f"item {it.key!r} is {it.length} bytes, {it.dtype} {list(it.chunk_sizes)} needs {numel * isz}",
                        "size-mismatch",
                    )
                )
            layout.tensors.append(
                TensorSpan(it.key, it.dtype, it.chunk_sizes, it.offset, it.length, isz, f"{rel}@{it.offset}")
            )
        else:
            segments.append(Segment(it.offset, it.length, "other", it.key))
    layout.segments = tile(size, segments)
    return layout


def _sharding_offsets(meta: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """DCP_SHARDING_INFO of a DCP safetensors shard: fqn -> saved chunk offsets."""
    try:
        info = json.loads(meta.get("DCP_SHARDING_INFO", "{}"))
    except (json.JSONDecodeError, RecursionError):
        return {}
    out = {}
    if isinstance(info, dict):
        for k, v in info.items():
            offs = _ints(v.get("saved_offsets")) if isinstance(v, dict) else None
            if offs is not None:
                out[str(k)] = offs
    return out


def _safetensors_shard(fv: FileView, layout: Layout, items: list[DcpItem]) -> Layout:
    """A shard written with SerializationFormat.SAFETENSORS: a safetensors file whose header places
    the items (the metadata's offsets are not file offsets then)."""
    r = read_safetensors(fv)
    layout.problems.extend(r["problems"])
    layout.expected_size = r["expected_size"]
    offsets = _sharding_offsets(r["info"].get("metadata") or {})
    for t in r["tensors"]:
        offs = offsets.get(t.key)
        key = f"{t.key}@{','.join(map(str, offs))}" if offs and any(offs) else t.key
        layout.tensors.append(
            dataclasses.replace(t, key=key, storage=f"{os.path.basename(layout.path)}@{t.offset}")
        )
    have = {t.key for t in layout.tensors}
    absent = sorted({it.key for it in items} - have)
    if absent and not r["problems"]:
        layout.problems.append(
            Problem(
                None,
                f"{len(absent)} item(s) listed in {METADATA_NAME} are not in this shard, e.g. {absent[0]!r}",
                "missing-key",
            )
        )
    layout.non_tensor_entries.update(r["non_tensor"])
    layout.info.update(r["info"])
    layout.segments = tile(layout.size, r["segments"])
    return layout


def _safetensors_shard_problems(path: str, rel: str, md: DcpMetadata) -> list[Problem] | None:
    """Folder-level problems of a safetensors-format shard, or None if it is not one."""
    try:
        with FileView(path) as fv:
            if not looks_like_safetensors(fv):
                return None
            layout = Layout(path, "dcp-shard", fv.size, [], [], [], [], {})
            _safetensors_shard(fv, layout, [it for it in md.items if it.file == rel])
    except (OutOfBounds, InputError):
        return None
    return [Problem(q.offset, f"shard {rel!r}: {q.message}", q.kind) for q in layout.problems]


def read_dcp_metadata_file(fv: FileView, path: str) -> Layout:
    """A DCP `.metadata` file given on its own ("dcp-metadata"): the metadata is read with the
    restricted unpickler (nothing is executed), and the shard files it names, in the same folder,
    are checked to exist and to be long enough for the items the metadata places in them. The file
    holds no tensor bytes; its one segment is the metadata pickle."""
    size = fv.size
    md = read_dcp_metadata(os.path.dirname(os.path.abspath(path)))
    problems = list(md.problems)
    files: list[str] = []
    if md.items:
        _missing, _extra, file_problems = check_dcp_files(os.path.dirname(os.path.abspath(path)), md)
        # These are about the shard files, not about this file: no offset into it, and a short shard
        # must not read as this file being truncated.
        problems += [
            Problem(None, q.message, "shard-truncated" if q.kind == "truncated" else q.kind)
            for q in file_problems
            if q.kind != "extra-file"
        ]
        files = storage_files(md)
    if size == 0:
        problems.append(Problem(0, "file is empty (0 bytes)", "truncated"))
    info = {
        "items": len(md.items),
        "tensors": len(md.tensors),
        "bytes_items": len(md.bytes_items),
        "files": files,
        "version": md.info.get("version"),
    }
    return Layout(
        path, "dcp-metadata", size, tile(size, [Segment(0, size, "metadata", METADATA_NAME)]), [],
        problems, list(md.unsafe), {}, globals_seen=list(md.globals_seen), info=info,
    )  # fmt: skip
