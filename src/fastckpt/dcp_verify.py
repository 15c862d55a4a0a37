"""DCP-aware additions to `fastckpt verify DIR` for torch.distributed.checkpoint folders.

`fastckpt.verify` checks a DCP folder file by file (against sidecars and the directory manifest,
or structurally against `.metadata`) and reports missing, extra and short files. This module adds
what a DCP user needs next: which checkpoint *items* (`fqn`, or `fqn@chunk_offsets` for a shard of
a sharded tensor) those files held. `annotate(path, report)` adds to the verify report:

- `items` on every damaged region of a `.distcp` file: the items whose bytes it overlaps;
- `dcp`: {"items": N, "damaged_items": [...], "missing_items": [...], "cut_off_items": [...]};
- one `dcp-items` problem naming them, when there are any.

Items come from the shards' sidecars (ITEMS sections written by fastckpt.dcp.FileSystemWriter) or,
for other folders, from `.metadata` read by the restricted reader. No torch import.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from .errors import FastckptError, InputError
from .sidecar import FileManifest

METADATA_NAME = ".metadata"

# ---------------------------------------------------------------------------------------------
# ITEMS sidecar section (FORMAT.md 2.3): digests of DCP write items
# ---------------------------------------------------------------------------------------------

SEC_ITEMS = 7
ITEM_TENSOR, ITEM_BYTES = 0, 1


class ItemDigest:
    """One write item of a `.distcp` file: its MetadataIndex (fqn, chunk offsets), its byte range
    in the file and the byte-range digest (FORMAT.md 1.4) of those bytes."""

    __slots__ = ("digest", "fqn", "kind", "length", "offset", "offsets")

    def __init__(
        self, fqn: str, offsets: tuple[int, ...] | None, kind: int, offset: int, length: int, digest: int
    ) -> None:
        self.fqn, self.offsets, self.kind = fqn, offsets, kind
        self.offset, self.length, self.digest = offset, length, digest

    @property
    def key(self) -> str:
        """`fqn`, or `fqn@o0,o1,...` for a chunk that does not start at the origin."""
        if self.offsets and any(self.offsets):
            return f"{self.fqn}@{','.join(map(str, self.offsets))}"
        return self.fqn

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemDigest) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )

    def __repr__(self) -> str:
        return f"ItemDigest({self.key!r}, [{self.offset}, {self.offset + self.length}), {self.digest:032x})"


def encode_items(items: Sequence[ItemDigest]) -> bytes:
    parts = [struct.pack("<Q", len(items))]
    for it in items:
        raw = it.fqn.encode("utf-8")
        offs = it.offsets or ()
        parts += [
            struct.pack("<H", len(raw)), raw,
            struct.pack("<BH", it.kind, len(offs)), struct.pack(f"<{len(offs)}Q", *offs),
            struct.pack("<QQ", it.offset, it.length), it.digest.to_bytes(16, "little"),
        ]  # fmt: skip
    return b"".join(parts)


def decode_items(payload: bytes | memoryview, *, path: str = "<sidecar>") -> list[ItemDigest]:
    buf = memoryview(payload)
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(buf):
            raise InputError(path, None, f"an ITEMS section of at least {pos + n} bytes, found {len(buf)}")
        out = buf[pos : pos + n]
        pos += n
        return out

    (count,) = struct.unpack("<Q", take(8))
    out = []
    for _ in range(count):
        (n,) = struct.unpack("<H", take(2))
        fqn = bytes(take(n)).decode("utf-8")
        kind, ndim = struct.unpack("<BH", take(3))
        offs = struct.unpack(f"<{ndim}Q", take(8 * ndim))
        offset, length = struct.unpack("<QQ", take(16))
        digest = int.from_bytes(take(16), "little")
        out.append(ItemDigest(fqn, tuple(offs) if ndim else None, kind, offset, length, digest))
    if pos != len(buf):
        raise InputError(
            path, None, f"the end of the ITEMS section after {count} items ({len(buf) - pos} bytes left)"
        )
    return out


def items_of(manifest: FileManifest, path: str) -> list[ItemDigest] | None:
    for s in manifest.extra:
        if s.type == SEC_ITEMS:
            return decode_items(s.payload, path=path)
    return None


def _items(root: str) -> list[tuple[str, str, int, int]] | None:
    """(key, relative file, offset, length) of every item, from `.metadata` (never executed)."""
    try:
        from .formats._dcp import read_dcp_metadata
    except ImportError:  # pragma: no cover
        return None
    try:
        md = read_dcp_metadata(root)
    except (FastckptError, OSError):
        return None
    if not md.items:
        return None
    return [(it.key, it.file, it.offset, it.length) for it in md.items]


def _item_digests(shard: str) -> tuple[int, dict[tuple[int, int], ItemDigest]]:
    """(leaf size, item digests by (offset, length)) from a shard's sidecar, if it has ITEMS."""
    from .sidecar import read_sidecar, sidecar_path_for

    spath = sidecar_path_for(shard)
    try:
        m = read_sidecar(spath).manifest
    except (FastckptError, OSError):
        return 0, {}
    if not isinstance(m, FileManifest):
        return 0, {}
    return m.leaf_size, {(it.offset, it.length): it for it in items_of(m, spath) or []}


