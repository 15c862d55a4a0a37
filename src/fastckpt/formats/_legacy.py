"""Legacy (pre-1.6, `_use_new_zipfile_serialization=False`) torch.save files, read structurally.

The file is a sequence of pickles followed by raw storages: the magic number
0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict (byte order, type sizes), the
object tree (persistent ids `('storage', type, key, location, numel, view)`), and the list of
storage keys in the order their bytes follow. Each storage is an 8-byte little-endian element
count followed by its bytes. The even older tar format (members sys_info, pickle, tensors,
storages) is recognised and mapped coarsely.
"""

from __future__ import annotations

import re
from typing import Any

from ._io import FileView
from ._pickle import PickleError, RestrictedUnpickler
from ._segments import tile
from ._torchzip import run_torch_pickle, tensor_spans
from ._types import Layout, Problem, Segment

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001


def _small_pickle(fv: FileView, pos: int, what: str, problems: list[Problem]) -> tuple[Any, int] | None:
    up = RestrictedUnpickler(fv.buf, base=0, pos=pos)
    try:
        v = up.load()
    except PickleError as e:
        problems.append(
            Problem(e.offset, f"{what}: {e.message}", "truncated" if e.truncated else "bad-pickle")
        )
        return None
    return v, up.pos


def read_legacy(fv: FileView, path: str) -> Layout:
    size = fv.size
    if size >= 262 and fv.read(257, 5) == b"ustar":
        return _read_tar(fv, path)
    problems: list[Problem] = []
    segments: list[Segment] = []
    info: dict[str, Any] = {"legacy": "pickle"}
    layout = Layout(path, "torch-legacy", size, [], [], problems, [], {}, info=info)
    pos = 0
    values = []
    for what in ("magic number", "protocol version", "sys_info"):
        r = _small_pickle(fv, pos, what, [] if what == "magic number" else problems)
        if what == "magic number" and (r is None or r[0] != MAGIC):
            problems.append(
                Problem(
                    0,
                    "not a torch checkpoint: the file is a pickle, but its first value is not torch's magic number",
                    "bad-header",
                )
            )
            # Report what the pickle would import if someone unpickled it anyway.
            first = run_torch_pickle(fv.buf, 0, legacy=True, what="pickle")
            problems.extend(p for p in first.problems if p.kind != "bad-pickle" or r is None)
            layout.unsafe_globals = first.unsafe
            layout.globals_seen = first.globals_seen
            layout.segments = tile(
                size, [Segment(0, size if first.end is None else first.end, "pickle", "pickle")]
            )
            return layout
        if r is None:
            layout.segments = tile(size, segments)
            return layout
        segments.append(Segment(pos, r[1] - pos, "header", f"legacy {what}"))
        values.append(r[0])
        pos = r[1]
    _magic, proto, sys_info = values
    if proto != PROTOCOL:
        problems.append(
            Problem(
                segments[1].offset, f"legacy protocol version {proto!r}, expected {PROTOCOL}", "bad-header"
            )
        )
    if isinstance(sys_info, dict):
        info["sys_info"] = {str(k): repr(v) for k, v in sys_info.items()}
        if sys_info.get("little_endian") is False:
            problems.append(Problem(segments[2].offset, "file was written on a big-endian machine", "other"))
    main = run_torch_pickle(fv.buf, 0, pos=pos, legacy=True, what="pickle")
    problems.extend(main.problems)
    layout.unsafe_globals = main.unsafe
    layout.globals_seen = main.globals_seen
    if main.end is None:
        segments.append(Segment(pos, size - pos, "pickle", "legacy object pickle"))
        layout.segments = tile(size, segments)
        return layout
    segments.append(Segment(pos, main.end - pos, "pickle", "legacy object pickle"))
    pos = main.end
    r = _small_pickle(fv, pos, "storage key list", problems)
    if r is None:
        layout.segments = tile(size, segments)
        return layout
    keys, end = r
    segments.append(Segment(pos, end - pos, "pickle", "legacy storage keys"))
    pos = end
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        problems.append(Problem(pos, "legacy storage key list is not a list of strings", "bad-pickle"))
        layout.segments = tile(size, segments)
        return layout
    for key in keys:
        st = main.storages.get(key)
        if st is None:
            problems.append(
                Problem(pos, f"storage {key!r} is listed but no tensor refers to it", "bad-pickle")
            )
            break
        if pos + 8 > size:
            problems.append(
                Problem(size, f"the file ends before the size of storage {key!r} (offset {pos})", "truncated")
            )
            layout.expected_size = pos + 8 + (st.numel or 0) * st.itemsize
            break
        numel = fv.u64(pos)
        segments.append(Segment(pos, 8, "header", f"storage {key} size"))
        if numel != st.numel:
            problems.append(
                Problem(
                    pos,
                    f"storage {key!r} has {numel} elements in the file but {st.numel} in the pickle",
                    "size-mismatch",
                )
            )
        nbytes = (st.numel or 0) * st.itemsize
        st.record = f"storage/{key}"
        st.data_offset = pos + 8
        st.data_length = max(0, min(nbytes, size - st.data_offset))
        segments.append(Segment(pos + 8, nbytes, "tensor-data", st.record))
        pos += 8 + nbytes
        if pos > size:
            problems.append(
                Problem(
                    size,
                    f"the file ends inside storage {key!r}: it needs bytes up to offset {pos}, the file has {size}",
                    "truncated",
                )
            )
            break
    else:
        if pos < size:
            problems.append(
                Problem(pos, f"{size - pos} unexpected bytes after the last storage", "bad-header")
            )
    # Storage views point into their root storage: ('view:<root>:<element offset>').
    for st in main.storages.values():
        m = re.match(r"view:(.*):(\d+)$", st.record or "")
        if m:
            root = main.storages.get(m.group(1))
            if root is not None and root.data_offset is not None:
                off = int(m.group(2)) * root.itemsize
                st.data_offset = root.data_offset + off
                st.data_length = max(0, (root.data_length or 0) - off)
                st.record = root.record
    missing = [
        k
        for k, s in main.storages.items()
        if s.data_offset is None and not (s.record or "").startswith("view:")
    ]
    if missing and not any(p.kind == "truncated" for p in problems):
        problems.append(
            Problem(
                pos,
                f"{len(missing)} storage(s) referenced by tensors are absent, e.g. {missing[0]!r}",
                "missing-record",
            )
        )
    cut = {
        st.record
        for st in main.storages.values()
        if st.record and st.data_offset is not None and st.data_offset + (st.numel or 0) * st.itemsize > size
    }
    layout.tensors = tensor_spans(main, problems, cut=cut)
    layout.non_tensor_entries = dict(main.walk.non_tensor) if main.walk else {}
    info["optimizers"] = main.walk.optimizers if main.walk else []
    if layout.expected_size is None and pos > size:
        layout.expected_size = pos
    layout.segments = tile(size, segments)
    return layout


