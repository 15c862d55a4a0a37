"""A bounded zip reader for checkpoint archives (PKWARE APPNOTE 6.3: end of central directory,
zip64 end of central directory and locator, central directory entries, local headers, data
descriptors). It never inflates into memory and checks every offset and length against the
window it was given, so it can read whole files and zip blobs embedded in other files (DCP shards).

`read_zip` returns the records and candidate segments plus `Problem`s for everything that is
inconsistent: a central directory entry that disagrees with its local header, overlapping records,
records past the end, CRC-32 mismatches. When there is no end of central directory record the
file is usually truncated; `read_zip` then walks the local headers from the start to recover
what it can and to say where the file ends.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _crc
from ._io import FileView, OutOfBounds
from ._types import Problem, Segment

SIG_LOCAL = b"PK\x03\x04"
SIG_CENTRAL = b"PK\x01\x02"
SIG_EOCD = b"PK\x05\x06"
SIG_EOCD64 = b"PK\x06\x06"
SIG_LOCATOR = b"PK\x06\x07"
SIG_DESCRIPTOR = b"PK\x07\x08"

_EOCD_LEN = 22
_LOCATOR_LEN = 20
_EOCD64_LEN = 56
_CD_LEN = 46
_LH_LEN = 30
_U32_MAX = 0xFFFFFFFF
_MAX_COMMENT = 0xFFFF


@dataclass
class ZipEntry:
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    lh_offset: int  # absolute
    cd_offset: int | None = None  # absolute offset of its central directory entry
    data_offset: int | None = None  # absolute
    lh_len: int = 0
    desc_len: int = 0
    recovered: bool = False  # found by walking local headers (no central directory)

    @property
    def data_end(self) -> int:
        return (self.data_offset or 0) + self.csize

    @property
    def end(self) -> int:
        return self.data_end + self.desc_len


@dataclass
class ZipInfo:
    base: int
    end: int
    entries: list[ZipEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    cd_offset: int | None = None
    cd_size: int | None = None
    eocd_offset: int | None = None
    truncated: bool = False
    crc_recorded: bool = True
    # minimum size (relative to base) the archive needs, when it is truncated and derivable
    expected_size: int | None = None

    def by_name(self) -> dict[str, ZipEntry]:
        return {e.name: e for e in self.entries}


def looks_like_zip(fv: FileView, base: int = 0) -> bool:
    return fv.size - base >= 4 and fv.read(base, 4) in (SIG_LOCAL, SIG_EOCD)


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")


def _zip64_extra(extra: bytes, usize: int, csize: int, lh: int) -> tuple[int, int, int] | None:
    """Replaces the 0xFFFFFFFF fields with the values of a zip64 extended information field."""
    pos = 0
    while pos + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + hlen]
        if hid == 0x0001:
            vals = []
            for i in range(0, len(body) - 7, 8):
                vals.append(struct.unpack_from("<Q", body, i)[0])
            it = iter(vals)
            try:
                if usize == _U32_MAX:
                    usize = next(it)
                if csize == _U32_MAX:
                    csize = next(it)
                if lh == _U32_MAX:
                    lh = next(it)
            except StopIteration:
                return None
            return usize, csize, lh
        pos += 4 + hlen
    return (usize, csize, lh) if _U32_MAX not in (usize, csize, lh) else None


def read_zip(
    fv: FileView,
    *,
    base: int = 0,
    end: int | None = None,
    size_hint: Callable[[ZipEntry], int | None] | None = None,
) -> ZipInfo:
    """Reads the zip archive occupying [base, end) of `fv` (offsets inside are relative to base)."""
    end = fv.size if end is None else end
    info = ZipInfo(base, end)
    try:
        found = _find_eocd(fv, info)
    except OutOfBounds as e:  # pragma: no cover - _find_eocd bounds its own reads
        info.problems.append(Problem(e.offset, str(e), "truncated"))
        found = False
    if not found:
        info.truncated = True
        _recover(fv, info, size_hint)
        return info
    try:
        _read_central_directory(fv, info)
    except OutOfBounds as e:
        info.problems.append(
            Problem(e.offset, f"central directory runs past the end of the archive ({e})", "truncated")
        )
    _read_local_headers(fv, info)
    return info


def _find_eocd(fv: FileView, info: ZipInfo) -> bool:
    base, end = info.base, info.end
    n = end - base
    if n == 0:
        info.problems.append(Problem(base, "empty file: expected a zip archive", "truncated"))
        return False
    if n < _EOCD_LEN:
        info.problems.append(
            Problem(
                end,
                f"failed finding central directory: {n} bytes is shorter than an end of central directory record ({_EOCD_LEN})",
                "truncated",
            )
        )
        return False
    lo = max(base, end - _EOCD_LEN - _MAX_COMMENT)
    pos = fv.rfind(SIG_EOCD, lo, end - _EOCD_LEN + 4)
    chosen = -1
    while pos >= lo:
        clen = fv.u16(pos + 20)
        if pos + _EOCD_LEN + clen <= end:
            chosen = pos
            break
        pos = fv.rfind(SIG_EOCD, lo, pos + 3)
    if chosen < 0:
        info.problems.append(
            Problem(end, "failed finding central directory: no end of central directory record in the last "
                    f"{end - lo} bytes; the file is truncated or not a zip archive", "truncated")
        )  # fmt: skip
        return False
    pos = chosen
    info.eocd_offset = pos
    clen = fv.u16(pos + 20)
    if pos + _EOCD_LEN + clen < end:
        info.problems.append(
            Problem(
                pos + _EOCD_LEN + clen,
                f"{end - (pos + _EOCD_LEN + clen)} unexpected bytes after the end of central directory record",
                "bad-header",
            )
        )
    disk, cd_disk, n_disk, n_total, cd_size, cd_off = struct.unpack_from("<HHHHII", fv.view(pos + 4, 16))
    eocd_segs = [Segment(pos, _EOCD_LEN + clen, "zip-central-directory", "end of central directory")]
    zip64 = False
    loc = pos - _LOCATOR_LEN
    if loc >= base and fv.read(loc, 4) == SIG_LOCATOR:
        zip64 = True
        e64_rel = fv.u64(loc + 8)
        e64 = base + e64_rel
        eocd_segs.append(
            Segment(loc, _LOCATOR_LEN, "zip-central-directory", "zip64 end of central directory locator")
        )
        if e64 + _EOCD64_LEN > loc or e64 < base or fv.read(e64, 4) != SIG_EOCD64:
            # Archives with data prepended store offsets relative to the original start; the
            # zip64 record normally sits right before the locator.
            alt = loc - _EOCD64_LEN
            if alt >= base and fv.read(alt, 4) == SIG_EOCD64:
                e64 = alt
            else:
                info.problems.append(
                    Problem(
                        loc,
                        f"zip64 locator points at offset {e64_rel}, which holds no zip64 end of central directory record",
                        "bad-header",
                    )
                )
                zip64 = False
        if zip64:
            rec_size = fv.u64(e64 + 4)
            n_total = fv.u64(e64 + 32)
            cd_size = fv.u64(e64 + 40)
            cd_off = fv.u64(e64 + 48)
            rec_len = 12 + rec_size
            if e64 + rec_len != loc:
                info.problems.append(
                    Problem(
                        e64,
                        f"zip64 end of central directory record claims {rec_len} bytes but the locator follows after {loc - e64}",
                        "bad-header",
                    )
                )
                rec_len = max(min(rec_len, loc - e64), _EOCD64_LEN)
            eocd_segs.append(Segment(e64, rec_len, "zip-central-directory", "zip64 end of central directory"))
    elif _U32_MAX in (cd_size, cd_off) or n_total == 0xFFFF:
        info.problems.append(
            Problem(
                pos, "end of central directory needs zip64 values but there is no zip64 locator", "bad-header"
            )
        )
    if disk != 0 or cd_disk != 0 or (not zip64 and n_disk != n_total):
        info.problems.append(Problem(pos, "multi-disk zip archives are not supported", "bad-header"))
    cd_start = base + cd_off
    cd_region_end = min(s.offset for s in eocd_segs)
    if cd_start + cd_size > cd_region_end or cd_start < base:
        # Data prepended to the archive: the central directory still sits right before the EOCD.
        alt = cd_region_end - cd_size
        if alt >= base and cd_size >= 4 and fv.read(alt, 4) == SIG_CENTRAL:
            info.problems.append(
                Problem(
                    pos,
                    f"central directory offset {cd_off} is off by {alt - cd_start} bytes (data before the archive?)",
                    "bad-header",
                )
            )
            cd_start = alt
        else:
            info.problems.append(
                Problem(pos, f"central directory [{cd_start}, {cd_start + cd_size}) does not fit before its end record at offset {cd_region_end}", "truncated" if cd_start + cd_size > cd_region_end else "bad-header")
            )  # fmt: skip
            cd_size = max(0, min(cd_size, cd_region_end - max(cd_start, base)))
            cd_start = max(cd_start, base)
    elif cd_start + cd_size < cd_region_end:
        info.problems.append(
            Problem(
                cd_start + cd_size,
                f"{cd_region_end - cd_start - cd_size} unexpected bytes between the central directory and its end record",
                "bad-header",
            )
        )
    info.cd_offset = cd_start
    info.cd_size = cd_size
    info.segments.extend(eocd_segs)
    info.segments.append(Segment(cd_start, cd_size, "zip-central-directory", "central directory"))
    info._n_total = n_total  # type: ignore[attr-defined]
    return True


def _read_central_directory(fv: FileView, info: ZipInfo) -> None:
    assert info.cd_offset is not None and info.cd_size is not None
    pos = info.cd_offset
    stop = info.cd_offset + info.cd_size
    n_total = getattr(info, "_n_total", 0)
    names: set[str] = set()
    while pos + 4 <= stop and fv.read(pos, 4) == SIG_CENTRAL:
        if pos + _CD_LEN > stop:
            info.problems.append(
                Problem(
                    pos, "central directory entry runs past the end of the central directory", "bad-header"
                )
            )
            break
        (_made, _need, flags, method, _t, _d, crc, csize, usize, nlen, elen, clen, _disk, _ia, _ea, lh) = (
            struct.unpack_from("<HHHHHHIIIHHHHHII", fv.view(pos + 4, _CD_LEN - 4))
        )
        rec_len = _CD_LEN + nlen + elen + clen
        if pos + rec_len > stop:
            info.problems.append(
                Problem(
                    pos, "central directory entry runs past the end of the central directory", "bad-header"
                )
            )
            break
        name = _decode_name(fv.read(pos + _CD_LEN, nlen), flags)
        extra = fv.read(pos + _CD_LEN + nlen, elen)
        vals = _zip64_extra(extra, usize, csize, lh)
        if vals is None:
            info.problems.append(
                Problem(
                    pos,
                    f"record {name!r}: zip64 sizes are missing from its central directory entry",
                    "bad-header",
                )
            )
            pos += rec_len
            continue
        usize, csize, lh = vals
        if name in names:
            info.problems.append(
                Problem(pos, f"duplicate record name {name!r} in the central directory", "bad-header")
            )
        names.add(name)
        info.entries.append(ZipEntry(name, flags, method, crc, csize, usize, info.base + lh, cd_offset=pos))
        pos += rec_len
    if pos != stop:
        info.problems.append(
            Problem(
                pos,
                f"central directory ends after {pos - info.cd_offset} of its {info.cd_size} bytes (expected another entry signature)",
                "bad-header",
            )
        )
    if n_total != len(info.entries):
        info.problems.append(
            Problem(
                info.eocd_offset,
                f"end of central directory counts {n_total} records but the central directory lists {len(info.entries)}",
                "bad-header",
            )
        )


def _descriptor_len(fv: FileView, e: ZipEntry, limit: int) -> int | None:
    """Length of the data descriptor after a record's data, or None if none matches the record."""
    pos = e.data_end
    for sig in (True, False):
        for wide in (False, True):
            n = (4 if sig else 0) + 4 + (16 if wide else 8)
            if pos + n > limit:
                continue
            p = pos
            if sig:
                if fv.read(p, 4) != SIG_DESCRIPTOR:
                    continue
                p += 4
            crc = fv.u32(p)
            if wide:
                cs, us = fv.u64(p + 4), fv.u64(p + 12)
            else:
                cs, us = fv.u32(p + 4), fv.u32(p + 8)
            if crc == e.crc and cs == e.csize and us == e.usize:
                return n
    return None


