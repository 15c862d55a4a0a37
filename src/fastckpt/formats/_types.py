"""The layout data model shared by every reader (LAYOUT_CONTRACT: TensorSpan, Segment, Problem,
Layout, DirLayout). Readers fill these; `verify`, `protect` and `inspect` consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Segment kinds. Readers only emit these values.
SEGMENT_KINDS = (
    "tensor-data",
    "header",
    "pickle",
    "zip-local-header",
    "zip-central-directory",
    "padding",
    "metadata",
    "other",
)


@dataclass(frozen=True)
class TensorSpan:
    """One tensor (key) whose bytes live in this file."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    itemsize: int
    storage: str | None
    # Element strides and the storage_offset (in elements) when known; None for tensors that are
    # plain contiguous byte ranges (safetensors). Used to describe views of shared storages.
    stride: tuple[int, ...] | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def contiguous(self) -> bool:
        if self.stride is None:
            return True
        expected = 1
        for size, st in zip(reversed(self.shape), reversed(self.stride), strict=False):
            if size != 1 and st != expected:
                return False
            expected *= size
        return True


@dataclass(frozen=True)
class Segment:
    """A byte range of the file; a layout's segments tile [0, size) with no gaps or overlap."""

    offset: int
    length: int
    kind: str
    name: str | None

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class Problem:
    """A structural problem found by a reader (no sidecar needed)."""

    offset: int | None
    message: str
    kind: str

    def __str__(self) -> str:
        where = f"at offset {self.offset}: " if self.offset is not None else ""
        return f"{self.kind}: {where}{self.message}"


@dataclass
class Layout:
    path: str
    format: str
    size: int
    segments: list[Segment]
    tensors: list[TensorSpan]
    problems: list[Problem]
    unsafe_globals: list[str]
    non_tensor_entries: dict[str, str]
    # Additions beyond the contract, for `inspect`:
    # every pickle global seen ("module.name"), allowlisted or not, in first-seen order.
    globals_seen: list[str] = field(default_factory=list)
    # free-form facts about the file (zip root folder, safetensors __metadata__, byteorder, ...).
    info: dict[str, Any] = field(default_factory=dict)
    # expected file size when the reader can derive it and it differs from `size` (truncation).
    expected_size: int | None = None
    _hit_index: Any = field(default=None, repr=False, compare=False)


@dataclass
class DirLayout:
    """A checkpoint directory: a torch.distributed.checkpoint folder, an HF sharded folder
    (`*.index.json`) or a plain folder of checkpoint files."""

    path: str
    format: str  # "dcp" | "hf-sharded" | "dir"
    files: list[str]  # checkpoint files to protect/verify, relative to `path`, sorted
    problems: list[Problem]
    # files present in the folder that the checkpoint does not reference (not protected)
    extra_files: list[str] = field(default_factory=list)
    # referenced files that are absent
    missing_files: list[str] = field(default_factory=list)
    # tensor keys -> relative file that holds them, when known
    key_files: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
