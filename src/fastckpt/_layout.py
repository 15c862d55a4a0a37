"""The seam between protect/verify and the format readers (fastckpt.formats, LAYOUT_CONTRACT).

protect and verify only need three things from a reader: the layout of one file, the layout of a
checkpoint folder, and which tensors a byte range hits. Keeping those calls here means the sidecar
code does not care how a format is parsed, and a file that no reader recognises is simply opaque.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .sidecar import DIR_MANIFEST_NAME, SIDECAR_SUFFIX


@dataclass
class OpaqueLayout:
    """What protect records for a file no reader understands: one segment, no tensors."""

    path: str
    size: int
    format: str = "opaque"
    segments: list[Any] = field(default_factory=list)
    tensors: list[Any] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)
    unsafe_globals: list[str] = field(default_factory=list)
    non_tensor_entries: dict[str, str] = field(default_factory=dict)


def read_layout(path: str, *, check_crc: bool = True, progress: Callable[[int], None] | None = None) -> Any:
    """The reader's Layout for `path`, or an OpaqueLayout when no reader is available.
    `progress(nbytes)` is called as the CRC-32 pass reads record data (zip formats)."""
    try:
        from .formats import read_layout as reader

        return reader(path, check_crc=check_crc, progress=progress)
    except ImportError:  # a reader still missing (the formats branch is in progress)
        return OpaqueLayout(path, os.path.getsize(path))


def read_dir_layout(path: str) -> Any | None:
    """The reader's DirLayout for a checkpoint folder, or None when no reader is available."""
    try:
        from .formats import read_dir_layout as reader

        return reader(path)
    except ImportError:  # a reader still missing (the formats branch is in progress)
        return None


def folder_file_format(dir_format: str | None, rel: str) -> str | None:
    """The format of a file that only makes sense as part of its folder (DCP `.metadata`, HF
    `*.index.json`): read_dir_layout checks it, read_layout would misread it on its own."""
    base = rel.rsplit("/", 1)[-1]
    if dir_format == "dcp" and rel == ".metadata":
        return "dcp-metadata"
    if dir_format == "hf-sharded" and base.endswith(".index.json"):
        return "hf-index"
    return None


def is_fastckpt_file(name: str) -> bool:
    """Sidecars, the directory manifest and our temporary files are never checkpoint files."""
    base = os.path.basename(name)
    return (
        base.endswith(SIDECAR_SUFFIX)
        or base == DIR_MANIFEST_NAME
        or (base.startswith(".") and ".fastckpt" in base and ".tmp-" in base)
    )


def walk_files(root: str) -> Iterator[str]:
    """Relative '/'-separated paths of the regular files under `root`, sorted, without following
    symbolic links and without fastckpt's own files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if is_fastckpt_file(name) or os.path.islink(full) or not os.path.isfile(full):
                continue
            yield os.path.relpath(full, root).replace(os.sep, "/")