def _read_tar(fv: FileView, path: str) -> Layout:
    """The pre-0.4 tar container: member headers and data, without per-tensor keys."""
    size = fv.size
    problems: list[Problem] = []
    segments: list[Segment] = []
    pos = 0
    members = []
    while pos + 512 <= size:
        hdr = fv.read(pos, 512)
        if hdr == b"\0" * 512:
            segments.append(Segment(pos, size - pos, "padding", "tar end"))
            break
        name = hdr[:100].split(b"\0")[0].decode("utf-8", "replace")
        try:
            n = int(hdr[124:136].split(b"\0")[0].strip() or b"0", 8)
        except ValueError:
            problems.append(
                Problem(pos + 124, f"tar member {name!r} has an invalid size field", "bad-header")
            )
            break
        segments.append(Segment(pos, 512, "header", f"tar header {name}"))
        kind = (
            "tensor-data"
            if name == "storages"
            else "pickle"
            if name in ("pickle", "tensors", "sys_info")
            else "other"
        )
        segments.append(Segment(pos + 512, n, kind, name))
        members.append(name)
        end = pos + 512 + n
        if end > size:
            problems.append(
                Problem(
                    size,
                    f"the file ends inside tar member {name!r}: it needs bytes up to offset {end}",
                    "truncated",
                )
            )
            break
        pos = end + (-n % 512)
    return Layout(
        path,
        "torch-legacy",
        size,
        tile(size, segments),
        [],
        problems,
        [],
        {},
        info={"legacy": "tar", "members": members},
    )
