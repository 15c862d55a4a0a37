"""`protect`: builds sidecar manifests (fastckpt.sidecar) for a file or a checkpoint folder.

For a file it records the size, the leaf digests of every byte, a v1 digest per tensor (hashed
from the file's bytes, no torch needed), the reader's segment map and, unless the redundancy is 0,
Reed-Solomon parity (fastckpt.sidecar_parity; leaf digests and parity come from one fused pass over
the file), then writes `PATH.fastckpt` atomically. For a folder it protects every regular file in it (sidecar beside each) and writes
`DIR/.fastckpt-dir`, which lists the files and their sizes so missing ones are detected later.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from ._layout import OpaqueLayout, folder_file_format, read_dir_layout, read_layout, walk_files
from .digest import (
    DEFAULT_LEAF_SIZE,
    PROGRESS_MIN_BYTES,
    check_leaf_size,
    digest_from_leaves,
)
from .errors import InputError, UsageError
from .parity import DEFAULT_REDUNDANCY as DEFAULT_REDUNDANCY  # the default of `fastckpt protect`
from .parity import ParityParams
from .sidecar import (
    DIR_MANIFEST_NAME,
    SIDECAR_SUFFIX,
    TENSOR_RAW_RANGE,
    DirEntry,
    DirManifest,
    FileManifest,
    SegmentEntry,
    TensorEntry,
    sidecar_path_for,
    write_sidecar,
)


@dataclass
class ProtectResult:
    path: str
    sidecar: str | None
    size: int
    format: str
    digest: int
    leaf_size: int
    tensors: int
    segments: int
    unsafe: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    written: bool = True
    redundancy: float = 0.0
    parity: ParityParams | None = None

    def to_json(self) -> dict[str, Any]:
        parity = None
        if self.parity is not None:
            parity = {
                "k": self.parity.k,
                "m": self.parity.m,
                "groups": self.parity.groups,
                "bytes": self.parity.parity_nbytes(self.leaf_size),
                "max_burst": min(self.parity.max_burst_leaves * self.leaf_size, self.size),
            }
        return {
            "ok": self.written and not self.problems,
            "path": self.path,
            "sidecar": self.sidecar,
            "written": self.written,
            "size": self.size,
            "format": self.format,
            "digest": f"{self.digest:032x}",
            "leaf_size": self.leaf_size,
            "tensors": self.tensors,
            "segments": self.segments,
            "unsafe": self.unsafe,
            "problems": self.problems,
            "redundancy": self.redundancy,
            "parity": parity,
        }


def _problem_json(p: Any) -> dict[str, Any]:
    return {"offset": p.offset, "kind": p.kind, "message": p.message}


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tensor_spans(path: str, size: int, spans: list[Any]) -> list[tuple[int, int]]:
    for t in spans:
        if t.offset < 0 or t.nbytes < 0 or t.offset + t.nbytes > size:
            raise InputError(
                path,
                t.offset,
                f"expected tensor {t.key} to lie inside the {size}-byte file ({t.nbytes} bytes)",
            )
    return [(int(t.offset), int(t.nbytes)) for t in spans]


def tensor_entries_from_leaves(spans: list[Any], leaves_of: list[bytes], leaf_size: int) -> list[TensorEntry]:
    """TENSORS entries of the reader's tensor spans, their v1 digests from each tensor's leaf digests
    (leaves counted from the tensor's start); also used by the hashing writer (_writer)."""
    out: list[TensorEntry] = []
    for t, leaves in zip(spans, leaves_of, strict=True):
        shape = tuple(int(d) for d in t.shape)
        dense = _prod(shape) * t.itemsize == t.nbytes
        if dense:
            d = digest_from_leaves(leaves, leaf_size, t.nbytes, t.dtype, shape)
        else:
            d = digest_from_leaves(leaves, leaf_size, t.nbytes)
        out.append(
            TensorEntry(
                t.key,
                t.dtype,
                shape,
                t.offset,
                t.nbytes,
                t.itemsize,
                t.storage,
                d.value,
                0 if dense else TENSOR_RAW_RANGE,
            )
        )
    return out


@dataclass(frozen=True)
class _CrcRecord:
    offset: int
    nbytes: int
    crc: int


def _layout_for_scan(path: str) -> tuple[Any, list[_CrcRecord] | None]:
    """The reader layout of `path` without its zip CRC pass, and the stored records whose CRC-32 the
    fused protect pass must check instead (None: the reader must check them itself, as
    read_layout(check_crc=True) does; then the layout returned is that one).

    The fused pass covers exactly the records `formats._zip.check_crcs` checks by reading them
    (stored, not encrypted, both sizes equal); anything else (deflated records, a damaged or
    recovered directory, a DCP shard) goes through the reader, so the layout and its problems are
    always those of read_layout(path, check_crc=True)."""
    layout = read_layout(path, check_crc=False)
    if layout.format not in ("zip", "torch-zip"):
        if layout.format == "dcp-shard":
            return read_layout(path, check_crc=True), None
        return layout, []  # no CRCs in the other formats
    found = _stored_records(path)
    if found is None:
        return read_layout(path, check_crc=True), None
    recorded, records = found
    layout.info["crc_recorded"] = recorded
    return layout, records


def _stored_records(path: str) -> tuple[bool, list[_CrcRecord]] | None:
    """check_crcs' work list for a local zip file: (whether the archive records CRCs, the records
    to check), or None when the reader must do it."""
    try:
        from .formats._io import FileView
        from .formats._zip import read_zip
    except ImportError:  # pragma: no cover - a refactor of the readers: stay correct, lose speed
        return None
    try:
        with FileView(path) as fv:
            zi = read_zip(fv)
    except Exception:
        return None
    if zi.truncated or zi.problems or any(e.recovered for e in zi.entries):
        return None
    entries = [e for e in zi.entries if e.data_offset is not None and e.data_end <= zi.end]
    nonempty = [e for e in entries if e.usize > 0]
    if nonempty and all(e.crc == 0 for e in nonempty):
        return False, []  # torch.save(compute_crc32=False): nothing to check
    out: list[_CrcRecord] = []
    for e in entries:
        if e.flags & 0x1:  # encrypted: check_crcs skips it too
            continue
        if e.method != 0 or e.csize != e.usize:
            return None
        assert e.data_offset is not None  # filtered above
        out.append(_CrcRecord(e.data_offset, e.csize, e.crc))
    return True, out


def build_manifest(
    path: str,
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    progress: bool = False,
    layout: Any = None,
) -> tuple[FileManifest, Any]:
    """The manifest of `path` and the reader layout it was built from."""
    manifest, layout, _, _ = build_manifest_with_parity(
        path, leaf_size=leaf_size, threads=threads, progress=progress, layout=layout
    )
    return manifest, layout


def build_manifest_with_parity(
    path: str,
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    progress: bool = False,
    layout: Any = None,
    redundancy: float = 0.0,
) -> tuple[FileManifest, Any, ParityParams | None, bytes]:
    """The manifest of `path`, the reader layout it was built from, and (when `redundancy` > 0) the
    parity parameters and parity bytes. One native pass over the file computes the leaf digests, the
    parity, every tensor's leaf digests and (when `layout` is not given) the zip records' CRC-32."""
    check_leaf_size(leaf_size)
    crc_records: list[_CrcRecord] | None = []
    if layout is None:
        layout, crc_records = _layout_for_scan(path)
    return _build(path, layout, crc_records or [], leaf_size, threads, progress, redundancy)


def _build(
    path: str,
    layout: Any,
    crc_records: list[_CrcRecord],
    leaf_size: int,
    threads: int,
    progress: bool,
    redundancy: float,
    sink: Any = None,
) -> tuple[FileManifest, Any, ParityParams | None, bytes]:
    """The manifest, layout, parity parameters and parity, from one scan_file pass. With `sink` (a
    sidecar_parity.StreamedSidecar) the parity is written into the sidecar during the pass, and the
    fourth item is the parity's leaf digests instead of the parity."""
    from ._progress import Progress
    from .parity import n_leaves_of, scan_file

    size = os.stat(path).st_size
    spans = list(layout.tensors)
    tensor_spans = _tensor_spans(path, size, spans)
    out_fd, out_offset = -1, 0
    if sink is not None and redundancy > 0:
        params = ParityParams.from_redundancy(redundancy, n_leaves_of(size, leaf_size))
        zeros = bytes(8 * n_leaves_of(size, leaf_size))
        shape = manifest_of(path, layout, size, leaf_size, 0, zeros, _stand_in_tensors(spans))
        out_offset = sink.bulk_start(shape, params)
        out_fd = sink.parity_fd(params.parity_nbytes(leaf_size), leaf_size)
    what = "protect" if redundancy > 0 else "digest"
    with Progress(f"{what} {path}", size, enabled=progress and size >= PROGRESS_MIN_BYTES) as bar:
        try:
            sc = scan_file(
                path,
                leaf_size=leaf_size,
                redundancy=redundancy,
                spans=tensor_spans,
                crc_spans=[(r.offset, r.nbytes) for r in crc_records],
                threads=threads,
                out_fd=out_fd,
                out_offset=out_offset,
            )
        except OSError as e:
            if sink is None or e.filename is not None:
                raise
            # A failed write of the streamed parity (a full disk): say which file it was for.
            raise OSError(
                e.errno, f"{e.strerror} (writing the parity into its temporary file)", sink.path
            ) from None
        bar.update(size)
    if any(got != r.crc for got, r in zip(sc.crcs, crc_records, strict=True)):
        # Damage: let the reader describe it (its problems are what protect reports and refuses on).
        layout = read_layout(path, check_crc=True)
    d = digest_from_leaves(sc.leaf_bytes, leaf_size, sc.size)
    tensors = tensor_entries_from_leaves(spans, sc.span_leaves, leaf_size)
    manifest = manifest_of(path, layout, d.nbytes, leaf_size, d.value, d.leaf_bytes, tensors)
    # Streamed parity is not held in memory: the sink needs only its leaf digests.
    return manifest, layout, sc.params, sc.parity_leaf_bytes if out_fd >= 0 else sc.parity


def manifest_of(
    path: str,
    layout: Any,
    size: int,
    leaf_size: int,
    file_digest: int,
    leaf_bytes: bytes,
    tensors: list[TensorEntry],
) -> FileManifest:
    """The manifest of the file named like `path`, described by the reader's `layout` (also used by
    the hashing writer, _writer.build_manifest)."""
    segments = [SegmentEntry(s.offset, s.length, s.kind, s.name) for s in layout.segments]
    if not segments and size:
        segments = [SegmentEntry(0, size, "other", None)]
    return FileManifest(
        file_size=size,
        leaf_size=leaf_size,
        file_digest=file_digest,
        leaf_bytes=leaf_bytes,
        format=layout.format,
        name=os.path.basename(path),
        unsafe=sorted(set(layout.unsafe_globals)),
        tensors=tensors,
        segments=segments,
    )


def _stand_in_tensors(spans: list[Any]) -> list[TensorEntry]:
    """The TENSORS entries with every digest 0: the final manifest's shape before the pass."""
    return [
        TensorEntry(
            t.key, t.dtype, tuple(int(d) for d in t.shape), t.offset, t.nbytes, t.itemsize, t.storage, 0, 0
        )
        for t in spans
    ]


def protect_file(
    path: str | os.PathLike[str],
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    progress: bool = False,
    force: bool = False,
    sidecar: str | None = None,
    layout: Any = None,
    redundancy: float = DEFAULT_REDUNDANCY,
) -> ProtectResult:
    """Writes the sidecar of one file. A file whose reader reports structural damage (bad CRC,
    truncation, ...) is not sealed unless `force`: a sidecar would certify the damage.

    `redundancy` is the parity in percent of the file (docs/FORMAT.md 3.7; default 5, 0 = none):
    `fastckpt repair` rebuilds damaged leaves from it."""
    from .parity import MAX_REDUNDANCY, MIN_REDUNDANCY
    from .sidecar_parity import StreamedSidecar

    if (
        isinstance(redundancy, bool)
        or not isinstance(redundancy, (int, float))
        or not (redundancy == 0 or MIN_REDUNDANCY <= redundancy <= MAX_REDUNDANCY)
    ):
        raise UsageError(
            f"--redundancy must be 0 (no parity) or a percentage between {MIN_REDUNDANCY} and "
            f"{MAX_REDUNDANCY}, got {redundancy!r} (default {DEFAULT_REDUNDANCY})"
        )
    fspath = os.fspath(path)
    if os.path.isdir(fspath):
        raise InputError(fspath, None, "expected a file, found a directory (use protect_dir)")
    if not os.path.exists(fspath):
        raise InputError(fspath, None, "expected a file to protect, but it does not exist")
    if fspath.endswith(SIDECAR_SUFFIX) and sidecar is None:
        raise InputError(fspath, None, "expected a checkpoint, found a fastckpt sidecar (it protects itself)")
    check_leaf_size(leaf_size)
    crc_records: list[_CrcRecord] | None = []
    if layout is None:
        # The zip CRC-32 check is left to the fused pass below (one read of the file, not two).
        layout, crc_records = _layout_for_scan(fspath)
    spath = sidecar or sidecar_path_for(fspath)

    def refused(layout: Any, problems: list[dict[str, Any]]) -> ProtectResult:
        return ProtectResult(
            fspath,
            None,
            layout.size,
            layout.format,
            0,
            leaf_size,
            len(layout.tensors),
            len(layout.segments),
            sorted(set(layout.unsafe_globals)),
            problems,
            written=False,
        )

    problems = [_problem_json(p) for p in layout.problems if p.kind != "unsafe-pickle"]
    if problems and not force:
        return refused(layout, problems)
    # With parity the sidecar's temp file is opened first and the pass writes the parity into it.
    with StreamedSidecar(spath) if redundancy > 0 else contextlib.nullcontext() as sink:
        manifest, layout, params, parity_leaves = _build(
            fspath, layout, crc_records or [], leaf_size, threads, progress, redundancy, sink
        )
        # A bad CRC found by the fused pass: the reader's layout now describes it.
        problems = [_problem_json(p) for p in layout.problems if p.kind != "unsafe-pickle"]
        if problems and not force:
            return refused(layout, problems)
        if params is None or sink is None:
            write_sidecar(spath, manifest)
        else:
            sink.finish(manifest, params, parity_leaves)
    return ProtectResult(
        fspath,
        spath,
        manifest.file_size,
        manifest.format,
        manifest.file_digest,
        leaf_size,
        len(manifest.tensors),
        len(manifest.segments),
        manifest.unsafe,
        problems,
        redundancy=float(redundancy),
        parity=params,
    )


# Folder problems that do not make the folder's contents suspect.
_NOT_BLOCKING = ("extra-file", "unsafe-pickle")


@dataclass
class ProtectDirResult:
    path: str
    manifest: str | None
    format: str
    files: list[ProtectResult]
    problems: list[dict[str, Any]]

    @property
    def written(self) -> bool:
        return self.manifest is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.written
            and not self.problems
            and all(f.written and not f.problems for f in self.files),
            "path": self.path,
            "manifest": self.manifest,
            "format": self.format,
            "written": self.written,
            "size": sum(f.size for f in self.files),
            "unsafe": sorted({g for f in self.files for g in f.unsafe}),
            "problems": self.problems,
            "files": [f.to_json() for f in self.files],
        }


