"""Safe, bounded checkpoint readers: the layout of a checkpoint file or folder without torch and
without executing anything stored in it (docs/FORMATS_READERS.md).

Public API (the contract with `protect`/`verify`, LAYOUT_CONTRACT.md):

- `read_layout(path, check_crc=True) -> Layout`: format, a segment map that tiles the file, the
  byte span of every tensor, structural problems, dangerous pickle globals, non-tensor leaves.
- `detect_format(path) -> str`.
- `tensors_hit(layout, offset, length)`: which tensor elements a damaged byte range touches.
- `read_dir_layout(path) -> DirLayout`: DCP folders, HF sharded folders, plain folders.

Formats: "torch-zip", "torch-legacy", "safetensors", "dcp" (folder), "dcp-shard" (a .distcp file),
"dcp-metadata" (a DCP folder's .metadata given on its own), "hf-sharded" (folder), "hf-index" (an
HF *.index.json given on its own), "zip" (TorchScript and other zips), "opaque" (anything else).
`InputError` is raised only when the path cannot be read at all; damage goes into `problems`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from ._io import FileView, OutOfBounds
from ._segments import tile
from ._types import DirLayout, Layout, Problem, Segment, TensorSpan

__all__ = [
    "FORMATS",
    "DirLayout",
    "Layout",
    "Problem",
    "Segment",
    "TensorSpan",
    "detect_format",
    "read_dir_layout",
    "read_layout",
    "tensors_hit",
]

FORMATS = (
    "torch-zip", "torch-legacy", "safetensors", "dcp", "dcp-shard", "dcp-metadata", "hf-sharded", "hf-index",
    "zip", "opaque",
)  # fmt: skip

TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl")
SIDECAR_SUFFIX = ".fastckpt"


def _sniff(fv: FileView, path: str) -> str:
    size = fv.size
    ext = os.path.splitext(path)[1].lower()
    base = os.path.basename(path)
    # Folder metadata given as a file: named, not sniffed (a DCP .metadata is a plain pickle, which
    # the legacy torch reader would misread).
    if base == ".metadata":
        return "dcp-metadata"
    if base.endswith(".index.json"):
        return "hf-index"
    head = fv.read(0, min(size, 16))
    if ext == ".distcp":
        return "dcp-shard"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"  # refined to torch-zip by the zip reader
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch-legacy"  # a pickle: torch's legacy format starts with its magic-number pickle
    if size >= 262 and fv.read(257, 5) == b"ustar":
        return "torch-legacy" if ext in TORCH_EXTENSIONS else "opaque"
    if size >= 9 and fv.read(8, 1) == b"{" and int.from_bytes(head[:8], "little") >= 2:
        return "safetensors"
    if ext == ".safetensors":
        return "safetensors"
    if ext in TORCH_EXTENSIONS and size < 64:
        # Too short to tell; a torch file this small is a damaged zip, which read_zip explains.
        return "zip"
    return "opaque"


def _zip_format(z: Any, path: str) -> str:
    if z.is_torch:
        return "torch-zip"
    # A damaged file with a torch extension and no readable record is reported as torch-zip.
    if not z.zip.entries and os.path.splitext(path)[1].lower() in TORCH_EXTENSIONS:
        return "torch-zip"
    return "zip"


# ---- remote storage (report issue): a URL is read through fastckpt.remote with ranged reads.
def _is_url(p: str) -> bool:
    from .._url import is_url

    return is_url(p)


def _open_view(p: str) -> Any:
    """FileView for a local path; the same read interface over ranged reads for an fsspec URL."""
    if _is_url(p):
        from ..remote import RemoteFileView

        return RemoteFileView(p)
    from .._url import local_path

    return FileView(local_path(p))


# ---- end remote storage


def detect_format(path: str) -> str:
    """The format of a file or folder (one of FORMATS, or "dir" for a plain folder)."""
    p = os.fspath(path)
    if not _is_url(p) and os.path.isdir(p):
        from ._dirs import detect_dir_format

        return detect_dir_format(p)
    with _open_view(p) as fv:
        fmt = _sniff(fv, p)
        if fmt == "zip":
            from ._torchzip import read_torch_zip

            return _zip_format(read_torch_zip(fv, check_crc=False, pickle=False), p)
        return fmt


def read_layout(
    path: str, *, check_crc: bool = True, progress: Callable[[int], None] | None = None
) -> Layout:
    """The layout of one checkpoint file. Never executes anything from the file.

    `progress(nbytes)` is called as zip records are CRC-checked (the only step that reads data)."""
    p = os.fspath(path)
    if not _is_url(p) and os.path.isdir(p):
        raise InputError(
            p, None, "expected a checkpoint file, found a directory (read it with read_dir_layout)"
        )
    with _open_view(p) as fv:
        fmt = _sniff(fv, p)
        try:
            layout = _read(fv, p, fmt, check_crc, progress)
        except OutOfBounds as e:
            # Every reader bounds its reads; this is the backstop that keeps damage a Problem.
            layout = Layout(p, fmt if fmt != "zip" else "zip", fv.size, tile(fv.size, []), [], [], [], {})
            layout.problems.append(Problem(e.offset, f"unexpected end of data: {e}", "truncated"))
    layout.problems.sort(key=lambda q: (q.offset is None, q.offset or 0))
    return layout


def _read(
    fv: FileView, path: str, fmt: str, check_crc: bool, progress: Callable[[int], None] | None = None
) -> Layout:
    size = fv.size
    if fmt == "zip":
        from ._torchzip import read_torch_zip

        z = read_torch_zip(fv, check_crc=check_crc, progress=progress)
        return Layout(
            path, _zip_format(z, path), size, tile(size, z.segments), z.tensors, z.problems,
            z.unsafe, z.non_tensor, globals_seen=z.globals_seen, info=z.info,
            expected_size=z.expected_size,
        )  # fmt: skip
    if fmt == "safetensors":
        from ._safetensors import read_safetensors

        r = read_safetensors(fv)
        return Layout(
            path, "safetensors", size, tile(size, r["segments"]), r["tensors"], r["problems"], [],
            r["non_tensor"], info=r["info"], expected_size=r["expected_size"],
        )  # fmt: skip
    if fmt == "torch-legacy":
        from ._legacy import read_legacy

        return read_legacy(fv, path)
    if fmt == "dcp-shard":
        from ._dcp import read_dcp_shard

        return read_dcp_shard(fv, path, check_crc=check_crc)
    # The files they name are read from the same folder, so only local ones (a URL is opaque).
    if fmt == "dcp-metadata" and not _is_url(path):
        from ._dcp import read_dcp_metadata_file

        return read_dcp_metadata_file(fv, path)
    if fmt == "hf-index" and not _is_url(path):
        from ._dirs import read_hf_index_file

        return read_hf_index_file(fv, path)
    problems = []
    if size == 0:
        problems.append(Problem(0, "file is empty (0 bytes)", "truncated"))
    return Layout(path, "opaque", size, tile(size, [Segment(0, size, "other", None)]), [], problems, [], {})


def tensors_hit(layout: Layout, offset: int, length: int) -> list[tuple[str, int, int]]:
    """(key, first_element, last_element_exclusive) for every tensor overlapping [offset, offset+length).

    Element indices count from the tensor's first byte in the file. For a contiguous tensor they
    are its flat (row-major) element indices; for a strided view they count storage elements
    from the view's first element (the view covers a superset of its own elements).
    """
    if length <= 0:
        return []
    idx = layout._hit_index
    if idx is None or idx[0] is not layout.tensors or idx[1] != len(layout.tensors):
        spans = sorted((t for t in layout.tensors if t.nbytes > 0), key=lambda t: t.offset)
        starts = [t.offset for t in spans]
        max_len = max((t.nbytes for t in spans), default=0)
        idx = (layout.tensors, len(layout.tensors), spans, starts, max_len)
        layout._hit_index = idx
    _, _, spans, starts, max_len = idx
    end = offset + length
    lo = bisect.bisect_left(starts, offset - max_len + 1)
    hi = bisect.bisect_left(starts, end)
    out: list[tuple[str, int, int]] = []
    for t in spans[lo:hi]:
        t_end = t.offset + t.nbytes
        if t_end <= offset or t.offset >= end:
            continue
        a = max(offset, t.offset) - t.offset
        b = min(end, t_end) - t.offset
        size = max(t.itemsize, 1)
        out.append((t.key, a // size, -(-b // size)))
    return out


def read_dir_layout(path: str) -> DirLayout:
    """The checkpoint files of a folder and the problems of the folder as a whole."""
    from ._dirs import read_dir_layout as _impl

    return _impl(os.fspath(path))


def layout_to_json(layout: Layout) -> dict[str, Any]:
    """A JSON-ready dict of a layout (used by `inspect --json`)."""
    return {
        "path": layout.path,
        "format": layout.format,
        "size": layout.size,
        "expected_size": layout.expected_size,
        "segments": [
            {"offset": s.offset, "length": s.length, "kind": s.kind, "name": s.name} for s in layout.segments
        ],
        "tensors": [
            {
                "key": t.key,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "offset": t.offset,
                "nbytes": t.nbytes,
                "storage": t.storage,
            }
            for t in layout.tensors
        ],
        "problems": [{"offset": q.offset, "kind": q.kind, "message": q.message} for q in layout.problems],
        "unsafe_globals": list(layout.unsafe_globals),
        "non_tensor_entries": dict(layout.non_tensor_entries),
    }
