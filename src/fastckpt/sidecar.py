"""Sidecar manifest format v1 (docs/FORMAT.md section 2): encoding, redundant storage and reading.

A sidecar `PATH.fastckpt` describes one file: its size, the leaf digests of its bytes, per-tensor
digests and the segment map. A directory manifest `DIR/.fastckpt-dir` lists the files of a
checkpoint folder. Both use the same container: a 64-byte header, manifest copy A, an optional bulk
area (reserved for parity data), manifest copy B at least 4 KiB away, and a 64-byte trailer. Each
copy carries its own XXH3-128, so one burst of damage leaves the other copy readable.

This module only encodes and decodes; it never hashes checkpoint files (see `fastckpt.protect`)
and never imports torch.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from . import _native
from ._record import dataclass, field
from .errors import InputError

SIDECAR_SUFFIX = ".fastckpt"
DIR_MANIFEST_NAME = ".fastckpt-dir"

VERSION = 1
KIND_FILE = 1
KIND_DIRECTORY = 2

HEADER_MAGIC = b"FCKPT-SC"
TRAILER_MAGIC = b"FCKPT-TR"
COPY_MAGIC = b"FCKPT-MF"
LOCATOR_SIZE = 64
COPY_HEADER_SIZE = 32
COPY_CHECKSUM_SIZE = 16
SECTION_HEADER_SIZE = 16
BLOCK = 4096  # copies never share a 4 KiB block and are at least this far apart
COPY_A_OFFSET = LOCATOR_SIZE

# Section types. Types not listed are unknown to v1 readers: skipped unless flagged REQUIRED.
SEC_FILE_INFO = 1
SEC_LEAVES = 2
SEC_TENSORS = 3
SEC_SEGMENTS = 4
SEC_PARITY = 5  # reserved for Reed-Solomon parity (a later revision defines its payload)
SEC_DIRECTORY = 6
SECTION_NAMES = {1: "FILE_INFO", 2: "LEAVES", 3: "TENSORS", 4: "SEGMENTS", 5: "PARITY", 6: "DIRECTORY"}
FLAG_REQUIRED = 1

# TENSORS entry flag: the digest covers the raw byte range as uint8[nbytes] (the tensor is not a
# dense row-major view of exactly those bytes, so its v1 tensor digest cannot be taken from them).
TENSOR_RAW_RANGE = 1

SEGMENT_KINDS = (
    "other",
    "tensor-data",
    "header",
    "pickle",
    "zip-local-header",
    "zip-central-directory",
    "padding",
    "metadata",
)
_SEGMENT_CODE = {name: i for i, name in enumerate(SEGMENT_KINDS)}

_LOCATOR = struct.Struct("<8sHHIQQQQQ")  # magic, version, kind, size, a_off, a_len, b_off, b_len, bulk_len
_COPY_HEADER = struct.Struct("<8sHHHHIIQ")  # magic, version, kind, index, 0, section_count, 0, body_length
_SECTION_HEADER = struct.Struct("<IIQ")  # type, flags, length
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
assert _LOCATOR.size == LOCATOR_SIZE - 8 and _COPY_HEADER.size == COPY_HEADER_SIZE


def sidecar_path_for(path: str | os.PathLike[str]) -> str:
    """Where the sidecar of `path` lives: beside it, with `.fastckpt` appended to the full name."""
    return os.fspath(path) + SIDECAR_SUFFIX


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------------------------
# Manifest contents
# ---------------------------------------------------------------------------------------------


class TensorEntry(NamedTuple):
    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    itemsize: int
    storage: str | None
    digest: int
    flags: int = 0

    @property
    def raw_range(self) -> bool:
        return bool(self.flags & TENSOR_RAW_RANGE)


class SegmentEntry(NamedTuple):
    offset: int
    length: int
    kind: str
    name: str | None


class DirEntry(NamedTuple):
    path: str  # relative, '/'-separated
    size: int
    digest: int  # v1 digest of the file as uint8[size], with the manifest's leaf_size


class Section(NamedTuple):
    """A raw section, kept verbatim when this version does not interpret it (e.g. PARITY)."""

    type: int
    flags: int
    payload: bytes


class RawSection(NamedTuple):
    type: int
    flags: int
    offset: int  # absolute offset of the payload in the sidecar
    payload: memoryview


@dataclass
class FileManifest:
    """The contents of a file sidecar. TENSORS and SEGMENTS read from disk are decoded on first use
    of `tensor_entries()` / `segment_entries()`: checking an intact file never needs them."""

    file_size: int
    leaf_size: int
    file_digest: int
    leaf_bytes: bytes = field(repr=False)
    format: str = "opaque"
    name: str = ""
    unsafe: list[str] = field(default_factory=list)
    tensors: list[TensorEntry] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)
    extra: list[Section] = field(default_factory=list)
    _pending: dict[int, RawSection] = field(default_factory=dict, repr=False, compare=False)
    _source: str = field(default="", repr=False, compare=False)

    @property
    def leaf_count(self) -> int:
        return len(self.leaf_bytes) // 8

    def tensor_entries(self) -> list[TensorEntry]:
        section = self._pending.pop(SEC_TENSORS, None)
        if section is not None:
            self.tensors = _decode_or_raise(decode_tensors, section, self._source)
        return self.tensors

    def segment_entries(self) -> list[SegmentEntry]:
        section = self._pending.pop(SEC_SEGMENTS, None)
        if section is not None:
            self.segments = _decode_or_raise(decode_segments, section, self._source)
        return self.segments


@dataclass
class DirManifest:
    format: str
    leaf_size: int
    entries: list[DirEntry]
    extra: list[Section] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _str16(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(
            f"string of {len(raw)} bytes does not fit a sidecar string (max 65535): {s[:60]!r}..."
        )
    return _U16.pack(len(raw)) + raw


def _section(type_: int, flags: int, payload: bytes) -> bytes:
    pad = -len(payload) % 8
    return _SECTION_HEADER.pack(type_, flags, len(payload)) + payload + b"\0" * pad


def _encode_file_sections(m: FileManifest) -> list[bytes]:
    n_leaves = -(-m.file_size // m.leaf_size)
    if len(m.leaf_bytes) != 8 * n_leaves:
        raise ValueError(
            f"{len(m.leaf_bytes) // 8} leaf digests for {m.file_size} bytes at leaf size {m.leaf_size}"
        )
    info = [_U64.pack(m.file_size), _str16(m.format), _str16(m.name), _U32.pack(len(m.unsafe))]
    info += [_str16(g) for g in m.unsafe]
    sections = [
        _section(SEC_FILE_INFO, FLAG_REQUIRED, b"".join(info)),
        _section(
            SEC_LEAVES,
            FLAG_REQUIRED,
            struct.pack("<QQ", m.leaf_size, n_leaves) + m.file_digest.to_bytes(16, "little") + m.leaf_bytes,
        ),
    ]
    # A manifest read from disk keeps TENSORS/SEGMENTS undecoded until used; re-encoding it (for
    # instance to add a PARITY section) must carry them over verbatim.
    pending = m._pending
    if SEC_TENSORS in pending:
        sections.append(
            _section(SEC_TENSORS, pending[SEC_TENSORS].flags, bytes(pending[SEC_TENSORS].payload))
        )
    elif m.tensors:
        parts = [_U64.pack(len(m.tensors))]
        for t in m.tensors:
            parts += [
                _str16(t.key),
                _str16(t.dtype),
                struct.pack("<HIH", t.flags, t.itemsize, len(t.shape)),
                struct.pack(f"<{len(t.shape)}Q", *t.shape),
                struct.pack("<QQ", t.offset, t.nbytes),
                _str16(t.storage or ""),
                t.digest.to_bytes(16, "little"),
            ]
        sections.append(_section(SEC_TENSORS, 0, b"".join(parts)))
    if SEC_SEGMENTS in pending:
        sections.append(
            _section(SEC_SEGMENTS, pending[SEC_SEGMENTS].flags, bytes(pending[SEC_SEGMENTS].payload))
        )
    elif m.segments:
        parts = [_U64.pack(len(m.segments))]
        for s in m.segments:
            parts += [
                struct.pack("<QQB", s.offset, s.length, _SEGMENT_CODE.get(s.kind, 0)),
                _str16(s.name or ""),
            ]
        sections.append(_section(SEC_SEGMENTS, 0, b"".join(parts)))
    sections += [_section(x.type, x.flags, x.payload) for x in m.extra]
    return sections


def _encode_dir_sections(m: DirManifest) -> list[bytes]:
    parts = [_str16(m.format), struct.pack("<QQ", m.leaf_size, len(m.entries))]
    for e in m.entries:
        parts += [_str16(e.path), _U64.pack(e.size), e.digest.to_bytes(16, "little")]
    return [_section(SEC_DIRECTORY, FLAG_REQUIRED, b"".join(parts))] + [
        _section(x.type, x.flags, x.payload) for x in m.extra
    ]


def _copy(kind: int, index: int, sections: Sequence[bytes]) -> bytes:
    body = b"".join(sections)
    head = _COPY_HEADER.pack(COPY_MAGIC, VERSION, kind, index, 0, len(sections), 0, len(body))
    return head + body + _native.xxh3_128(head + body).to_bytes(16, "little")


def _locator(magic: bytes, kind: int, a: tuple[int, int], b: tuple[int, int], bulk_len: int) -> bytes:
    raw = _LOCATOR.pack(magic, VERSION, kind, LOCATOR_SIZE, a[0], a[1], b[0], b[1], bulk_len)
    return raw + _U64.pack(_native.xxh3_64(raw))


def copy_b_offset(copy_a_length: int, bulk_length: int = 0) -> int:
    """Where copy B starts (normative, FORMAT.md 2.2): 4 KiB aligned, after the bulk area, and at
    least 4 KiB after the end of copy A."""
    bulk_start = bulk_offset(copy_a_length)
    return _align(max(bulk_start + bulk_length, COPY_A_OFFSET + copy_a_length + BLOCK), BLOCK)


def bulk_offset(copy_a_length: int) -> int:
    """Where the bulk area starts: the first 4 KiB boundary at or after the end of copy A."""
    return _align(COPY_A_OFFSET + copy_a_length, BLOCK)


def encode_sidecar(manifest: FileManifest | DirManifest, *, bulk: bytes = b"") -> bytes:
    """The complete sidecar bytes. `bulk` (v1: empty) is stored once, between the two copies;
    sections that refer to it use offsets relative to `bulk_offset(len(copy A))`."""
    if isinstance(manifest, FileManifest):
        kind, sections = KIND_FILE, _encode_file_sections(manifest)
    else:
        kind, sections = KIND_DIRECTORY, _encode_dir_sections(manifest)
    copy_a = _copy(kind, 0, sections)
    copy_b = _copy(kind, 1, sections)
    b_off = copy_b_offset(len(copy_a), len(bulk))
    a = (COPY_A_OFFSET, len(copy_a))
    b = (b_off, len(copy_b))
    out = bytearray(_locator(HEADER_MAGIC, kind, a, b, len(bulk)))
    out += copy_a
    bulk_start = bulk_offset(len(copy_a))
    out += b"\0" * (bulk_start - len(out))
    out += bulk
    out += b"\0" * (b_off - len(out))
    out += copy_b
    out += _locator(TRAILER_MAGIC, kind, a, b, len(bulk))
    return bytes(out)


def temp_path_beside(path: str) -> str:
    """The temporary file an atomic write of `path` goes through, in the same folder (hidden, so
    folder walks skip it: see _layout)."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}")


