"""Digest format v1 (docs/FORMAT.md): leaf digests, tensor digests and state_dict digests.

This module owns the public hashing API: `hash_bytes`, `hash_file`, `hash_tensor` and
`hash_state_dict`. Leaf hashing runs in the native core; the small per-tensor message that turns
leaf digests into a 128-bit tensor digest is built here. torch is never imported at module level.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import _native
from ._record import dataclass, field
from .errors import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_LEAF_SIZE = 65536
TENSOR_TAG = b"FCKPT-T1"
STATE_DICT_TAG = b"FCKPT-S1"

if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
    raise ImportError("fastckpt's native core assumes a little-endian host")


def check_leaf_size(leaf_size: int) -> int:
    if not isinstance(leaf_size, int) or leaf_size < 64 or leaf_size > 1 << 30 or leaf_size & (leaf_size - 1):
        raise UsageError(
            f"leaf_size must be a power of two between 64 and 2**30, got {leaf_size!r} (default 65536)"
        )
    return leaf_size


@dataclass(frozen=True)
class Digest:
    """The v1 digest of one tensor or byte range.

    `value` is the 128-bit tensor digest; `leaf_bytes` holds the leaf digests as packed
    little-endian u64 (the same bytes that enter the digest message and the sidecar).
    """

    value: int
    leaf_size: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    leaf_bytes: bytes = field(repr=False)

    def hex(self) -> str:
        """32 lowercase hex digits, most significant first (like xxhash's hexdigest)."""
        return f"{self.value:032x}"

    @property
    def leaves(self) -> list[int]:
        """The leaf digests as ints (XXH3-64 of each leaf, seed 0)."""
        return memoryview(self.leaf_bytes).cast("Q").tolist()

    def __str__(self) -> str:
        return self.hex()


def _digest_from_leaves(
    leaf_bytes: bytes, leaf_size: int, nbytes: int, dtype: str, shape: tuple[int, ...]
) -> Digest:
    name = dtype.encode("ascii")
    message = b"".join(
        (
            TENSOR_TAG,
            struct.pack("<QQH", leaf_size, nbytes, len(name)),
            name,
            struct.pack(f"<H{len(shape)}Q", len(shape), *shape),
            leaf_bytes,
        )
    )
    return Digest(_native.xxh3_128(message), leaf_size, nbytes, dtype, shape, leaf_bytes)


def digest_from_leaves(
    leaf_bytes: bytes, leaf_size: int, nbytes: int, dtype: str = "uint8", shape: tuple[int, ...] | None = None
) -> Digest:
    """Builds a Digest from leaf digests computed elsewhere (a sidecar, the GPU, a writer)."""
    return _digest_from_leaves(leaf_bytes, leaf_size, nbytes, dtype, (nbytes,) if shape is None else shape)


def hash_bytes(obj: Any, *, leaf_size: int = DEFAULT_LEAF_SIZE, threads: int = 0) -> Digest:
    """Digest of a bytes-like object or numpy array, as raw bytes (dtype uint8, shape [nbytes]).

    A non-contiguous array is hashed by its logical C-order bytes, like its contiguous copy.
    """
    check_leaf_size(leaf_size)
    try:
        view = memoryview(obj)
    except TypeError:
        raise UsageError(
            f"hash_bytes expects a bytes-like object or numpy array, got {type(obj).__name__}"
        ) from None
    if not view.c_contiguous:
        import numpy as np

        obj = np.ascontiguousarray(obj)
        view = memoryview(obj)
    leaves = _native.leaf_digests(view, leaf_size, threads)
    return _digest_from_leaves(leaves, leaf_size, view.nbytes, "uint8", (view.nbytes,))


# Files at least this large get a progress bar (when asked for and stderr is a terminal).
PROGRESS_MIN_BYTES = 1 << 30
_PROGRESS_CHUNK = 256 << 20


def hash_file(
    path: str | os.PathLike[str],
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    progress: bool = False,
) -> Digest:
    """Digest of a file's bytes, read through a zero-copy mmap (dtype uint8, shape [size]).

    With `progress=True` and stderr a terminal, large files are hashed in leaf-aligned chunks
    with a progress bar; the result is identical.
    """
    check_leaf_size(leaf_size)
    fspath = os.fspath(path)
    if progress and sys.stderr.isatty() and os.path.getsize(fspath) >= PROGRESS_MIN_BYTES:
        return _hash_file_with_progress(fspath, leaf_size, threads)
    size, leaves = _native.hash_file(fspath, leaf_size, threads)
    return _digest_from_leaves(leaves, leaf_size, size, "uint8", (size,))


def _hash_file_with_progress(path: str, leaf_size: int, threads: int) -> Digest:
    import mmap

    from ._progress import Progress

    chunk = max(_PROGRESS_CHUNK // leaf_size, 1) * leaf_size
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        parts: list[bytes] = []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, Progress(f"hash {path}", size) as bar:
            view = memoryview(mm)
            try:
                for start in range(0, size, chunk):
                    parts.append(_native.leaf_digests(view[start : start + chunk], leaf_size, threads))
                    bar.update(min(chunk, size - start))
            finally:
                view.release()
    return _digest_from_leaves(b"".join(parts), leaf_size, size, "uint8", (size,))


def dtype_name(dtype: torch.dtype) -> str:
    """The dtype string that enters a tensor digest: torch's name without the 'torch.' prefix."""
    return str(dtype).removeprefix("torch.")


def hash_tensor(tensor: torch.Tensor, *, leaf_size: int = DEFAULT_LEAF_SIZE, threads: int = 0) -> Digest:
    """Digest of a tensor's logical contiguous bytes, its dtype and its shape.

    CUDA tensors are hashed on the GPU when the CUDA backend is usable (see `backends()`), else
    copied to the host. A non-contiguous view hashes like its contiguous copy.
    """
    from ._tensors import tensor_leaf_digests

    check_leaf_size(leaf_size)
    leaves, nbytes = tensor_leaf_digests(tensor, leaf_size, threads)
    return _digest_from_leaves(leaves, leaf_size, nbytes, dtype_name(tensor.dtype), tuple(tensor.shape))


class StateDictDigest(Mapping[str, Digest]):
    """Per-tensor digests of a (possibly nested) state_dict, keyed by dotted path, plus one digest
    over all of them (`hex()`). Non-tensor leaves (ints, floats, strings) are not hashed."""

    def __init__(self, digests: dict[str, Digest], leaf_size: int) -> None:
        self._digests = digests
        self.leaf_size = leaf_size
        parts = [STATE_DICT_TAG, struct.pack("<QI", leaf_size, len(digests))]
        for key in sorted(digests, key=lambda k: k.encode("utf-8")):
            raw = key.encode("utf-8")
            parts += [struct.pack("<I", len(raw)), raw, digests[key].value.to_bytes(16, "big")]
        self.value: int = _native.xxh3_128(b"".join(parts))

    def hex(self) -> str:
        return f"{self.value:032x}"

    @property
    def leaves(self) -> dict[str, list[int]]:
        """Leaf digests per tensor key."""
        return {k: d.leaves for k, d in self._digests.items()}

    def __getitem__(self, key: str) -> Digest:
        return self._digests[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"StateDictDigest({self.hex()}, {len(self)} tensors)"


def iter_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields (dotted path, tensor) for every tensor in nested dicts, lists and tuples."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from iter_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from iter_tensors(v, f"{prefix}.{i}" if prefix else str(i))


def hash_state_dict(
    state_dict: Mapping[str, Any], *, leaf_size: int = DEFAULT_LEAF_SIZE, threads: int = 0
) -> StateDictDigest:
    """Digests of every tensor in a state_dict (nested dicts and lists are walked, keys dotted)."""
    from ._tensors import state_dict_leaf_digests

    check_leaf_size(leaf_size)
    items = list(iter_tensors(state_dict))
    leaves = state_dict_leaf_digests([t for _, t in items], leaf_size, threads)
    digests = {
        key: _digest_from_leaves(lb, leaf_size, nb, dtype_name(t.dtype), tuple(t.shape))
        for (key, t), (lb, nb) in zip(items, leaves, strict=True)
    }
    return StateDictDigest(digests, leaf_size)
