"""Pure-Python reference implementation of digest format v1: the test oracle.

It is deliberately small and slow, and built only on the `xxhash` package, so that every native
or GPU result can be checked against an independent implementation of docs/FORMAT.md. Nothing in
the fast paths imports this module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import xxhash

TENSOR_TAG = b"FCKPT-T1"
STATE_DICT_TAG = b"FCKPT-S1"


def leaf_digests(data: bytes, leaf_size: int) -> list[int]:
    """XXH3-64 (seed 0) of each leaf; the last may be shorter; empty input has no leaves."""
    return [xxhash.xxh3_64_intdigest(data[i : i + leaf_size]) for i in range(0, len(data), leaf_size)]


def tensor_message(
    leaves: Sequence[int], leaf_size: int, nbytes: int, dtype: str, shape: Sequence[int]
) -> bytes:
    name = dtype.encode("ascii")
    parts = [
        TENSOR_TAG,
        struct.pack("<QQ", leaf_size, nbytes),
        struct.pack("<H", len(name)),
        name,
        struct.pack("<H", len(shape)),
        struct.pack(f"<{len(shape)}Q", *shape),
        struct.pack(f"<{len(leaves)}Q", *leaves),
    ]
    return b"".join(parts)


def tensor_digest(data: bytes, leaf_size: int, dtype: str, shape: Sequence[int]) -> int:
    """The 128-bit tensor digest of `data`, the tensor's logical contiguous bytes."""
    message = tensor_message(leaf_digests(data, leaf_size), leaf_size, len(data), dtype, shape)
    return int(xxhash.xxh3_128_intdigest(message))


def bytes_digest(data: bytes, leaf_size: int) -> int:
    """A plain byte range (file, buffer) is a uint8 tensor of shape [len]."""
    return tensor_digest(data, leaf_size, "uint8", [len(data)])


def state_dict_digest(digests: dict[str, int], leaf_size: int) -> int:
    parts = [STATE_DICT_TAG, struct.pack("<QI", leaf_size, len(digests))]
    for key in sorted(digests, key=lambda k: k.encode("utf-8")):
        raw = key.encode("utf-8")
        parts += [struct.pack("<I", len(raw)), raw, digests[key].to_bytes(16, "big")]
    return int(xxhash.xxh3_128_intdigest(b"".join(parts)))