def _read_local_headers(fv: FileView, info: ZipInfo) -> None:
    limit = info.cd_offset if info.cd_offset is not None else info.end
    for e in info.entries:
        lh = e.lh_offset
        if lh < info.base or lh + _LH_LEN > limit:
            info.problems.append(
                Problem(
                    lh,
                    f"record {e.name!r}: local header offset is outside the archive data area (ends at {limit})",
                    "bad-header",
                )
            )
            continue
        if fv.read(lh, 4) != SIG_LOCAL:
            info.problems.append(
                Problem(
                    lh,
                    f"record {e.name!r}: no local header signature where the central directory points",
                    "bad-header",
                )
            )
            continue
        (_need, flags, method, _t, _d, crc, csize, usize, nlen, elen) = struct.unpack_from(
            "<HHHHHIIIHH", fv.view(lh + 4, _LH_LEN - 4)
        )
        e.lh_len = _LH_LEN + nlen + elen
        if lh + e.lh_len > limit:
            info.problems.append(
                Problem(lh, f"record {e.name!r}: local header runs into the central directory", "bad-header")
            )
            continue
        lname = _decode_name(fv.read(lh + _LH_LEN, nlen), flags)
        if lname != e.name:
            info.problems.append(
                Problem(lh, f"record {e.name!r}: local header names {lname!r}", "bad-header")
            )
        if method != e.method:
            info.problems.append(
                Problem(
                    lh,
                    f"record {e.name!r}: local header says compression method {method}, central directory says {e.method}",
                    "bad-header",
                )
            )
        if not (flags & 0x8):
            vals = _zip64_extra(fv.read(lh + _LH_LEN + nlen, elen), usize, csize, 0)
            if vals is not None:
                usize, csize, _ = vals
            if (crc, csize, usize) != (e.crc, e.csize, e.usize):
                info.problems.append(
                    Problem(lh, f"record {e.name!r}: local header has crc {crc:08x} sizes {csize}/{usize}, central directory has crc {e.crc:08x} sizes {e.csize}/{e.usize}", "bad-header")
                )  # fmt: skip
        e.data_offset = lh + e.lh_len
        if e.data_end > limit:
            info.problems.append(
                Problem(e.data_offset, f"record {e.name!r}: its {e.csize} bytes of data run past offset {limit}", "truncated" if limit == info.end else "bad-header")
            )  # fmt: skip
            info.segments.append(Segment(lh, e.lh_len, "zip-local-header", e.name))
            continue
        if flags & 0x8:
            n = _descriptor_len(fv, e, limit)
            if n is None:
                info.problems.append(
                    Problem(
                        e.data_end,
                        f"record {e.name!r}: no data descriptor matching the central directory after its data",
                        "bad-header",
                    )
                )
            else:
                e.desc_len = n
        info.segments.append(Segment(lh, e.lh_len, "zip-local-header", e.name))
        if e.desc_len:
            info.segments.append(
                Segment(e.data_end, e.desc_len, "zip-local-header", f"{e.name} (data descriptor)")
            )
    # overlap between records
    placed = sorted((e for e in info.entries if e.data_offset is not None), key=lambda x: x.lh_offset)
    for a, b in itertools.pairwise(placed):
        if a.end > b.lh_offset:
            info.problems.append(
                Problem(b.lh_offset, f"records {a.name!r} and {b.name!r} overlap", "bad-header")
            )


