"""Checkpoints in object storage: fsspec URLs opened as random-access readers with parallel ranged reads.

This module owns every byte fastckpt reads from a URL (`s3://`, `gs://`, `az://`, `http(s)://`, any
fsspec protocol). Nothing is downloaded to disk: ranges are fetched by a pool of threads (each a
ranged GET through the protocol's own client) and handed to the native hasher as they arrive, so
hashing overlaps the network. `file://` URLs are turned into local paths and read through mmap.

Public API:
- `is_url(path)`, `local_path(path)`: what kind of location a string names.
- `open_reader(url) -> RangeReader`: `size`, `mtime`, `read(offset, length)`, `read_ranges(ranges)`.
- `iter_leaf_digests(source, leaf_size)`: leaf digests of a local file or URL, in order, as they are
  computed (first damage can be reported before the whole object is read).
- `hash_url(url, leaf_size=...) -> Digest`: the digest-format-v1 digest of an object.
- `RemoteFileView`: the `formats` readers' FileView interface over a URL (bounded block cache).
- `exists`, `isdir`, `read_bytes`, `list_files`, `info`, `join`.

Credentials and endpoints come from the protocol's usual configuration (for S3: the AWS
environment variables or profile; a custom endpoint via `FSSPEC_S3_ENDPOINT_URL` or
`FSSPEC_S3='{"endpoint_url": ...}'`, fsspec's own configuration mechanism).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._url import is_url as is_url  # re-exported: part of this API
from ._url import local_path as local_path
from .errors import InputError, UsageError

# Ranged reads are this large (a multiple of every supported leaf size up to 8 MiB): big enough to
# amortise a request's latency, small enough that CONCURRENCY of them in flight stay in cache.
CHUNK = 8 << 20
CONCURRENCY = 16
# Reads the readers make (headers, zip directories, pickles) are served from cached blocks.
BLOCK = 1 << 20
CACHE_BLOCKS = 64


def join(base: str, *parts: str) -> str:
    """Joins path components with '/' for URLs and os.path.join for local paths."""
    if is_url(base):
        out = base.rstrip("/")
        for part in parts:
            out = out + "/" + part.strip("/")
        return out
    return os.path.join(base, *parts)


def _fsspec() -> Any:
    try:
        import fsspec  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise UsageError(
            "reading URLs needs fsspec and the protocol's client: pip install 'fastckpt[remote]' "
            "(fsspec, s3fs); for gs:// also gcsfs"
        ) from None
    return fsspec


_FS_LOCK = threading.Lock()


def _fs(url: str) -> tuple[Any, str]:
    fsspec = _fsspec()
    with _FS_LOCK:
        try:
            return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
        except ImportError as e:
            raise UsageError(
                f"cannot read {url}: {e} (install the fsspec backend for this protocol)"
            ) from None
        except ValueError as e:
            raise InputError(url, None, f"expected a URL fsspec understands ({e})") from None


def _error(url: str, offset: int | None, err: BaseException) -> InputError:
    """One-line InputError for a failed remote operation (no traceback reaches the CLI)."""
    if isinstance(err, FileNotFoundError):
        return InputError(url, offset, "expected an existing object, but there is none at this URL")
    if isinstance(err, PermissionError):
        return InputError(url, offset, f"expected read access (permission denied: {err})")
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InputError(url, offset, f"expected a readable object ({type(err).__name__}: {text[:200]})")


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        if isinstance(v, str):
            from datetime import datetime

            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@dataclass
class RemoteInfo:
    url: str
    size: int
    mtime: float | None
    is_dir: bool


def info(url: str) -> RemoteInfo:
    """Size, modification time and kind of an object or prefix."""
    fs, path = _fs(url)
    try:
        d = fs.info(path)
    except Exception as e:
        raise _error(url, None, e) from None
    is_dir = d.get("type") == "directory"
    return RemoteInfo(url, int(d.get("size") or 0), _mtime(d), is_dir)


def exists(url: str) -> bool:
    if not is_url(url):
        return os.path.exists(local_path(url))
    fs, path = _fs(url)
    try:
        return bool(fs.exists(path))
    except Exception as e:
        raise _error(url, None, e) from None


def isdir(url: str) -> bool:
    if not is_url(url):
        return os.path.isdir(local_path(url))
    fs, path = _fs(url)
    try:
        return bool(fs.isdir(path))
    except Exception as e:
        raise _error(url, None, e) from None


def read_bytes(url: str, *, limit: int = 1 << 30) -> bytes:
    """A whole (small) object: sidecars, DCP .metadata, index files. Refuses objects over `limit`."""
    if not is_url(url):
        with open(local_path(url), "rb") as f:
            return f.read()
    r = open_reader(url)
    if r.size > limit:
        raise InputError(url, None, f"expected an object of at most {limit} bytes, found {r.size}")
    return r.read(0, r.size)


def list_files(url: str) -> list[tuple[str, int, float | None]]:
    """(relative '/'-separated path, size, mtime) of every object under a URL prefix, sorted."""
    fs, path = _fs(url)
    root = path.rstrip("/")
    try:
        found = fs.find(root, detail=True, withdirs=False)
    except Exception as e:
        raise _error(url, None, e) from None
    out = []
    for name, d in found.items():
        if d.get("type") == "directory":
            continue
        name = name.rstrip("/")
        if not name.startswith(root + "/"):
            continue
        out.append((name[len(root) + 1 :], int(d.get("size") or 0), _mtime(d)))
    return sorted(out)


class RangeReader:
    """A remote object opened for random access. Every read is bounded by the object's size."""

    def __init__(self, url: str, *, concurrency: int = CONCURRENCY) -> None:
        self.url = url
        self.fs, self.fspath = _fs(url)
        try:
            d = self.fs.info(self.fspath)
        except Exception as e:
            raise _error(url, None, e) from None
        if d.get("type") == "directory":
            raise InputError(url, None, "expected an object, found a prefix (directory)")
        self.size = int(d.get("size") or 0)
        self.mtime = _mtime(d)
        self.concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0

    # -- thread pool ---------------------------------------------------------------------------
    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fastckpt-get")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (one ranged GET). Raises InputError past the end or
        when the object returns fewer bytes (it changed or was truncated while being read)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                self.url, offset, f"expected {length} bytes within the object's {self.size} bytes"
            )
        if length == 0:
            return b""
        try:
            data = self.fs.cat_file(self.fspath, start=offset, end=offset + length)
        except Exception as e:
            raise _error(self.url, offset, e) from None
        self.requests += 1
        self.bytes_read += len(data)
        if len(data) != length:
            raise InputError(
                self.url,
                offset + len(data),
                f"{length} bytes from a ranged read, got {len(data)} (the object changed while being read?)",
            )
        return bytes(data)

    def submit(self, offset: int, length: int) -> Future[bytes]:
        return self.pool().submit(self.read, offset, length)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several (offset, length) ranges, fetched in parallel; results in the order given."""
        futures = [self.submit(o, n) for o, n in ranges]
        return [f.result() for f in futures]

    def iter_chunks(
        self, start: int = 0, end: int | None = None, *, chunk: int | None = None, ahead: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) over [start, end) in order, keeping up to `ahead` ranged reads in flight.
        `chunk` defaults to the module's CHUNK at call time."""
        end = self.size if end is None else min(end, self.size)
        chunk = chunk or CHUNK
        ranges = [(o, min(chunk, end - o)) for o in range(start, end, chunk)]
        yield from zip((o for o, _ in ranges), self.iter_ranges(ranges, ahead=ahead), strict=True)

    def iter_ranges(self, ranges: Sequence[tuple[int, int]], *, ahead: int | None = None) -> Iterator[bytes]:
        """The bytes of each range in order, with up to `ahead` (default: 2 x concurrency) in flight.
        Memory stays bounded by `ahead` ranges however long the list is."""
        ahead = max(1, ahead or 2 * self.concurrency)
        pending: deque[Future[bytes]] = deque()
        it = iter(ranges)
        try:
            for o, n in it:
                pending.append(self.submit(o, n))
                if len(pending) >= ahead:
                    break
            while pending:
                data = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(self.submit(*nxt))
                yield data
        finally:
            for f in pending:
                f.cancel()


