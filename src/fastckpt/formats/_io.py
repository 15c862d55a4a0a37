"""Bounded, read-only access to a checkpoint file through mmap.

Every read goes through `FileView`, which checks the range against the file size first, so a
corrupt length field can never make a reader allocate or read past the end of the file."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
from types import TracebackType

from ..errors import InputError


class OutOfBounds(Exception):
    """A read past the end of the file (the caller turns it into a Problem)."""

    def __init__(self, offset: int, length: int, size: int) -> None:
        super().__init__(f"needs bytes [{offset}, {offset + length}) but the file has {size}")
        self.offset = offset
        self.length = length
        self.size = size


class FileView:
    """A read-only mmap of a whole file (or an empty view for a zero-byte file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(path, None, "no such file") from None
        except OSError as e:
            raise InputError(path, None, f"cannot stat the file ({e.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(path, None, "expected a file, found a directory")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(path, None, "expected a regular file")
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise InputError(path, None, f"cannot open the file ({e.strerror})") from None
        self.size = os.fstat(self._fd).st_size
        self._mm: mmap.mmap | None = None
        if self.size:
            self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        self.buf = memoryview(self._mm) if self._mm is not None else memoryview(b"")

    def close(self) -> None:
        # A slice still referenced by a caller keeps the mapping alive; the GC unmaps it later.
        with contextlib.suppress(BufferError):
            self.buf.release()
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileView:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OutOfBounds(offset, length, self.size)

    def read(self, offset: int, length: int) -> bytes:
        self.check(offset, length)
        return bytes(self.buf[offset : offset + length])

    def view(self, offset: int, length: int) -> memoryview:
        self.check(offset, length)
        return self.buf[offset : offset + length]

    def u16(self, offset: int) -> int:
        self.check(offset, 2)
        return int(struct.unpack_from("<H", self.buf, offset)[0])

    def u32(self, offset: int) -> int:
        self.check(offset, 4)
        return int(struct.unpack_from("<I", self.buf, offset)[0])

    def u64(self, offset: int) -> int:
        self.check(offset, 8)
        return int(struct.unpack_from("<Q", self.buf, offset)[0])

    def rfind(self, needle: bytes, start: int, end: int) -> int:
        start = max(start, 0)
        end = min(end, self.size)
        if self._mm is None or end <= start:
            return -1
        return self._mm.rfind(needle, start, end)

    def find(self, needle: bytes, start: int, end: int) -> int:
        start = max(start, 0)
        end = min(end, self.size)
        if self._mm is None or end <= start:
            return -1
        return self._mm.find(needle, start, end)