def check_crcs(fv: FileView, info: ZipInfo, *, progress: Callable[[int], None] | None = None) -> None:
    """Recomputes every record's CRC-32 and reports mismatches as 'bad-crc' problems.

    torch.save with `compute_crc32 = False` writes 0 for every CRC; an archive whose stored CRCs
    are all 0 is treated as "no CRCs recorded" rather than as damage.
    """
    entries = [e for e in info.entries if e.data_offset is not None and e.data_end <= info.end]
    nonempty = [e for e in entries if e.usize > 0]
    if nonempty and all(e.crc == 0 for e in nonempty):
        info.crc_recorded = False
        return
    for e in entries:
        if e.flags & 0x1:  # encrypted: the CRC covers the plaintext
            continue
        assert e.data_offset is not None
        if e.method == 0:
            if e.csize != e.usize:
                info.problems.append(
                    Problem(
                        e.data_offset,
                        f"record {e.name!r}: stored record has compressed size {e.csize} != size {e.usize}",
                        "bad-header",
                    )
                )
                continue
            crc = _crc.crc32(fv.view(e.data_offset, e.csize))
        elif e.method == 8:
            inflated = _inflate_crc(fv, e, info)
            if inflated is None:
                continue
            crc = inflated
        else:
            continue
        if progress:
            progress(e.csize)
        if crc != e.crc:
            info.problems.append(
                Problem(
                    e.data_offset,
                    f"record {e.name!r}: CRC-32 of its {e.usize} bytes is {crc:08x}, the archive records {e.crc:08x}",
                    "bad-crc",
                )
            )