def open_reader(url: str, *, concurrency: int = CONCURRENCY) -> RangeReader:
    """Opens an object for ranged reads. Raises InputError when it cannot be read."""
    if not is_url(url):
        raise UsageError(f"open_reader expects a URL such as s3://bucket/key, got {url!r}")
    return RangeReader(url, concurrency=concurrency)


def fetch_to_memory(url: str, *, expected_size: int | None = None) -> Any:
    """The whole object in an anonymous memory map (never on disk), filled by parallel ranged
    reads; for consumers that need a mapping of the file (the diff reads tensors from one).
    `expected_size`: raise InputError when the object is smaller (it changed since it was read)."""
    import mmap

    with open_reader(url) as r:
        if expected_size is not None and r.size < expected_size:
            raise InputError(
                url, r.size, f"expected {expected_size} bytes (the object shrank while being read)"
            )
        if r.size == 0:
            return mmap.mmap(-1, 1)
        mm = mmap.mmap(-1, r.size)
        try:
            ranges = [(o, min(CHUNK, r.size - o)) for o in range(0, r.size, CHUNK)]
            for (o, n), data in zip(ranges, r.iter_ranges(ranges), strict=True):
                mm[o : o + n] = data
        except BaseException:
            mm.close()
            raise
        return mm


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------


