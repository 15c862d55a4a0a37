"""The sidecar's PARITY section (docs/FORMAT.md 2.6): Reed-Solomon parity stored beside a file.

This module owns the seam between the parity engine (`fastckpt.parity`) and the sidecar container
(`fastckpt.sidecar`): `sidecar_with_parity` (the one function writers call, `fastckpt protect` and
`fastckpt.save` alike, to get complete sidecar bytes with parity), the PARITY payload codec, and
`load_parity`, which finds the parity bytes in a sidecar's bulk area and checks every parity leaf
against its recorded digest so that damaged parity is never used. It never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import threading
from typing import Any

from . import _native
from ._record import dataclass, field, replace
from .errors import InputError, UsageError
from .parity import DEFAULT_REDUNDANCY, ParityParams, encode_file_parity, n_leaves_of
from .sidecar import (
    COPY_A_OFFSET,
    HEADER_MAGIC,
    KIND_FILE,
    SEC_PARITY,
    TRAILER_MAGIC,
    FileManifest,
    Section,
    atomic_write_parts,
    bulk_offset,
    commit_temp,
    copy_b_offset,
    encode_sidecar,
    naming,
    pwrite_all,
    temp_path_beside,
)

# save's stand-in section from before PARITY was defined (private-use type, same content as JSON).
# Writers drop it when they add a real PARITY section, so that no sidecar carries parity twice.
SEC_PARITY_STANDIN = 0x80000005
# Where the parity bytes start inside the bulk area. v1 writers: 0.
PARITY_BULK_OFFSET = 0
_FIXED = struct.Struct(
    "<QQQQQQ"
)  # range_offset, range_length, leaf_size, parity_offset, parity_length, count


@dataclass(frozen=True)
class ParitySection:
    """The decoded PARITY payload: the code, the byte range it protects and where the parity lives."""

    params: ParityParams
    range_offset: int
    range_length: int
    leaf_size: int
    parity_offset: int  # relative to the sidecar's bulk_offset
    parity_length: int
    leaf_bytes: bytes = field(repr=False)  # XXH3-64 leaf digests of the parity bytes, packed u64

    @property
    def parity_leaves(self) -> int:
        return len(self.leaf_bytes) // 8


def record_json(params: ParityParams) -> str:
    """The parity record of FORMAT.md 3.2, serialized as the PARITY section stores it (compact,
    keys in the record's order), so that equal parameters always give equal sidecar bytes."""
    return json.dumps(params.to_dict(), separators=(",", ":"))


def encode_parity_section(sec: ParitySection) -> bytes:
    raw = record_json(sec.params).encode("utf-8")
    return b"".join(
        (
            struct.pack("<H", len(raw)),
            raw,
            _FIXED.pack(
                sec.range_offset,
                sec.range_length,
                sec.leaf_size,
                sec.parity_offset,
                sec.parity_length,
                sec.parity_leaves,
            ),
            sec.leaf_bytes,
        )
    )


def decode_parity_section(payload: bytes | memoryview, *, path: str = "<sidecar>") -> ParitySection:
    """Parses a PARITY payload; InputError when it is malformed or uses an unknown parity version."""
    data = bytes(payload)
    if len(data) < 2:
        raise InputError(path, None, "a PARITY section with a parity record")
    (n,) = struct.unpack_from("<H", data)
    if len(data) < 2 + n + _FIXED.size:
        raise InputError(path, None, f"a PARITY section of at least {2 + n + _FIXED.size} bytes")
    try:
        record = json.loads(data[2 : 2 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(path, None, "a JSON parity record in the PARITY section") from None
    params = ParityParams.from_dict(record, path=path)
    r_off, r_len, leaf_size, p_off, p_len, count = _FIXED.unpack_from(data, 2 + n)
    digests = data[2 + n + _FIXED.size :]
    if len(digests) != 8 * count:
        raise InputError(
            path, None, f"{count} parity leaf digests in the PARITY section, found {len(digests) // 8}"
        )
    return ParitySection(params, r_off, r_len, leaf_size, p_off, p_len, digests)


def parity_section_of(manifest: FileManifest, *, path: str = "<sidecar>") -> ParitySection | None:
    """The manifest's PARITY section, checked against its LEAVES section; None when it has none.

    Raises InputError when the section does not fit the manifest (a writer bug or a future version):
    the caller then treats the file as having no usable parity.
    """
    found = [s for s in manifest.extra if s.type == SEC_PARITY]
    if not found:
        return None
    if len(found) > 1:
        raise InputError(path, None, "at most one PARITY section")
    sec = decode_parity_section(found[0].payload, path=path)
    n = n_leaves_of(manifest.file_size, manifest.leaf_size)
    if sec.range_offset != 0 or sec.range_length != manifest.file_size or sec.leaf_size != manifest.leaf_size:
        raise InputError(
            path,
            None,
            f"parity over the whole file ([0, {manifest.file_size}) at leaf size {manifest.leaf_size}), found "
            f"[{sec.range_offset}, {sec.range_offset + sec.range_length}) at leaf size {sec.leaf_size}",
        )
    try:
        sec.params.check(n)
    except UsageError as e:
        raise InputError(path, None, f"parity parameters valid for {n} leaves ({e})") from None
    want = sec.params.parity_nbytes(sec.leaf_size)
    if sec.parity_length != want or sec.parity_leaves != sec.params.parity_leaves:
        raise InputError(
            path,
            None,
            f"{want} parity bytes in {sec.params.parity_leaves} leaves, found {sec.parity_length} bytes "
            f"and {sec.parity_leaves} leaf digests",
        )
    return sec


def _manifest_without_parity(manifest: FileManifest) -> FileManifest:
    extra = [s for s in manifest.extra if s.type not in (SEC_PARITY, SEC_PARITY_STANDIN)]
    m = replace(manifest, extra=extra)
    m._pending = dict(manifest._pending)  # undecoded TENSORS/SEGMENTS travel verbatim
    return m


def _buffer_of(data: Any) -> tuple[Any, Any]:
    """(buffer, closer) for a path (mapped read-only) or a bytes-like object."""
    if isinstance(data, (str, os.PathLike)):
        fspath = os.fspath(data)
        with open(fspath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b"", None
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        with contextlib.suppress(AttributeError, OSError):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        return mm, mm
    return data, None


def sidecar_with_parity(
    manifest: FileManifest,
    data: Any = None,
    *,
    redundancy: float = DEFAULT_REDUNDANCY,
    parity: bytes | None = None,
    params: ParityParams | None = None,
    threads: int = 0,
) -> bytes:
    """The complete sidecar bytes of `manifest`, with Reed-Solomon parity of the file it describes.

    This is the one entry point writers use (`fastckpt protect`, `fastckpt.save`, the DCP writer):
    the result goes to `sidecar.atomic_write(sidecar_path_for(file), ...)`, or use
    `write_sidecar_with_parity`, which writes the same bytes without assembling them in memory.

    - `manifest`: the file's manifest (its LEAVES are the digests of the very bytes in `data`).
    - `data`: the file's bytes: a path (mapped read-only) or a bytes-like object of exactly
      `manifest.file_size` bytes. Not needed when `parity` is given.
    - `redundancy`: parity in percent of the file (FORMAT.md 3.7; default 5). 0 means no parity: the
      plain sidecar is returned.
    - `parity` (with `params`): parity already computed, e.g. by `parity.protect_file`'s fused pass;
      it is stored as is, only its leaf digests are computed here.

    Any PARITY section (or save's old private-use stand-in) already in `manifest.extra` is replaced;
    `manifest` itself is not modified.
    """
    return b"".join(
        _sidecar_parts(manifest, data, redundancy=redundancy, parity=parity, params=params, threads=threads)
    )


def write_sidecar_with_parity(
    sidecar_path: str | os.PathLike[str],
    manifest: FileManifest,
    data: Any = None,
    *,
    redundancy: float = DEFAULT_REDUNDANCY,
    parity: bytes | None = None,
    params: ParityParams | None = None,
    threads: int = 0,
) -> None:
    """Writes `sidecar_with_parity(...)` atomically to `sidecar_path` (temp file, fsync, rename,
    fsync of the folder) straight from the parity buffer: no multi-MB copy is assembled."""
    parts = _sidecar_parts(
        manifest, data, redundancy=redundancy, parity=parity, params=params, threads=threads
    )
    atomic_write_parts(os.fspath(sidecar_path), parts)


def _sidecar_parts(
    manifest: FileManifest,
    data: Any,
    *,
    redundancy: float,
    parity: bytes | None,
    params: ParityParams | None,
    threads: int,
) -> list[Any]:
    if isinstance(redundancy, bool) or not isinstance(redundancy, (int, float)) or redundancy < 0:
        raise UsageError(f"redundancy must be a percentage >= 0 (0 = no parity), got {redundancy!r}")
    base = _manifest_without_parity(manifest)
    if redundancy == 0 and parity is None:
        return [encode_sidecar(base)]
    L = manifest.leaf_size
    n = n_leaves_of(manifest.file_size, L)
    if parity is None:
        params = ParityParams.from_redundancy(float(redundancy), n)
        if data is None:
            raise UsageError(
                "sidecar_with_parity needs the file's bytes (a path or a buffer) to compute parity"
            )
        buf, closer = _buffer_of(data)
        try:
            nbytes = memoryview(buf).nbytes
            if nbytes != manifest.file_size:
                raise InputError(
                    os.fspath(data) if isinstance(data, (str, os.PathLike)) else "<buffer>",
                    None,
                    f"{manifest.file_size} bytes as described by the manifest, found {nbytes}",
                )
            parity = encode_file_parity(buf, L, params, threads=threads) if n else b""
        finally:
            if closer is not None:
                closer.close()
    else:
        if params is None:
            raise UsageError(
                "sidecar_with_parity: pass `params` (the ParityParams) with precomputed `parity`"
            )
        params.check(n)
        if len(parity) != params.parity_nbytes(L):
            raise UsageError(
                f"parity holds {len(parity)} bytes but k={params.k}, m={params.m}, groups={params.groups} "
                f"need {params.parity_nbytes(L)}"
            )
    assert params is not None
    leaf_bytes = _native.leaf_digests(parity, L, threads) if parity else b""
    sec = ParitySection(params, 0, manifest.file_size, L, PARITY_BULK_OFFSET, len(parity), leaf_bytes)
    base.extra = [*base.extra, Section(SEC_PARITY, 0, encode_parity_section(sec))]
    return _container_parts(base, parity)


def _container_parts(manifest: FileManifest, bulk: Any, bulk_len: int | None = None) -> list[Any]:
    """encode_sidecar(manifest, bulk=bulk) as [head, bulk, tail], so that the bulk is never copied
    (tests check that the parts join to exactly encode_sidecar's bytes). With `bulk_len`, `bulk` is
    not looked at (a stand-in for bytes not computed yet)."""
    from .sidecar import _copy, _encode_file_sections, _locator

    sections = _encode_file_sections(manifest)
    copy_a = _copy(KIND_FILE, 0, sections)
    copy_b = _copy(KIND_FILE, 1, sections)
    n = memoryview(bulk).nbytes if bulk_len is None else bulk_len
    b_off = copy_b_offset(len(copy_a), n)
    a, b = (COPY_A_OFFSET, len(copy_a)), (b_off, len(copy_b))
    start = bulk_offset(len(copy_a))
    head = _locator(HEADER_MAGIC, KIND_FILE, a, b, n) + copy_a
    head += bytes(start - len(head))
    tail = bytes(b_off - start - n) + copy_b + _locator(TRAILER_MAGIC, KIND_FILE, a, b, n)
    return [head, bulk, tail]


class StreamedSidecar:
    """A sidecar whose parity is written while it is computed.

    The temp file is created first; `bulk_start(shape, params)` says where the parity will go (from
    a manifest of the final shape: every digest may still be 0, only lengths matter); the fused
    protect pass writes the parity there as each group is finished and starts its write-back
    (`parity.scan_file(out_fd=...)`); `finish` then writes the two manifest copies around it, fsyncs,
    renames and fsyncs the folder: the bytes and the atomic protocol are exactly those of
    write_sidecar_with_parity, but most of the parity reaches the disk during the pass instead of in
    the final fsync. `abort` removes the temp file. Use it in a `with` block (abort unless finished).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.tmp = temp_path_beside(self.path)
        self.fd: int | None = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.start: int | None = None
        self._direct_fd: int | None = None

    def __enter__(self) -> StreamedSidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def bulk_start(self, shape: FileManifest, params: ParityParams) -> int:
        n = params.parity_nbytes(shape.leaf_size)
        stand_in = bytes(8 * params.parity_leaves)  # parity leaf digests: only their length matters
        sec = ParitySection(params, 0, shape.file_size, shape.leaf_size, PARITY_BULK_OFFSET, n, stand_in)
        base = _manifest_without_parity(shape)
        base.extra = [*base.extra, Section(SEC_PARITY, 0, encode_parity_section(sec))]
        self.start = len(_container_parts(base, b"", bulk_len=n)[0])
        return self.start

    def parity_fd(self, parity_nbytes: int, leaf_size: int) -> int:
        """The descriptor the pass should write the parity through (after bulk_start): one opened
        with O_DIRECT where the file system takes it, else the temp file's own.

        Parity is written once and read back only to be checked or to repair, so it bypasses the
        page cache: copying ~5 % of the file into fresh cache pages cost protect more CPU than the
        encode (measured in docs/PERFORMANCE.md), and would evict data that is read. Direct I/O
        needs page-aligned offsets and lengths: the bulk area starts on a 4 KiB boundary (FORMAT.md
        2.2), every parity write is whole parity leaves, so leaves must be 4 KiB multiples; below
        DIRECT_MIN_BYTES of parity the page cache is cheaper than the syscalls saved. A file system
        that refuses (tmpfs on older kernels, some FUSE mounts) is found by one probe write here,
        not mid-pass."""
        assert self.fd is not None and self.start is not None, "parity_fd() needs bulk_start() first"
        if self._direct_fd is not None:
            return self._direct_fd
        if parity_nbytes < DIRECT_MIN_BYTES or leaf_size % DIRECT_ALIGN or self.start % DIRECT_ALIGN:
            return self.fd
        fd = _open_direct(self.tmp, os.O_WRONLY)
        if fd is None:
            return self.fd
        try:
            # Probe: one aligned block where the parity's first leaf goes (the pass overwrites it).
            if os.pwrite(fd, _aligned_zeros(), self.start) != DIRECT_ALIGN:
                raise OSError("short direct write")
        except OSError:
            os.close(fd)
            return self.fd
        self._direct_fd = fd
        return fd

    def _close_direct(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None

    def finish(self, manifest: FileManifest, params: ParityParams, parity_leaf_bytes: bytes) -> None:
        """Completes the sidecar, whose parity bytes the pass already wrote at bulk_start;
        `parity_leaf_bytes` are their leaf digests (ScannedFile.parity_leaf_bytes)."""
        assert self.fd is not None, "finish() after abort()"
        self._close_direct()  # direct writes are complete when they return; the fsync below covers metadata
        L = manifest.leaf_size
        params.check(n_leaves_of(manifest.file_size, L))
        n = params.parity_nbytes(L)
        if len(parity_leaf_bytes) != 8 * params.parity_leaves:
            raise UsageError(
                f"{len(parity_leaf_bytes)} bytes of parity leaf digests for {params.parity_leaves} parity leaves"
            )
        if self.start is None:
            raise UsageError("StreamedSidecar.finish() without bulk_start(): the parity was never placed")
        sec = ParitySection(params, 0, manifest.file_size, L, PARITY_BULK_OFFSET, n, parity_leaf_bytes)
        base = _manifest_without_parity(manifest)
        base.extra = [*base.extra, Section(SEC_PARITY, 0, encode_parity_section(sec))]
        head, _, tail = _container_parts(base, b"", bulk_len=n)
        fd = self.fd
        try:
            if len(head) != self.start:
                # The final manifest is not the shape bulk_start was given (protect --force on a file
                # whose CRC check failed re-reads its layout): move the parity to where it now belongs.
                parity = _pread_exact(fd, n, self.start)
                os.ftruncate(fd, 0)
                pwrite_all(fd, parity, len(head))
            pwrite_all(fd, head, 0)
            pwrite_all(fd, tail, len(head) + n)
        except OSError as e:
            raise naming(e, self.path) from None  # the with block's abort() removes the temp file
        self.fd = None  # commit_temp closes it, and removes the temp file if it fails
        commit_temp(fd, self.tmp, self.path)

    def abort(self) -> None:
        """Closes and removes the temp file (nothing happens after finish())."""
        self._close_direct()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


# Parity moves through direct I/O (no page cache) only in whole 4 KiB blocks, and only from this much
# parity up (for less the page cache costs nothing worth saving).
DIRECT_ALIGN = 4096
DIRECT_MIN_BYTES = 8 << 20
# Direct reads go through a page-aligned buffer of this size: one kept for the process (fresh pages are
# slow to touch on some VMs), or a private one for a caller that finds it in use by another thread.
_DIRECT_CHUNK = 4 << 20
_direct_buffer: mmap.mmap | None = None
_direct_buffer_lock = threading.Lock()


def _open_direct(path: str, flags: int) -> int | None:
    """`path` opened with O_DIRECT, or None where the platform or file system has no direct I/O."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return None
    try:
        return os.open(path, flags | direct | os.O_CLOEXEC)
    except OSError:
        return None


def _aligned_zeros() -> mmap.mmap:
    return mmap.mmap(-1, DIRECT_ALIGN)  # anonymous mappings are page-aligned and zero-filled


def _parity_digests_direct(path: str, start: int, length: int, leaf_size: int, threads: int) -> bytes | None:
    """The leaf digests of sidecar bytes [start, start + length), read with direct I/O into one
    reused buffer (the parity is not in the page cache after a direct write, and reading it through
    the cache would fill ~5 % of the checkpoint's size with fresh pages just to hash them once).
    None when direct reads cannot be used here (unaligned, too small, unsupported, or the file
    ends early): the caller then maps the file."""
    global _direct_buffer
    if length < DIRECT_MIN_BYTES or start % DIRECT_ALIGN or leaf_size % DIRECT_ALIGN or length % leaf_size:
        return None
    fd = _open_direct(path, os.O_RDONLY)
    if fd is None:
        return None
    shared = _direct_buffer_lock.acquire(blocking=False)
    try:
        if os.fstat(fd).st_size < start + length:
            return None
        if not shared:
            buf = mmap.mmap(-1, _DIRECT_CHUNK)
        else:
            if _direct_buffer is None:
                _direct_buffer = mmap.mmap(-1, _DIRECT_CHUNK)
            buf = _direct_buffer
        chunk = _DIRECT_CHUNK - _DIRECT_CHUNK % leaf_size
        view = memoryview(buf)
        parts = []
        try:
            done = 0
            while done < length:
                want = min(chunk, length - done)
                got = 0
                while got < want:
                    n = os.preadv(fd, [view[got:want]], start + done + got)
                    if n <= 0:
                        return None
                    got += n
                parts.append(_native.leaf_digests(view[:want], leaf_size, threads))
                done += want
        finally:
            view.release()
        return b"".join(parts)
    except OSError:
        return None
    finally:
        if shared:
            _direct_buffer_lock.release()
        os.close(fd)


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, min(n - len(out), 1 << 26), offset + len(out))
        if not chunk:
            raise OSError(f"the sidecar's temp file ended {n - len(out)} bytes short of its parity")
        out += chunk
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Reading parity back
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedParity:
    """Parity read from a sidecar's bulk area. `damaged` lists the parity leaves whose digests do not
    match (or that lie past the end of a truncated sidecar); `data` holds all parity bytes, with
    zeros where the sidecar ends early. Close it (or use it in `with`) to release the mapping."""

    section: ParitySection
    data: bytes | memoryview
    damaged: list[int]
    _mm: Any = field(default=None, repr=False)

    def close(self) -> None:
        if isinstance(self.data, memoryview):
            self.data.release()
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> LoadedParity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_parity(sidecar_path: str, bulk_offset: int, sec: ParitySection, *, threads: int = 0) -> LoadedParity:
    """Maps the parity bytes of `sec` from the sidecar file (whose bulk area starts at `bulk_offset`,
    `SidecarFile.bulk_offset`) and checks each parity leaf against its recorded digest."""
    start = bulk_offset + sec.parity_offset
    from ._url import is_url

    if is_url(sidecar_path):
        from . import remote

        # A sidecar in object storage: fetch just the parity range (missing bytes count as damaged).
        with remote.open_reader(sidecar_path) as reader:
            avail = max(0, min(sec.parity_length, reader.size - start))
            head = reader.read(start, avail) if avail else b""
        return _checked_parity(sec, head + bytes(sec.parity_length - avail), avail, None, threads)
    with open(sidecar_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        avail = max(0, min(sec.parity_length, size - start))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if avail == sec.parity_length and mm is not None:
        data: bytes | memoryview = memoryview(mm)[start : start + sec.parity_length]
        # Checked with direct reads where possible (the parity is usually not cached: protect writes
        # it past the page cache); the mapping is then read only where a repair needs the bytes.
        digests = _parity_digests_direct(sidecar_path, start, sec.parity_length, sec.leaf_size, threads)
        if digests is not None:
            return LoadedParity(sec, data, _mismatched_leaves(digests, sec.leaf_bytes), mm)
        _populate(mm, start, sec.parity_length)
        keep = mm
    else:
        # A truncated sidecar: the missing leaves are zeros and reported damaged.
        head = bytes(memoryview(mm)[start : start + avail]) if (mm is not None and avail) else b""
        data = head + bytes(sec.parity_length - avail)
        if mm is not None:
            mm.close()
        keep = None
    return _checked_parity(sec, data, avail, keep, threads)


# Linux >= 5.14; Python 3.11's mmap module does not name it. Older kernels answer EINVAL (ignored).
_MADV_POPULATE_READ = 22


def _populate(mm: mmap.mmap, start: int, length: int) -> None:
    """Maps the page-cache pages of [start, start + length) in one call: hashing ~100 MB of parity
    through page faults costs several times the hash itself."""
    lo = start - start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        mm.madvise(_MADV_POPULATE_READ, lo, start + length - lo)


class Pending:
    """A call running on a thread of its own (`in_background`); result() joins it and returns its
    value or re-raises what it raised."""

    def __init__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args, **kwargs)
            except BaseException as e:  # re-raised by result()
                self._error = e

        self._thread = threading.Thread(target=run, name="fastckpt-parity", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def in_background(fn: Any, *args: Any, **kwargs: Any) -> Pending:
    """Starts fn(*args, **kwargs) on a thread: verify and repair check the parity (read from the
    disk) while the file is hashed."""
    return Pending(fn, *args, **kwargs)


def _mismatched_leaves(actual: bytes, expected: bytes) -> list[int]:
    """Indices of the packed u64 leaf digests that differ (both hold the same number)."""
    if actual == expected:
        return []
    qa, qe = memoryview(actual).cast("Q"), memoryview(expected).cast("Q")
    return [i for i in range(len(qe)) if qa[i] != qe[i]]


def _checked_parity(
    sec: ParitySection, data: bytes | memoryview, avail: int, keep: Any, threads: int
) -> LoadedParity:
    L = sec.leaf_size
    actual = _native.leaf_digests(data, L, threads) if sec.parity_length else b""
    damaged = _mismatched_leaves(actual, sec.leaf_bytes)
    whole = avail // L  # leaves wholly present
    damaged = sorted(set(damaged) | set(range(whole, sec.parity_leaves)))
    return LoadedParity(sec, data, damaged, keep)


def rebuild_parity_leaves(
    file_view: Any, file_size: int, sec: ParitySection, leaves: list[int], *, threads: int = 0
) -> dict[int, bytes]:
    """Recomputes the given parity leaves from the (intact) file bytes: each group's data leaves are
    gathered into one buffer and encoded as a single group with the same k and m, which gives the
    same coefficients (FORMAT.md 3.5: a group's parity depends only on its own leaves, in order)."""
    p = sec.params
    L = sec.leaf_size
    n = n_leaves_of(file_size, L)
    view = memoryview(file_view)
    out: dict[int, bytes] = {}
    by_group: dict[int, list[int]] = {}
    for j in leaves:
        by_group.setdefault(j % p.groups, []).append(j)
    for g, js in by_group.items():
        members = range(g, n, p.groups)
        gathered = b"".join(bytes(view[i * L : min((i + 1) * L, file_size)]) for i in members)
        # Every member but the file's last leaf is whole, and the last leaf is always the group's
        # last member, so zero padding at the end of `gathered` is exactly the code's padding.
        one = ParityParams(p.k, p.m, 1)
        par = encode_file_parity(gathered, L, one, threads=threads)
        for j in js:
            r = j // p.groups
            out[j] = par[r * L : (r + 1) * L]
    view.release()
    return out


def parity_problems(sc: Any, *, threads: int = 0) -> list[str]:
    """What is wrong with the parity of a file sidecar read by `sidecar.read_sidecar` (damaged or
    missing parity leaves, an unusable PARITY section); empty when it is intact or absent."""
    manifest = sc.manifest
    if not isinstance(manifest, FileManifest):
        return []
    try:
        sec = parity_section_of(manifest, path=sc.path)
    except InputError as e:
        return [f"parity is unusable: {e.expected}"]
    if sec is None:
        return []
    # load_parity checks with direct reads where it can and maps the parity lazily: nothing but the
    # digests is read here.
    with load_parity(sc.path, sc.bulk_offset, sec, threads=threads) as loaded:
        bad = loaded.damaged
    if not bad:
        return []
    return [f"{len(bad)} of {sec.parity_leaves} parity leaves are damaged (first: parity leaf {bad[0]})"]


__all__ = [
    "SEC_PARITY_STANDIN",
    "LoadedParity",
    "ParitySection",
    "Pending",
    "decode_parity_section",
    "encode_parity_section",
    "in_background",
    "load_parity",
    "parity_problems",
    "parity_section_of",
    "rebuild_parity_leaves",
    "record_json",
    "sidecar_with_parity",
    "write_sidecar_with_parity",
]