def _inflate_crc(fv: FileView, e: ZipEntry, info: ZipInfo) -> int | None:
    assert e.data_offset is not None
    d = zlib.decompressobj(-15)
    crc = 0
    total = 0
    step = 1 << 20
    try:
        for p in range(e.data_offset, e.data_end, step):
            chunk = fv.view(p, min(step, e.data_end - p))
            while chunk:
                out = d.decompress(chunk, step)
                total += len(out)
                if total > e.usize:
                    break
                crc = zlib.crc32(out, crc)
                chunk = d.unconsumed_tail  # type: ignore[assignment]
            if total > e.usize:
                break
    except zlib.error as err:
        info.problems.append(
            Problem(e.data_offset, f"record {e.name!r}: deflate data is corrupt ({err})", "bad-crc")
        )
        return None
    if total != e.usize:
        info.problems.append(
            Problem(
                e.data_offset,
                f"record {e.name!r}: inflates to {total}{'+' if total > e.usize else ''} bytes, expected {e.usize}",
                "bad-crc",
            )
        )
        return None
    return crc


def _recover(fv: FileView, info: ZipInfo, size_hint: Callable[[ZipEntry], int | None] | None) -> None:
    """Walks local headers from the start of a zip without a usable end record."""
    pos = info.base
    end = info.end
    while pos + 4 <= end and fv.read(pos, 4) == SIG_LOCAL:
        if pos + _LH_LEN > end:
            info.expected_size = pos + _LH_LEN - info.base
            info.problems.append(Problem(pos, "the file ends inside a local header", "truncated"))
            return
        (_need, flags, method, _t, _d, crc, csize, usize, nlen, elen) = struct.unpack_from(
            "<HHHHHIIIHH", fv.view(pos + 4, _LH_LEN - 4)
        )
        lh_len = _LH_LEN + nlen + elen
        if pos + lh_len > end:
            info.expected_size = pos + lh_len - info.base
            info.problems.append(Problem(pos, "the file ends inside a local header", "truncated"))
            return
        name = _decode_name(fv.read(pos + _LH_LEN, nlen), flags)
        e = ZipEntry(
            name,
            flags,
            method,
            crc,
            csize,
            usize,
            pos,
            data_offset=pos + lh_len,
            lh_len=lh_len,
            recovered=True,
        )
        if flags & 0x8:
            hint = size_hint(e) if size_hint else None
            if hint is None:
                hint = _scan_descriptor(fv, e, end)
            if hint is None:
                info.segments.append(Segment(pos, lh_len, "zip-local-header", name))
                info.problems.append(
                    Problem(
                        e.data_offset,
                        f"record {name!r}: cannot find where its data ends (the file may end inside it)",
                        "truncated",
                    )
                )
                return
            e.csize = e.usize = hint
        info.entries.append(e)
        info.segments.append(Segment(pos, lh_len, "zip-local-header", name))
        if e.data_end > end:
            info.expected_size = e.data_end - info.base
            info.problems.append(
                Problem(
                    end,
                    f"the file ends inside record {name!r}: its data needs bytes up to offset {e.data_end}, the file has {end}",
                    "truncated",
                )
            )
            return
        if flags & 0x8:
            n = None
            if e.data_end + 4 <= end and fv.read(e.data_end, 4) == SIG_DESCRIPTOR:
                wide = e.data_end + 28 <= end and fv.read(e.data_end + 24, 4) in (SIG_LOCAL, SIG_CENTRAL)
                n = 24 if wide else 16
                if e.data_end + n > end:
                    info.expected_size = e.data_end + n - info.base
                    info.problems.append(
                        Problem(
                            end, f"the file ends inside the data descriptor of record {name!r}", "truncated"
                        )
                    )
                    return
                e.crc = fv.u32(e.data_end + 4)
            e.desc_len = n or 0
            if e.desc_len:
                info.segments.append(
                    Segment(e.data_end, e.desc_len, "zip-local-header", f"{name} (data descriptor)")
                )
        pos = e.end
    if pos + 4 <= end and fv.read(pos, 4) == SIG_CENTRAL:
        info.segments.append(
            Segment(pos, end - pos, "zip-central-directory", "central directory (incomplete)")
        )
        info.problems.append(Problem(end, "the file ends inside the central directory", "truncated"))
    elif pos < end and not info.entries:
        info.problems.append(Problem(pos, "no zip local header at the start of the archive", "bad-header"))
    elif pos == end and info.entries:
        info.problems.append(
            Problem(
                end,
                f"the file ends after {len(info.entries)} complete records, before the central directory",
                "truncated",
            )
        )
    elif pos < end:
        info.problems.append(
            Problem(
                pos,
                "unrecognised bytes where the next zip record or the central directory should start",
                "bad-header",
            )
        )


def _scan_descriptor(fv: FileView, e: ZipEntry, end: int) -> int | None:
    """Finds the data descriptor of a small record whose local header has no sizes."""
    assert e.data_offset is not None
    start = e.data_offset
    window = min(end, start + (1 << 20))
    p = fv.find(SIG_DESCRIPTOR, start, window)
    while p >= 0:
        n = p - start
        if p + 16 <= end and fv.u32(p + 8) == n and fv.u32(p + 4) == _crc.crc32(fv.view(start, n)):
            return n
        p = fv.find(SIG_DESCRIPTOR, p + 1, window)
    return None