def iter_leaf_digests(
    source: str | RangeReader,
    leaf_size: int = 65536,
    *,
    threads: int = 0,
    chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(index of the first leaf, packed leaf digests) for consecutive chunks of a file or object.

    Remote objects are fetched with parallel ranged reads while earlier chunks are hashed; local
    files are hashed through mmap. Concatenating the digests gives exactly `hash_file`'s leaves.
    """
    from . import _native
    from .digest import check_leaf_size

    check_leaf_size(leaf_size)
    chunk = max((chunk or CHUNK) // leaf_size, 1) * leaf_size
    if isinstance(source, RangeReader) or is_url(source):
        reader = source if isinstance(source, RangeReader) else open_reader(source)
        try:
            for offset, data in reader.iter_chunks(chunk=chunk):
                yield offset // leaf_size, _native.leaf_digests(data, leaf_size, threads)
                if progress:
                    progress(len(data))
        finally:
            if reader is not source:
                reader.close()
        return
    import mmap

    path = local_path(source)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                for start in range(0, size, chunk):
                    part = view[start : start + chunk]
                    try:
                        yield start // leaf_size, _native.leaf_digests(part, leaf_size, threads)
                    finally:
                        part.release()
                    if progress:
                        progress(min(chunk, size - start))
            finally:
                view.release()


def hash_url(
    url: str | RangeReader,
    *,
    leaf_size: int = 65536,
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """The v1 digest (`fastckpt.Digest`, dtype uint8, shape [size]) of a remote object."""
    from .digest import digest_from_leaves

    reader = url if isinstance(url, RangeReader) else open_reader(url)
    try:
        leaves = b"".join(
            d for _, d in iter_leaf_digests(reader, leaf_size, threads=threads, progress=progress)
        )
        return digest_from_leaves(leaves, leaf_size, reader.size)
    finally:
        if reader is not url:
            reader.close()


def hash_path(path: str, *, leaf_size: int = 65536, threads: int = 0, progress: bool = False) -> Any:
    """`hash_file` for a local path, `file://` URL or remote URL."""
    if is_url(path):
        if progress:
            from ._progress import Progress

            r = open_reader(path)
            with r, Progress(f"hash {path}", r.size) as bar:
                return hash_url(r, leaf_size=leaf_size, threads=threads, progress=bar.update)
        return hash_url(path, leaf_size=leaf_size, threads=threads)
    from .digest import hash_file

    return hash_file(local_path(path), leaf_size=leaf_size, threads=threads, progress=progress)


# ---------------------------------------------------------------------------------------------
# The formats readers' FileView over a URL
# ---------------------------------------------------------------------------------------------


class RemoteFileView:
    """The read interface of `fastckpt.formats._io.FileView` (size, read, view, u16/u32/u64, find,
    rfind, buf) over a remote object. Small reads are served from 1 MiB blocks kept in an LRU cache;
    reads larger than a few blocks are fetched directly with parallel ranged reads."""

    def __init__(self, url: str, *, reader: RangeReader | None = None) -> None:
        self.path = url
        self.reader = reader or open_reader(url)
        self._own_reader = reader is None
        self.size = self.reader.size
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._whole: memoryview | None = None

    @property
    def buf(self) -> memoryview:
        """The whole object, for readers that walk all of it (the legacy pickle reader). Fetched
        once, in parallel, on first use; bounded by the object's size."""
        if self._whole is None:
            r = self.reader
            ranges = [(o, min(CHUNK, r.size - o)) for o in range(0, r.size, CHUNK)]
            self._whole = memoryview(b"".join(r.read_ranges(ranges)))
        return self._whole

    def close(self) -> None:
        self._blocks.clear()
        self._whole = None
        if self._own_reader:
            self.reader.close()

    def __enter__(self) -> RemoteFileView:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            from .formats._io import OutOfBounds

            raise OutOfBounds(offset, length, self.size)

    def _block(self, index: int) -> bytes:
        with self._lock:
            data = self._blocks.get(index)
            if data is not None:
                self._blocks.move_to_end(index)
                return data
        start = index * BLOCK
        data = self.reader.read(start, min(BLOCK, self.size - start))
        with self._lock:
            self._blocks[index] = data
            while len(self._blocks) > CACHE_BLOCKS:
                self._blocks.popitem(last=False)
        return data

    def prefetch(self, offset: int, length: int) -> None:
        """Loads the blocks covering a range with parallel reads (a hint; never required)."""
        first, last = offset // BLOCK, (offset + max(length, 1) - 1) // BLOCK
        missing = [i for i in range(first, last + 1) if i not in self._blocks]
        futures = {i: self.reader.submit(i * BLOCK, min(BLOCK, self.size - i * BLOCK)) for i in missing}
        for i, f in futures.items():
            data = f.result()
            with self._lock:
                self._blocks[i] = data

    def read(self, offset: int, length: int) -> bytes:
        self.check(offset, length)
        if length == 0:
            return b""
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if last - first + 1 > 4:
            if last - first + 1 <= CACHE_BLOCKS // 2:
                self.prefetch(offset, length)
            else:
                return b"".join(
                    self.reader.read_ranges(
                        [(o, min(CHUNK, offset + length - o)) for o in range(offset, offset + length, CHUNK)]
                    )
                )
        parts = []
        for i in range(first, last + 1):
            block = self._block(i)
            lo = max(offset, i * BLOCK) - i * BLOCK
            hi = min(offset + length, (i + 1) * BLOCK) - i * BLOCK
            parts.append(block[lo:hi])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def view(self, offset: int, length: int) -> memoryview:
        return memoryview(self.read(offset, length))

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 2), "little")

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 4), "little")

    def u64(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 8), "little")

    def rfind(self, needle: bytes, start: int, end: int) -> int:
        start, end = max(start, 0), min(end, self.size)
        if end <= start:
            return -1
        i = self.read(start, end - start).rfind(needle)
        return -1 if i < 0 else start + i

    def find(self, needle: bytes, start: int, end: int) -> int:
        start, end = max(start, 0), min(end, self.size)
        if end <= start:
            return -1
        i = self.read(start, end - start).find(needle)
        return -1 if i < 0 else start + i


def open_view(path: str) -> Any:
    """A FileView for a local path (mmap) or a RemoteFileView for a URL."""
    if is_url(path):
        return RemoteFileView(path)
    from .formats._io import FileView

    return FileView(local_path(path))
