"""torch.distributed.checkpoint storage with digests: `FileSystemWriter` and `FileSystemReader`.

Drop-ins for `torch.distributed.checkpoint.FileSystemWriter` / `FileSystemReader` (same
constructor arguments, plus keyword-only options):

    dcp.save(state_dict, storage_writer=fastckpt.dcp.FileSystemWriter(path))
    dcp.load(state_dict, storage_reader=fastckpt.dcp.FileSystemReader(path))

Writer: every rank hashes the bytes of its own `.distcp` files while torch writes them (no second
read) and writes a sidecar `FILE.distcp.fastckpt` beside each: leaf digests, segment map, tensor
digests and an ITEMS section with the digest of every write item (docs/FORMAT.md 2.3, type 7).
The coordinator then protects `.metadata` and writes the directory manifest `.fastckpt-dir`
listing the checkpoint's files, so `fastckpt verify DIR` reports missing, extra, short and damaged
shards. Reader: every item is checked against its digest as it is read (one read, bytes already in
hand) and `.metadata` against its sidecar; `.metadata` is unpickled with an allowlist of DCP's own
classes instead of plain `pickle.load`. A mismatch raises `CorruptCheckpointError` naming the item.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import warnings
from collections.abc import Generator, Sequence
from typing import Any

import torch
from torch.distributed.checkpoint import filesystem as _tfs
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from . import _native
from ._writer import (
    HashingFile,
    LeafHasher,
    _atomic_bytes,
    build_manifest,
    default_redundancy,
    sidecar_bytes,
    write_sidecar_file,
)
from .dcp_verify import ITEM_BYTES, ITEM_TENSOR, SEC_ITEMS, ItemDigest, decode_items, encode_items, items_of
from .digest import DEFAULT_LEAF_SIZE, check_leaf_size, digest_from_leaves
from .errors import CorruptCheckpointError, InputError
from .sidecar import (
    DIR_MANIFEST_NAME,
    KIND_DIRECTORY,
    KIND_FILE,
    DirEntry,
    DirManifest,
    FileManifest,
    Section,
    encode_sidecar,
    read_sidecar,
    sidecar_path_for,
)

__all__ = [
    "FileSystemReader",
    "FileSystemWriter",
    "ItemDigest",
    "decode_items",
    "encode_items",
    "load",
    "save",
    "unwrap",
]

METADATA_NAME = ".metadata"

# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


class _HashingFS(_tfs.FileSystem):
    """torch's FileSystem, except that `.distcp` files are written through a HashingFile."""

    def __init__(self, owner: FileSystemWriter) -> None:
        self._owner = owner

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Generator[io.IOBase, None, None]:
        if mode != "wb" or not os.fspath(path).endswith(_tfs.DEFAULT_SUFFIX):
            with super().create_stream(path, mode) as s:
                yield s
            return
        fspath = os.fspath(path)
        fd = os.open(fspath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        hasher = _ItemHasher(self._owner.leaf_size, self._owner.threads)
        f = HashingFile(fd, hasher, expose_fileno=True, name=fspath)
        try:
            yield f  # type: ignore[misc]
            f.close()
        finally:
            os.close(fd)
        self._owner._record(fspath, hasher)


class _ItemHasher(LeafHasher):
    """LeafHasher that also digests the byte range between consecutive tell() calls: torch's DCP
    writer calls tell() before and after each write item, so every item gets its own digest."""

    def __init__(self, leaf_size: int, threads: int) -> None:
        super().__init__(leaf_size, threads)
        self._region: LeafHasher | None = None
        self._region_start = 0
        self.regions: dict[int, tuple[int, bytes]] = {}

    def mark(self) -> None:
        if self._region is not None and self._region.pos:
            self.regions[self._region_start] = (self._region.pos, self._region.finish())
        self._region = LeafHasher(self.leaf_size, self.threads, chunk_min=1 << 62)
        self._region_start = self.pos

    def update(self, data: Any, *, stable: bool = False) -> int:
        n = super().update(data)
        if self._region is not None:
            self._region.update(data)
        return n

    def finish(self) -> bytes:
        self.mark()
        return super().finish()


class FileSystemWriter(_tfs.FileSystemWriter):
    """`torch.distributed.checkpoint.FileSystemWriter` that records digests (see module docstring).

    Extra keyword-only options: `leaf_size` (sidecar leaf size), `threads` (hashing threads,
    0 = all cores), `redundancy` (parity percent for each shard; None = protect's default)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        single_file_per_rank: bool = True,
        sync_files: bool = True,
        thread_count: int = 1,
        per_thread_copy_ahead: int = 10_000_000,
        cache_staged_state_dict: bool = False,
        overwrite: bool = True,
        _extensions: Sequence[Any] | None = None,
        serialization_format: Any = _tfs.SerializationFormat.TORCH_SAVE,
        *,
        leaf_size: int = DEFAULT_LEAF_SIZE,
        threads: int = 0,
        redundancy: float | None = None,
    ) -> None:
        super().__init__(
            path,
            single_file_per_rank=single_file_per_rank,
            sync_files=sync_files,
            thread_count=thread_count,
            per_thread_copy_ahead=per_thread_copy_ahead,
            cache_staged_state_dict=cache_staged_state_dict,
            overwrite=overwrite,
            _extensions=_extensions,
            serialization_format=serialization_format,
        )
        self.leaf_size = check_leaf_size(leaf_size)
        self.threads = threads
        self.redundancy = default_redundancy() if redundancy is None else float(redundancy)
        self.fs = _HashingFS(self)
        self._lock = threading.Lock()
        self._hashers: dict[str, LeafHasher] = {}
        self._is_coordinator = False

    # -- torch StorageWriter protocol --------------------------------------------------------------
    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)
        self._is_coordinator = is_coordinator

    def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
        # A directory manifest of an earlier save in this folder must not vouch for a new one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(os.fspath(self.path), DIR_MANIFEST_NAME))
        return super().prepare_global_plan(plans)

    def write_data(self, plan: Any, planner: Any) -> Any:
        with self._lock:
            self._hashers = {}
        fut = super().write_data(plan, planner)
        results = fut.wait()
        self._seal_shards(plan, results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[Any]]) -> None:
        super().finish(metadata, results)
        root = os.fspath(self.path)
        meta_name = os.path.basename(os.fspath(self._metadata_path_written()))
        meta = os.path.join(root, meta_name)
        self._protect_small(meta)
        if not (self.use_collectives and self._is_coordinator):
            return
        files = sorted({wr.storage_data.relative_path for rl in results for wr in rl})
        entries = [DirEntry(meta_name, *self._size_digest(meta))]
        for rel in files:
            entries.append(DirEntry(rel, *self._size_digest(os.path.join(root, rel))))
        entries.sort(key=lambda e: e.path)
        data = encode_sidecar(DirManifest("dcp", self.leaf_size, entries))
        _atomic_bytes(os.path.join(root, DIR_MANIFEST_NAME), data, fsync=self.sync_files)

    # -- internals ---------------------------------------------------------------------------------
    def _metadata_path_written(self) -> os.PathLike[str]:
        if not self.use_collectives and self.rank is not None:
            return self._get_metadata_path(self.rank)
        return self._get_metadata_path()

    def _record(self, path: str, hasher: LeafHasher) -> None:
        with self._lock:
            self._hashers[path] = hasher

    def _size_digest(self, path: str) -> tuple[int, int]:
        sc = read_sidecar(sidecar_path_for(path), expect_kind=KIND_FILE)
        m = sc.manifest
        assert isinstance(m, FileManifest)
        if os.path.getsize(path) != m.file_size:
            raise InputError(path, m.file_size, "the size its sidecar recorded when it was written")
        return m.file_size, m.file_digest

    def _protect_small(self, path: str) -> None:
        from ._layout import OpaqueLayout
        from .protect import build_manifest as protect_manifest

        manifest, _ = protect_manifest(
            path, leaf_size=self.leaf_size, layout=OpaqueLayout(path, os.path.getsize(path), "dcp-metadata")
        )
        write_sidecar_file(path, manifest, fsync=self.sync_files)

    def _seal_shards(self, plan: Any, results: list[Any]) -> None:
        root = os.fspath(self.path)
        by_index = {wi.index: wi for wi in plan.items}
        per_file: dict[str, list[Any]] = {}
        for wr in results:
            per_file.setdefault(wr.storage_data.relative_path, []).append(wr)
        for rel, wrs in sorted(per_file.items()):
            full = os.path.join(root, rel)
            hasher = self._hashers.get(full) or self._hashers.get(os.path.abspath(full))
            if hasher is None:
                raise InputError(full, None, "a shard written through fastckpt's hashing stream")
            self._seal_one(full, rel, sorted(wrs, key=lambda w: w.storage_data.offset), by_index, hasher)

    def _seal_one(
        self, full: str, rel: str, wrs: list[Any], by_index: dict[Any, Any], hasher: LeafHasher
    ) -> None:
        from torch.distributed.checkpoint.planner import WriteItemType

        leaf_bytes = hasher.finish()
        assert isinstance(hasher, _ItemHasher)
        items: list[ItemDigest] = []
        for wr in wrs:
            si = wr.storage_data
            region = hasher.regions.get(si.offset)
            if region is not None and region[0] == si.length:
                leaves = region[1]
            else:  # not delimited by tell() calls (another torch version): hash the hot bytes
                with open(full, "rb") as f:
                    leaves = _native.leaf_digests(
                        os.pread(f.fileno(), si.length, si.offset), self.leaf_size, self.threads
                    )
            wi = by_index.get(wr.index)
            kind = ITEM_BYTES if wi is not None and wi.type == WriteItemType.BYTE_IO else ITEM_TENSOR
            offs = tuple(int(x) for x in wr.index.offset) if wr.index.offset is not None else None
            items.append(
                ItemDigest(
                    wr.index.fqn,
                    offs,
                    kind,
                    si.offset,
                    si.length,
                    digest_from_leaves(leaves, self.leaf_size, si.length).value,
                )
            )
        del leaf_bytes
        if self.serialization_format == _tfs.SerializationFormat.TORCH_SAVE:
            layout = _shard_layout(full, rel, wrs, by_index)
        else:
            layout = None  # a safetensors file: the format reader understands it on its own
        sealed = build_manifest(full, full, hasher, layout=layout, threads=self.threads)
        m = sealed.manifest
        m.extra = [Section(SEC_ITEMS, 0, encode_items(items))]
        data, _ = sidecar_bytes(m, full, self.redundancy, threads=self.threads)
        _atomic_bytes(sidecar_path_for(full), data, fsync=self.sync_files)


def _shard_layout(full: str, rel: str, wrs: list[Any], by_index: dict[Any, Any]) -> Any:
    """The dcp-shard layout `fastckpt.formats` derives from `.metadata`, derived instead from this
    rank's write results (`.metadata` does not exist yet when a rank seals its files)."""
    import dataclasses

    from .formats._dcp import DcpItem
    from .formats._io import FileView
    from .formats._segments import tile
    from .formats._torch import DTYPE_ITEMSIZE
    from .formats._torchzip import read_torch_zip
    from .formats._types import Layout, Segment, TensorSpan

    with FileView(full) as fv:
        size = fv.size
        layout = Layout(full, "dcp-shard", size, [], [], [], [], {})
        segments: list[Any] = []
        for wr in wrs:
            si = wr.storage_data
            wi = by_index.get(wr.index)
            offs = tuple(int(x) for x in wr.index.offset) if wr.index.offset is not None else None
            it = DcpItem(
                wr.index.fqn, offs, rel, si.offset, si.length, transformed=bool(si.transform_descriptors)
            )
            if wi is not None and wi.tensor_data is not None:
                it.dtype = str(wi.tensor_data.properties.dtype).removeprefix("torch.")
                it.chunk_sizes = tuple(int(x) for x in wi.tensor_data.chunk.sizes)
            end = it.offset + it.length
            is_zip = it.length >= 4 and fv.read(it.offset, 4) == b"PK\x03\x04" and not it.transformed
            if is_zip:
                z = read_torch_zip(
                    fv, base=it.offset, end=min(end, size), check_crc=False, key_prefix=it.key + "."
                )
                segments.extend(z.segments)
                layout.tensors.extend(
                    dataclasses.replace(t, storage=f"{rel}@{it.offset}:{t.storage}") for t in z.tensors
                )
                layout.problems.extend(z.problems)
                layout.non_tensor_entries.update(z.non_tensor)
                layout.unsafe_globals.extend(g for g in z.unsafe if g not in layout.unsafe_globals)
            elif it.dtype in DTYPE_ITEMSIZE and it.chunk_sizes is not None and not it.transformed:
                isz = DTYPE_ITEMSIZE[it.dtype]
                segments.append(Segment(it.offset, it.length, "tensor-data", it.key))
                layout.tensors.append(
                    TensorSpan(
                        it.key, it.dtype, it.chunk_sizes, it.offset, it.length, isz, f"{rel}@{it.offset}"
                    )
                )
            else:
                segments.append(Segment(it.offset, it.length, "other", it.key))
        layout.segments = tile(size, segments)
    return layout


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


def _allowed_global(module: str, name: str) -> Any:
    """The objects `.metadata` may reference: DCP's own metadata classes and plain torch values."""
    import importlib

    allowed = {
        "torch.distributed.checkpoint.metadata": {
            "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
            "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
        },
        "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
        "torch.distributed.checkpoint.planner": {"WriteItemType", "LoadItemType"},
        "torch.serialization": {"_get_layout"},
        "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},
        "collections": {"OrderedDict"},
        "builtins": {"set", "frozenset", "slice", "complex", "bytearray"},
    }  # fmt: skip
    if module == "torch":
        obj = getattr(torch, name, None)
        if obj is torch.Size or isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
            return obj
    elif name in allowed.get(module, ()):
        return getattr(importlib.import_module(module), name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in DCP metadata")


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name)


class FileSystemReader(_tfs.FileSystemReader):
    """`torch.distributed.checkpoint.FileSystemReader` that verifies what it reads.

    Extra keyword-only options: `verify` (default True) and `require_digests` (default False: a
    `.distcp` file without a sidecar is read with a warning; True makes it an error)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        _extension_registry: Any = None,
        *,
        verify: bool = True,
        require_digests: bool = False,
        threads: int = 0,
    ) -> None:
        super().__init__(path, _extension_registry)
        if not callable(getattr(_tfs.FileSystemReader, "_slice_file", None)):  # pragma: no cover
            raise ImportError(
                "fastckpt.dcp.FileSystemReader needs torch's FileSystemReader._slice_file (torch 2.13)"
            )
        self.verify = verify
        self.require_digests = require_digests
        self.threads = threads
        self._lock = threading.Lock()
        self._sidecars: dict[str, tuple[FileManifest, dict[tuple[int, int], ItemDigest]] | None] = {}
        self._names: dict[tuple[str, int], str] = {}
        self.metadata_error: CorruptCheckpointError | None = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = os.fspath(self._get_metadata_path(kwargs.get("rank")))
        if self.verify:
            try:
                self._verify_whole(path)
            except CorruptCheckpointError as e:
                # dcp.load turns this into an AssertionError message; fastckpt.dcp.load re-raises it.
                self.metadata_error = e
                raise
        with open(path, "rb") as f:
            try:
                metadata = _MetadataUnpickler(f).load()
            except pickle.UnpicklingError as e:
                raise InputError(
                    path,
                    None,
                    f"DCP metadata made of torch.distributed.checkpoint's own classes ({e}; nothing was executed)",
                ) from None
        if not isinstance(metadata, Metadata):
            raise InputError(
                path, 0, f"a torch.distributed.checkpoint Metadata object, found {type(metadata).__name__}"
            )
        storage_meta = getattr(metadata, "storage_meta", None) or StorageMeta()
        storage_meta.load_id = self.load_id
        metadata.storage_meta = storage_meta
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self._names = {}
        for idx, si in self.storage_data.items():
            offs = tuple(int(x) for x in idx.offset) if idx.offset is not None else None
            self._names[(si.relative_path, si.offset)] = ItemDigest(idx.fqn, offs, 0, 0, 0, 0).key

    def _slice_file(self, file: Any, sinfo: Any) -> Any:
        data = os.pread(file.fileno(), sinfo.length, sinfo.offset)
        shard = os.path.join(os.fspath(self.path), sinfo.relative_path)
        key = self._names.get((sinfo.relative_path, sinfo.offset), f"{sinfo.relative_path}@{sinfo.offset}")
        if len(data) != sinfo.length:
            raise CorruptCheckpointError(
                shard, [key],
                f"{shard}: DCP item {key} needs bytes [{sinfo.offset}, {sinfo.offset + sinfo.length}) but the shard "
                f"ends at {sinfo.offset + len(data)} (truncated); run `fastckpt verify {os.fspath(self.path)}`",
            )  # fmt: skip
        if self.verify:
            self._verify_item(shard, sinfo, key, data)
        return io.BytesIO(data)

    # -- verification --------------------------------------------------------------------------------
    def _sidecar(self, shard: str) -> tuple[FileManifest, dict[tuple[int, int], ItemDigest]] | None:
        with self._lock:
            if shard in self._sidecars:
                return self._sidecars[shard]
        spath = sidecar_path_for(shard)
        entry = None
        if os.path.exists(spath):
            sc = read_sidecar(spath, expect_kind=KIND_FILE)
            m = sc.manifest
            assert isinstance(m, FileManifest)
            items = items_of(m, spath) or []
            entry = (m, {(it.offset, it.length): it for it in items})
        elif self.require_digests:
            raise CorruptCheckpointError(
                shard, [], f"{shard}: no sidecar ({spath}) to verify it against (require_digests=True)"
            )
        else:
            warnings.warn(
                f"fastckpt.dcp: {shard} has no sidecar; its items are read unverified",
                RuntimeWarning,
                stacklevel=4,
            )
        with self._lock:
            self._sidecars[shard] = entry
        return entry

    def _verify_item(self, shard: str, sinfo: Any, key: str, data: bytes) -> None:
        sc = self._sidecar(shard)
        if sc is None:
            return
        m, items = sc
        L = m.leaf_size
        rec = items.get((sinfo.offset, sinfo.length))
        if rec is not None:
            got = digest_from_leaves(_native.leaf_digests(data, L, self.threads), L, len(data)).value
            ok = got == rec.digest
        else:
            # No item digest (a folder protected after the fact): check the leaves covering the item.
            lo = sinfo.offset // L * L
            hi = min(-(-(sinfo.offset + sinfo.length) // L) * L, m.file_size)
            if sinfo.offset + sinfo.length > m.file_size:
                ok = False
            else:
                with open(shard, "rb") as f:
                    head = os.pread(f.fileno(), sinfo.offset - lo, lo)
                    tail = os.pread(f.fileno(), hi - sinfo.offset - sinfo.length, sinfo.offset + sinfo.length)
                leaves = _native.leaf_digests(head + data + tail, L, self.threads)
                ok = leaves == m.leaf_bytes[8 * (lo // L) : 8 * (-(-hi // L))]
        if not ok:
            root = os.fspath(self.path)
            raise CorruptCheckpointError(
                shard, [key],
                f"{shard}: DCP item {key} (bytes [{sinfo.offset}, {sinfo.offset + sinfo.length})) does not match the "
                f"digest recorded when it was saved. Not loaded. Run `fastckpt verify {root}` for the full report and "
                f"`fastckpt repair {shard}` to rebuild it from parity or another copy (`--from OTHER`).",
            )  # fmt: skip

    def _verify_whole(self, path: str) -> None:
        spath = sidecar_path_for(path)
        if not os.path.exists(spath):
            if self.require_digests:
                raise CorruptCheckpointError(
                    path, [], f"{path}: no sidecar ({spath}) to verify it against (require_digests=True)"
                )
            return
        from .verify import verify_with_sidecar

        report = verify_with_sidecar(path, spath, threads=self.threads)
        if not report["ok"]:
            raise CorruptCheckpointError(
                path, [os.path.basename(path)],
                f"{path}: the checkpoint's metadata does not match its sidecar (damaged or replaced). Not loaded. "
                f"Run `fastckpt verify {os.path.dirname(path)}` and `fastckpt repair {path}`.", report,
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# dcp.save / dcp.load with these classes
# ---------------------------------------------------------------------------------------------


def unwrap(exc: BaseException, reader: FileSystemReader | None = None) -> BaseException:
    """The CorruptCheckpointError inside torch's CheckpointException (which wraps every rank's
    failure), or the one `reader` met in `.metadata` (which dcp.load reports as a message only),
    or `exc` itself."""
    for failure in getattr(exc, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, CorruptCheckpointError):
            return inner
    if reader is not None and reader.metadata_error is not None:
        return reader.metadata_error
    return exc


def save(state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str], **kwargs: Any) -> Any:
    """`torch.distributed.checkpoint.save` with a fastckpt FileSystemWriter. Keyword arguments of
    dcp.save (planner, process_group, no_dist, ...) pass through; the others go to the writer."""
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    dcp_keys = {"planner", "process_group", "no_dist", "use_collectives"}
    dcp_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in dcp_keys}
    writer = FileSystemWriter(checkpoint_id, **kwargs)
    return dcp_save(state_dict, storage_writer=writer, **dcp_kwargs)


def load(state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str], **kwargs: Any) -> None:
    """`torch.distributed.checkpoint.load` with a verifying FileSystemReader; raises
    CorruptCheckpointError (not torch's CheckpointException) when an item is damaged."""
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    dcp_keys = {"planner", "process_group", "no_dist", "use_collectives"}
    dcp_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in dcp_keys}
    reader = FileSystemReader(checkpoint_id, **kwargs)
    try:
        dcp_load(state_dict, storage_reader=reader, **dcp_kwargs)
    except BaseException as e:  # CheckpointException derives from BaseException
        inner = unwrap(e, reader)
        if inner is not e:
            raise inner from e
        raise


def checkpoint_files(path: str | os.PathLike[str]) -> list[str]:
    """The files a directory manifest written by FileSystemWriter lists (relative paths)."""
    sc = read_sidecar(os.path.join(os.fspath(path), DIR_MANIFEST_NAME), expect_kind=KIND_DIRECTORY)
    assert isinstance(sc.manifest, DirManifest)
    return [e.path for e in sc.manifest.entries]