def fsync_dir(folder: str) -> None:
    """Makes a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: Any, offset: int) -> int:
    """Writes all of `data` (any buffer) at `offset`, however short each pwrite is; returns its length."""
    view = memoryview(data)
    total = view.nbytes
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    return total


def naming(e: OSError, path: str) -> OSError:
    """`e`, naming `path` if it names no file: errors of os.pwrite and os.fsync carry no file name,
    and the one-line error a user sees must say which file could not be written."""
    if e.filename is not None:
        return e
    return OSError(e.errno, e.strerror or str(e), path)


def commit_temp(fd: int, tmp: str, path: str) -> None:
    """The end of every atomic write: fsync and close `fd` (open on `tmp`), rename `tmp` over `path`,
    fsync the folder. On failure `tmp` is removed (the fd is closed either way) and `path` is as it
    was."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise naming(e, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_parts(path: str, parts: Sequence[Any]) -> None:
    """Writes the concatenation of `parts` (buffers, never joined in memory) at `path` so that it is
    either absent/old or complete: a temp file in the same folder, fsync, rename, fsync of the folder.
    Never leaves a partial file at `path`."""
    tmp = temp_path_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        pos = 0
        for part in parts:
            pos += pwrite_all(fd, part, pos)
    except BaseException as e:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise naming(e, path) from None
        raise
    commit_temp(fd, tmp, path)