def protect_dir(
    path: str | os.PathLike[str],
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    progress: bool = False,
    force: bool = False,
    redundancy: float = DEFAULT_REDUNDANCY,
) -> ProtectDirResult:
    """Protects every regular file under `path` (sidecar beside each) and writes
    `path/.fastckpt-dir`. Structural problems of the folder (missing shards, short shards) or of
    any file stop the directory manifest from being written unless `force`."""
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise InputError(root, None, "expected a directory")
    dir_layout = read_dir_layout(root)
    fmt = dir_layout.format if dir_layout is not None else "directory"
    problems = [
        _problem_json(p)
        for p in (dir_layout.problems if dir_layout is not None else [])
        if p.kind not in _NOT_BLOCKING
    ]
    rels = list(walk_files(root))
    if not rels:
        raise InputError(root, None, "expected a folder with files to protect, found none")
    results = []
    for rel in rels:
        full = os.path.join(root, rel)
        folder_fmt = folder_file_format(fmt, rel)
        layout = OpaqueLayout(full, os.path.getsize(full), folder_fmt) if folder_fmt else None
        results.append(
            protect_file(
                full,
                leaf_size=leaf_size,
                threads=threads,
                progress=progress,
                force=force,
                layout=layout,
                redundancy=redundancy,
            )
        )
    blocked = bool(problems) or any(not r.written for r in results)
    if blocked and not force:
        return ProtectDirResult(root, None, fmt, results, problems)
    entries = [DirEntry(rel, r.size, r.digest) for rel, r in zip(rels, results, strict=True) if r.written]
    mpath = os.path.join(root, DIR_MANIFEST_NAME)
    write_sidecar(mpath, DirManifest(fmt, leaf_size, entries))
    return ProtectDirResult(root, mpath, fmt, results, problems)