def _item_bad(
    shard: str, digests: tuple[int, dict[tuple[int, int], ItemDigest]], off: int, n: int, size: int | None
) -> bool:
    """Whether an item that overlaps a damaged leaf really changed: its own digest decides when
    the writer recorded one (a damaged 64 KiB leaf can hold the tails and heads of several items)."""
    leaf_size, recs = digests
    rec = recs.get((off, n))
    if rec is None or size is None or off + n > size or os.path.getsize(shard) < off + n:
        return True
    import mmap

    from . import _native
    from .digest import digest_from_leaves

    if n == 0:
        return rec.digest != digest_from_leaves(b"", leaf_size, 0).value
    with (
        open(shard, "rb") as fh,
        mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm,
        memoryview(mm)[off : off + n] as view,
    ):
        leaves = _native.leaf_digests(view, leaf_size)
    return digest_from_leaves(leaves, leaf_size, n).value != rec.digest


def annotate(path: str, report: dict[str, Any]) -> dict[str, Any]:
    """Adds DCP item information to a `verify_path` report of a DCP folder (in place; returned)."""
    root = os.fspath(path)
    if (
        not os.path.isdir(root)
        or not os.path.isfile(os.path.join(root, METADATA_NAME))
        or "files" not in report
    ):
        return report
    items = _items(root)
    if items is None:
        return report
    by_file: dict[str, list[tuple[str, int, int]]] = {}
    for key, rel, off, n in items:
        by_file.setdefault(rel, []).append((key, off, n))
    damaged: list[str] = []
    cut_off: list[str] = []
    missing: list[str] = []

    def add(lst: list[str], k: str) -> None:
        if k not in lst:
            lst.append(k)

    for f in report["files"]:
        rel = f.get("file")
        its = by_file.get(rel or "", [])
        if not its:
            continue
        if f.get("missing"):
            for k, _, _ in its:
                add(missing, k)
            continue
        size = f.get("size")
        digests = _item_digests(os.path.join(root, rel)) if f.get("damaged") else (0, {})
        for region in f.get("damaged", []):
            lo, hi = region["offset"], region["offset"] + region["length"]
            hit = [
                k
                for k, off, n in its
                if off < hi and off + n > lo and _item_bad(os.path.join(root, rel), digests, off, n, size)
            ]
            region["items"] = hit
            for k in hit:
                add(damaged, k)
        if size is not None:
            for k, off, n in its:
                if off + n > size:
                    add(cut_off, k)
    for region in report.get("damaged", []):
        its = by_file.get(region.get("file") or "", [])
        lo, hi = region["offset"], region["offset"] + region["length"]
        region["items"] = [k for k, off, n in its if off < hi and off + n > lo]
    report["dcp"] = {
        "items": len(items),
        "damaged_items": damaged,
        "missing_items": missing,
        "cut_off_items": cut_off,
    }
    bad = damaged + [k for k in missing + cut_off if k not in damaged]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        report["problems"].append(
            {
                "offset": None,
                "kind": "dcp-items",
                "message": f"{len(bad)} of {len(items)} DCP item(s) damaged, cut off or in missing shards: {shown}",
            }
        )
        report["ok"] = False
    return report