def atomic_write(path: str, data: bytes) -> None:
    """atomic_write_parts with one part."""
    atomic_write_parts(path, [data])


def write_sidecar(
    path: str | os.PathLike[str], manifest: FileManifest | DirManifest, *, bulk: bytes = b""
) -> None:
    """Writes a sidecar (or directory manifest) at `path` atomically."""
    atomic_write(os.fspath(path), encode_sidecar(manifest, bulk=bulk))


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _Reader:
    """Bounded cursor over one section payload; every overrun becomes a `_Bad` with an offset."""

    def __init__(self, buf: bytes | memoryview, base: int) -> None:
        self.buf = buf
        self.pos = 0
        self.base = base  # absolute offset of buf[0] in the sidecar, for messages

    def take(self, n: int, what: str) -> bytes | memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Bad(
                self.base + self.pos,
                f"{what}: {n} bytes, but only {len(self.buf) - self.pos} remain in the section",
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self.take(8, what))[0])

    def u128(self, what: str) -> int:
        return int.from_bytes(self.take(16, what), "little")

    def str16(self, what: str) -> str:
        n = self.u16(what + " length")
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(self.base + self.pos - n, f"{what}: valid UTF-8") from None

    def done(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise _Bad(self.base + self.pos, f"end of {what} ({len(self.buf) - self.pos} bytes left over)")


class _Bad(Exception):
    def __init__(self, offset: int, expected: str) -> None:
        super().__init__(f"at offset {offset}: expected {expected}")
        self.offset = offset
        self.expected = expected

    def input_error(self, path: str) -> InputError:
        return InputError(path, self.offset, f"expected {self.expected}")


@dataclass
class CopyStatus:
    name: str  # "A" or "B"
    offset: int | None
    ok: bool
    problem: str | None = None
    sections: list[RawSection] | None = None
    body_length: int | None = None
    body_hash: int | None = None
    kind: int = 0


@dataclass
class SidecarFile:
    """A sidecar read from disk: the decoded manifest, from the first intact copy, and the state of
    both copies. `damaged` is true when either copy (or a locator) failed its checks."""

    path: str
    kind: int
    manifest: FileManifest | DirManifest
    used_copy: str
    copies: list[CopyStatus]
    locator_problems: list[str]
    size: int
    bulk_offset: int
    bulk_length: int | None

    @property
    def damaged(self) -> bool:
        return bool(self.locator_problems) or not all(c.ok for c in self.copies)

    def problems(self) -> list[str]:
        out = list(self.locator_problems)
        out += [f"copy {c.name}: {c.problem}" for c in self.copies if not c.ok and c.problem]
        return out


def _parse_locator(
    data: bytes | memoryview, offset: int, magic: bytes, file_size: int
) -> tuple[int, int, int, int, int, int]:
    if len(data) != LOCATOR_SIZE:
        raise _Bad(offset, f"a {LOCATOR_SIZE}-byte {magic.decode()} locator")
    got_magic, version, kind, size, a_off, a_len, b_off, b_len, bulk_len = _LOCATOR.unpack(data[:56])
    if got_magic != magic:
        raise _Bad(offset, f"magic {magic.decode()}")
    if size != LOCATOR_SIZE:
        raise _Bad(offset + 12, f"locator size {LOCATOR_SIZE}, found {size}")
    (check,) = _U64.unpack(data[56:64])
    if check != _native.xxh3_64(data[:56]):
        raise _Bad(offset + 56, "the locator's XXH3-64 checksum to match its contents")
    if version != VERSION:
        raise _Bad(offset + 8, f"sidecar format version {VERSION}, found {version}: upgrade fastckpt")
    for off, n in ((a_off, a_len), (b_off, b_len)):
        if off + n > file_size:
            raise _Bad(offset + 16, f"copy range [{off}, {off + n}) inside the {file_size}-byte sidecar")
    return kind, a_off, a_len, b_off, b_len, bulk_len


def _parse_copy(data: memoryview, offset: int, index: int) -> tuple[int, list[RawSection], int, int]:
    """Validates one copy at data[0:] (data may extend past it); returns (kind, sections,
    body_length, XXH3-128 of the body) so the copies can be compared without copying them."""
    if len(data) < COPY_HEADER_SIZE + COPY_CHECKSUM_SIZE:
        raise _Bad(offset, "a manifest copy header")
    magic, version, kind, idx, _, count, _, body_len = _COPY_HEADER.unpack(data[:COPY_HEADER_SIZE])
    if magic != COPY_MAGIC:
        raise _Bad(offset, f"manifest copy magic {COPY_MAGIC.decode()}")
    end = COPY_HEADER_SIZE + body_len
    if end + COPY_CHECKSUM_SIZE > len(data):
        raise _Bad(offset + 24, f"a body length that fits the sidecar ({body_len} bytes does not)")
    stored = int.from_bytes(data[end : end + COPY_CHECKSUM_SIZE], "little")
    if stored != _native.xxh3_128(data[:end]):
        raise _Bad(offset + end, "the copy's XXH3-128 checksum to match its contents")
    # Fields below are covered by the checksum: a mismatch here is a writer bug or a future version.
    if version != VERSION:
        raise _Bad(offset + 8, f"sidecar format version {VERSION}, found {version}: upgrade fastckpt")
    if kind not in (KIND_FILE, KIND_DIRECTORY):
        raise _Bad(offset + 10, f"manifest kind 1 (file) or 2 (directory), found {kind}")
    if idx != index:
        raise _Bad(offset + 12, f"copy index {index}, found {idx}")
    sections: list[RawSection] = []
    pos = COPY_HEADER_SIZE
    for _ in range(count):
        if pos + SECTION_HEADER_SIZE > end:
            raise _Bad(offset + pos, f"{count} sections in the copy body")
        type_, flags, length = _SECTION_HEADER.unpack(data[pos : pos + SECTION_HEADER_SIZE])
        start = pos + SECTION_HEADER_SIZE
        if start + length > end:
            raise _Bad(
                offset + pos + 8, f"a section length within the copy body ({length} bytes does not fit)"
            )
        sections.append(RawSection(type_, flags, offset + start, data[start : start + length]))
        pos = start + _align(length, 8)
    if pos != end:
        raise _Bad(offset + min(pos, end), "the end of the copy body after its last section")
    return kind, sections, body_len, _native.xxh3_128(data[COPY_HEADER_SIZE:end])


def _decode_file_manifest(sections: list[RawSection]) -> FileManifest:
    by_type: dict[int, RawSection] = {}
    extra: list[Section] = []
    for s in sections:
        if s.type in (SEC_FILE_INFO, SEC_LEAVES, SEC_TENSORS, SEC_SEGMENTS):
            if s.type in by_type:
                raise _Bad(s.offset, f"one {SECTION_NAMES[s.type]} section, found a second")
            by_type[s.type] = s
        elif s.flags & FLAG_REQUIRED:
            raise _Bad(
                s.offset,
                f"only section types this fastckpt knows; section type {s.type} is required: upgrade fastckpt",
            )
        else:
            extra.append(Section(s.type, s.flags, bytes(s.payload)))
    for need in (SEC_FILE_INFO, SEC_LEAVES):
        if need not in by_type:
            raise _Bad(COPY_A_OFFSET, f"a {SECTION_NAMES[need]} section")
    r = _Reader(by_type[SEC_FILE_INFO].payload, by_type[SEC_FILE_INFO].offset)
    file_size = r.u64("file_size")
    fmt = r.str16("format")
    name = r.str16("name")
    unsafe = [r.str16("unsafe global") for _ in range(r.u32("unsafe count"))]
    r.done("FILE_INFO")
    r = _Reader(by_type[SEC_LEAVES].payload, by_type[SEC_LEAVES].offset)
    leaf_size = r.u64("leaf_size")
    if leaf_size < 64 or leaf_size > 1 << 30 or leaf_size & (leaf_size - 1):
        raise _Bad(r.base, f"a leaf size that is a power of two in [64, 2**30], found {leaf_size}")
    leaf_count = r.u64("leaf_count")
    if leaf_count != -(-file_size // leaf_size):
        raise _Bad(r.base + 8, f"leaf_count ceil({file_size} / {leaf_size}), found {leaf_count}")
    file_digest = r.u128("file digest")
    leaf_bytes = bytes(r.take(8 * leaf_count, "leaf digests"))
    r.done("LEAVES")
    m = FileManifest(file_size, leaf_size, file_digest, leaf_bytes, fmt, name, unsafe, extra=extra)
    m._pending = {t: by_type[t] for t in (SEC_TENSORS, SEC_SEGMENTS) if t in by_type}
    return m


def decode_tensors(section: RawSection) -> list[TensorEntry]:
    r = _Reader(section.payload, section.offset)
    out = []
    for _ in range(r.u64("tensor count")):
        key = r.str16("tensor key")
        dtype = r.str16("dtype")
        flags, itemsize, ndim = struct.unpack("<HIH", r.take(8, "tensor flags"))
        shape = struct.unpack(f"<{ndim}Q", r.take(8 * ndim, "shape"))
        offset, nbytes = struct.unpack("<QQ", r.take(16, "tensor offset"))
        storage = r.str16("storage")
        digest = r.u128("tensor digest")
        out.append(
            TensorEntry(key, dtype, tuple(shape), offset, nbytes, itemsize, storage or None, digest, flags)
        )
    r.done("TENSORS")
    return out


def decode_segments(section: RawSection) -> list[SegmentEntry]:
    r = _Reader(section.payload, section.offset)
    out = []
    for _ in range(r.u64("segment count")):
        offset, length, code = struct.unpack("<QQB", r.take(17, "segment"))
        name = r.str16("segment name")
        kind = SEGMENT_KINDS[code] if code < len(SEGMENT_KINDS) else "other"
        out.append(SegmentEntry(offset, length, kind, name or None))
    r.done("SEGMENTS")
    return out


def _decode_dir_manifest(sections: list[RawSection]) -> DirManifest:
    found = [s for s in sections if s.type == SEC_DIRECTORY]
    if len(found) != 1:
        raise _Bad(COPY_A_OFFSET, f"exactly one DIRECTORY section, found {len(found)}")
    for s in sections:
        if s.type != SEC_DIRECTORY and s.flags & FLAG_REQUIRED:
            raise _Bad(
                s.offset,
                f"only section types this fastckpt knows; section type {s.type} is required: upgrade fastckpt",
            )
    r = _Reader(found[0].payload, found[0].offset)
    fmt = r.str16("format")
    leaf_size = r.u64("leaf_size")
    entries = []
    for _ in range(r.u64("entry count")):
        at = r.base + r.pos
        path = r.str16("path")
        parts = path.split("/")
        if not path or path.startswith("/") or "\\" in path or any(x in ("", ".", "..") for x in parts):
            raise _Bad(at, f"a relative '/'-separated path without '.' or '..' parts, found {path!r}")
        size = r.u64("size")
        entries.append(DirEntry(path, size, r.u128("digest")))
    r.done("DIRECTORY")
    extra = [Section(s.type, s.flags, bytes(s.payload)) for s in sections if s.type != SEC_DIRECTORY]
    return DirManifest(fmt, leaf_size, entries, extra)


def _scan_for_copy_b(data: memoryview, start: int) -> Iterator[int]:
    """Candidate offsets of copy B when no locator is readable: it MUST start on a 4 KiB boundary."""
    for off in range(_align(max(start, COPY_A_OFFSET + 1), BLOCK), len(data) - COPY_HEADER_SIZE + 1, BLOCK):
        if data[off : off + 8] == COPY_MAGIC:
            yield off


def read_sidecar(path: str | os.PathLike[str], *, expect_kind: int | None = None) -> SidecarFile:
    """Reads and validates a sidecar; uses copy A, or copy B when A is damaged.

    Raises InputError when the file is not a sidecar or when no copy is intact.
    """
    spath = os.fspath(path)
    # ---- remote storage (report issue): a URL's sidecar is fetched with fsspec, then parsed alike.
    from ._url import is_url

    if is_url(spath):
        from .remote import read_bytes

        mapped: bytes | mmap.mmap = read_bytes(spath)
        size = len(mapped)
    else:
        # ---- end remote storage
        # Mapped, not read: a huge file passed as --sidecar must not be pulled into memory, and the
        # bulk area (parity) is never touched unless a locator is damaged.
        with open(spath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    data = memoryview(mapped)
    magics = (
        data[:8] == HEADER_MAGIC,
        data[COPY_A_OFFSET : COPY_A_OFFSET + 8] == COPY_MAGIC,
        data[size - LOCATOR_SIZE : size - LOCATOR_SIZE + 8] == TRAILER_MAGIC,
    )
    if size < LOCATOR_SIZE or not any(magics):
        if size == 0:
            raise InputError(spath, 0, "expected a fastckpt sidecar, found an empty file")
        raise InputError(
            spath, 0, f"expected a fastckpt sidecar starting with {HEADER_MAGIC.decode()} (this is not one)"
        )

    locator_problems: list[str] = []
    locators: list[tuple[int, int, int, int, int, int]] = []
    for name, off, magic in (("header", 0, HEADER_MAGIC), ("trailer", size - LOCATOR_SIZE, TRAILER_MAGIC)):
        try:
            locators.append(_parse_locator(data[off : off + LOCATOR_SIZE], off, magic, size))
        except _Bad as e:
            if "upgrade fastckpt" in e.expected:
                raise e.input_error(spath) from None
            locator_problems.append(f"{name} at offset {e.offset}: expected {e.expected}")

    a_candidates = [COPY_A_OFFSET]
    b_candidates: list[int] = []
    for _, a_off, _, b_off, _, _ in locators:
        if a_off not in a_candidates:
            a_candidates.append(a_off)
        if b_off not in b_candidates:
            b_candidates.append(b_off)
    bulk_len = locators[0][5] if locators else None

    def try_copy(name: str, index: int, candidates: list[int]) -> CopyStatus:
        first_problem: _Bad | None = None
        for off in candidates:
            try:
                kind, sections, body_len, body_hash = _parse_copy(data[off:], off, index)
            except _Bad as e:
                if "upgrade fastckpt" in e.expected:
                    raise e.input_error(spath) from None
                first_problem = first_problem or e
                continue
            return CopyStatus(name, off, True, None, sections, body_len, body_hash, kind)
        where = candidates[0] if candidates else None
        if first_problem is None:
            return CopyStatus(name, where, False, "not found (no readable locator points at it)")
        return CopyStatus(
            name, where, False, f"at offset {first_problem.offset}: expected {first_problem.expected}"
        )

    copy_a = try_copy("A", 0, a_candidates)
    if not b_candidates or not any(data[o : o + 8] == COPY_MAGIC for o in b_candidates if o + 8 <= size):
        b_candidates += [
            o for o in _scan_for_copy_b(data, COPY_A_OFFSET + COPY_HEADER_SIZE) if o not in b_candidates
        ]
    copy_b = try_copy("B", 1, b_candidates)
    copies = [copy_a, copy_b]
    if copy_a.ok and copy_b.ok and copy_a.body_hash != copy_b.body_hash:
        copy_b.ok = False
        copy_b.problem = "differs from copy A although both checksums match; copy A was used"

    used = next((c for c in copies if c.ok), None)
    if used is None:
        detail = "; ".join(f"copy {c.name} {c.problem}" for c in copies)
        raise InputError(
            spath,
            copy_a.offset if copy_a.offset is not None else COPY_A_OFFSET,
            f"expected an intact manifest copy, but both copies are damaged ({detail}); "
            "run 'fastckpt protect' again on a known-good copy of the checkpoint",
        )
    kind = used.kind
    if expect_kind is not None and kind != expect_kind:
        want = "file sidecar" if expect_kind == KIND_FILE else "directory manifest"
        raise InputError(
            spath, used.offset, f"expected a {want} (manifest kind {expect_kind}), found kind {kind}"
        )
    assert used.sections is not None
    try:
        manifest: FileManifest | DirManifest = (
            _decode_file_manifest(used.sections) if kind == KIND_FILE else _decode_dir_manifest(used.sections)
        )
    except _Bad as e:
        raise e.input_error(spath) from None
    if isinstance(manifest, FileManifest):
        manifest._source = spath
    a_len = None
    body_len = copy_a.body_length if copy_a.ok else copy_b.body_length  # bodies are identical
    if body_len is not None:
        a_len = COPY_HEADER_SIZE + body_len + COPY_CHECKSUM_SIZE
    return SidecarFile(
        path=spath,
        kind=kind,
        manifest=manifest,
        used_copy=used.name,
        copies=copies,
        locator_problems=locator_problems,
        size=size,
        bulk_offset=bulk_offset(a_len or 0),
        bulk_length=bulk_len,
    )


_T = TypeVar("_T")


def _decode_or_raise(fn: Callable[[RawSection], list[_T]], section: RawSection, source: str) -> list[_T]:
    try:
        return fn(section)
    except _Bad as e:
        raise e.input_error(source or "sidecar") from None
