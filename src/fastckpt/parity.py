"""Reed-Solomon parity for files and buffers (docs/FORMAT.md, "Parity (Reed-Solomon)", version 1).

This module owns the parity API that `protect` and `repair` call: choosing the code parameters
from a redundancy percentage (`ParityParams.from_redundancy`), encoding parity (alone, or fused
with leaf hashing in one pass over memory), and rebuilding damaged or missing leaves with an exact
report of what cannot be rebuilt. The arithmetic runs in the native core; `_parity_reference` is
the numpy oracle it is tested against. No torch.

Leaves are the digest leaves of docs/FORMAT.md section 1.2 (`leaf_size` bytes, the last one short).
Data leaf `i` belongs to group `i % groups`; each group of up to `k` data leaves gets `m` parity
leaves, stored as parity leaf `r * groups + g`. Any `m` erased leaves of a group can be rebuilt, so
any contiguous run of `m * groups` damaged data leaves (about the redundancy percentage of the
file), including a truncated tail, can be rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from . import _native
from ._record import dataclass, field
from .digest import DEFAULT_LEAF_SIZE, check_leaf_size
from .errors import FastckptError, InputError, UsageError

PARITY_VERSION = 1
SCHEME = "rs-cauchy-gf256"
FIELD_POLYNOMIAL = 0x11D
DEFAULT_REDUNDANCY = 5.0
MIN_REDUNDANCY = 0.5
MAX_REDUNDANCY = 100.0
# Data leaves per group that from_redundancy aims at: m = round(64 * pct / 100) parity leaves, then k
# as large as keeps m / k >= pct. See FORMAT.md for the trade-off.
TARGET_GROUP_DATA = 64
_PPM = 1_000_000


def n_leaves_of(size: int, leaf_size: int) -> int:
    return -(-size // leaf_size)


def leaf_span(leaf: int, size: int, leaf_size: int) -> tuple[int, int]:
    """(offset, length) of data leaf `leaf` in a byte range of `size` bytes."""
    offset = leaf * leaf_size
    return offset, max(0, min(leaf_size, size - offset))


@dataclass(frozen=True)
class ParityParams:
    """Code parameters: `k` data leaves and `m` parity leaves per group, `groups` groups.

    Valid for a range of n leaves when 1 <= k, 1 <= m, k + m <= 256 and
    ceil(n / k) <= groups <= n (groups == 0 exactly when n == 0).
    """

    k: int
    m: int
    groups: int

    @classmethod
    def from_redundancy(cls, pct: float, n_leaves: int) -> ParityParams:
        """The parameters `protect --redundancy PCT` uses for a range of `n_leaves` leaves.

        m0 = max(1, round(64 * pct / 100)); k0 = min(256 - m0, floor(100 * m0 / pct));
        groups = ceil(n / k0); k = ceil(n / groups); m = max(1, ceil(k * pct / 100)).
        So m / k >= pct always (hence any contiguous run of pct% of the leaves is repairable), as
        close as an integer k allows for large files (5% -> k=60, m=3), and a file of fewer than k0
        leaves gets one group of all its leaves and at least one parity leaf.
        """
        if (
            isinstance(pct, bool)
            or not isinstance(pct, (int, float))
            or not (MIN_REDUNDANCY <= pct <= MAX_REDUNDANCY)
        ):
            raise UsageError(
                f"redundancy must be a percentage between {MIN_REDUNDANCY} and {MAX_REDUNDANCY}, got {pct!r} "
                f"(the default is {DEFAULT_REDUNDANCY})"
            )
        if not isinstance(n_leaves, int) or n_leaves < 0:
            raise UsageError(f"n_leaves must be a non-negative int, got {n_leaves!r}")
        # Integer parts per million, so that the choice never depends on float rounding.
        ppm = round(pct * _PPM / 100)
        m0 = max(1, (TARGET_GROUP_DATA * ppm + _PPM // 2) // _PPM)
        k0 = min(256 - m0, m0 * _PPM // ppm)
        if n_leaves == 0:
            return cls(k0, m0, 0)
        groups = -(-n_leaves // k0)
        k = -(-n_leaves // groups)
        m = max(1, -(-k * ppm // _PPM))
        return cls(k, m, groups)

    def check(self, n_leaves: int) -> None:
        """Raises UsageError unless these parameters are valid for `n_leaves` data leaves."""
        k, m, g = self.k, self.m, self.groups
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (k, m, g)):
            raise UsageError(f"parity parameters must be ints, got k={k!r}, m={m!r}, groups={g!r}")
        if k < 1 or m < 1 or k + m > 256:
            raise UsageError(f"parity needs k >= 1, m >= 1 and k + m <= 256, got k={k}, m={m}")
        low = -(-n_leaves // k)
        if not low <= g <= n_leaves:
            raise UsageError(
                f"groups must be between ceil(n_leaves / k) = {low} and n_leaves = {n_leaves}, got {g} "
                "(use ParityParams.from_redundancy)"
            )

    @property
    def parity_leaves(self) -> int:
        return self.m * self.groups

    def parity_nbytes(self, leaf_size: int) -> int:
        return self.m * self.groups * leaf_size

    def group_of(self, leaf: int) -> int:
        return leaf % self.groups

    def parity_leaf(self, group: int, row: int) -> int:
        """Index of parity leaf `row` (0 <= row < m) of `group` in the parity bytes."""
        return row * self.groups + group

    @property
    def max_burst_leaves(self) -> int:
        """Any run of this many consecutive damaged data leaves (e.g. a truncated tail) can be rebuilt,
        provided the parity itself is intact: it hits each group at most m times."""
        return self.m * self.groups

    @property
    def overhead(self) -> float:
        """Nominal parity bytes per data byte, m / k (a short group makes the real ratio a bit higher)."""
        return self.m / self.k

    def to_dict(self) -> dict[str, Any]:
        """The record that a sidecar stores beside the parity bytes (FORMAT.md, parity record)."""
        return {
            "version": PARITY_VERSION,
            "scheme": SCHEME,
            "polynomial": FIELD_POLYNOMIAL,
            "k": self.k,
            "m": self.m,
            "groups": self.groups,
        }

    @classmethod
    def from_dict(cls, record: Any, *, path: str = "<sidecar>") -> ParityParams:
        """Reads a to_dict() record; raises InputError on an unknown version or scheme or a bad field."""
        if not isinstance(record, dict):
            raise InputError(path, None, "a parity record (a JSON object)")
        if record.get("version") != PARITY_VERSION or record.get("scheme") != SCHEME:
            raise InputError(
                path,
                None,
                f"parity version {PARITY_VERSION} scheme {SCHEME!r}, got version {record.get('version')!r} "
                f"scheme {record.get('scheme')!r} (a newer fastckpt wrote it?)",
            )
        if record.get("polynomial") != FIELD_POLYNOMIAL:
            raise InputError(
                path, None, f"parity polynomial {FIELD_POLYNOMIAL}, got {record.get('polynomial')!r}"
            )
        values: list[int] = []
        for name in ("k", "m", "groups"):
            v = record.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(path, None, f"a non-negative integer {name} in the parity record, got {v!r}")
            values.append(v)
        return cls(*values)


def _contiguous(obj: Any, what: str) -> memoryview:
    """A flat byte view of obj; use it in a `with` block so that the export ends with the call."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise UsageError(
            f"{what} must be a bytes-like object (bytes, mmap, numpy array), got {type(obj).__name__}"
        ) from None
    if not view.c_contiguous:
        view.release()
        raise UsageError(f"{what} must be C-contiguous; pass numpy.ascontiguousarray(x)")
    if view.format == "B" and view.ndim == 1:
        return view
    flat = view.cast("B")
    view.release()
    return flat


def _checked(params: ParityParams, size: int, leaf_size: int) -> None:
    check_leaf_size(leaf_size)
    params.check(n_leaves_of(size, leaf_size))


def encode_file_parity(
    buffer: Any, leaf_size: int, params: ParityParams, *, threads: int = 0, isa: str = ""
) -> bytes:
    """Parity of a whole byte range (e.g. a file's mmap): params.parity_nbytes(leaf_size) bytes.

    `isa` forces a kernel ("scalar", "avx2", "avx512", "gfni"; default: the widest usable).
    """
    with _contiguous(buffer, "buffer") as view:
        _checked(params, view.nbytes, leaf_size)
        return _native.rs_encode(view, leaf_size, params.k, params.m, params.groups, threads, isa)


def protect_buffer(
    buffer: Any, leaf_size: int, params: ParityParams, *, threads: int = 0, isa: str = ""
) -> tuple[bytes, bytes]:
    """(leaf digests as packed little-endian u64, parity) in one pass over memory.

    The digests are exactly those of `fastckpt.hash_bytes(buffer, leaf_size=...).leaf_bytes`.
    """
    with _contiguous(buffer, "buffer") as view:
        _checked(params, view.nbytes, leaf_size)
        return _native.rs_protect(view, leaf_size, params.k, params.m, params.groups, threads, isa)


@dataclass(frozen=True)
class ProtectedFile:
    """What protect_file computed for one file: everything a sidecar needs for its data part."""

    size: int
    leaf_size: int
    params: ParityParams
    leaf_bytes: bytes = field(repr=False)
    parity: bytes = field(repr=False)


def protect_file(
    path: str | os.PathLike[str],
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    redundancy: float = DEFAULT_REDUNDANCY,
    threads: int = 0,
    isa: str = "",
) -> ProtectedFile:
    """Leaf digests and parity of a file, read once through a zero-copy mmap."""
    check_leaf_size(leaf_size)
    fspath = os.fspath(path)
    size = os.stat(fspath).st_size
    params = ParityParams.from_redundancy(redundancy, n_leaves_of(size, leaf_size))
    try:
        size2, leaves, parity = _native.rs_protect_file(
            fspath, leaf_size, params.k, params.m, params.groups, threads, isa
        )
    except ValueError:
        if os.stat(fspath).st_size != size:
            raise InputError(fspath, None, "a file that does not change while it is protected") from None
        raise
    return ProtectedFile(size2, leaf_size, params, leaves, parity)


@dataclass(frozen=True)
class ScannedFile:
    """What scan_file computed in its one pass over a file."""

    size: int
    leaf_size: int
    params: ParityParams | None  # None: no parity was asked for (redundancy 0)
    leaf_bytes: bytes = field(repr=False)
    parity: bytes = field(repr=False)  # b"" when it was streamed to out_fd
    span_leaves: list[bytes] = field(repr=False)  # leaf digests of each span, packed little-endian u64
    crcs: list[int] = field(repr=False)  # zlib.crc32 of each CRC span
    parity_leaf_bytes: bytes = field(repr=False, default=b"")  # leaf digests of the parity


def scan_file(
    path: str | os.PathLike[str],
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    redundancy: float = DEFAULT_REDUNDANCY,
    spans: Iterable[tuple[int, int]] = (),
    crc_spans: Iterable[tuple[int, int]] = (),
    threads: int = 0,
    isa: str = "",
    out_fd: int = -1,
    out_offset: int = 0,
) -> ScannedFile:
    """Everything `protect` reads a file for, in one pass over a zero-copy mmap: the leaf digests,
    the parity (unless `redundancy` is 0), the leaf digests of each (offset, nbytes) span counted from
    the span's own start (exactly `leaf_digests` of those bytes: what a v1 tensor digest is built
    from) and the CRC-32 of each (offset, nbytes) CRC span (zip records). Each byte is loaded from
    memory once; the extra work on it is done while it is in cache.

    With `out_fd` (an open file the caller owns) the parity is written there instead of returned
    (`parity` is then b""), parity byte j at `out_offset + j`, group by group during the pass
    (sidecar_parity.StreamedSidecar); only a few windows of it are ever in memory. The parity's own
    leaf digests (`parity_leaf_bytes`) are computed either way, while each parity leaf is in cache."""
    check_leaf_size(leaf_size)
    fspath = os.fspath(path)
    span_list = [(int(o), int(n)) for o, n in spans]
    crc_list = [(int(o), int(n)) for o, n in crc_spans]
    size = os.stat(fspath).st_size
    for what, lst in (("span", span_list), ("CRC span", crc_list)):
        for o, n in lst:
            if o < 0 or n < 0 or o + n > size:
                raise InputError(
                    fspath, o, f"a {what} inside the {size}-byte file, got {n} bytes at offset {o}"
                )
    params: ParityParams | None = None
    k = m = groups = 0
    if redundancy:
        params = ParityParams.from_redundancy(redundancy, n_leaves_of(size, leaf_size))
        k, m, groups = params.k, params.m, params.groups
    try:
        size2, leaves, parity, span_bytes, crcs, parity_leaves = _native.rs_scan_file(
            fspath, leaf_size, k, m, groups, span_list, crc_list, threads, isa, out_fd, out_offset
        )
    except ValueError:
        if os.stat(fspath).st_size != size:
            raise InputError(fspath, None, "a file that does not change while it is protected") from None
        raise
    out: list[bytes] = []
    pos = 0
    with memoryview(span_bytes) as view:
        for _, n in span_list:
            count = n_leaves_of(n, leaf_size) * 8
            out.append(bytes(view[pos : pos + count]))
            pos += count
    return ScannedFile(size2, leaf_size, params, leaves, parity, out, list(crcs), parity_leaves)


@dataclass(frozen=True)
class GroupLoss:
    """One group that lost more leaves than it has usable parity."""

    group: int
    leaves: tuple[int, ...]  # its erased data leaves (damaged, or missing past a truncated end)
    parity_available: int  # its parity leaves that are not damaged


class UnrecoverableLeavesError(FastckptError):
    """Some damaged leaves cannot be rebuilt from parity (exit code 1 in `repair`)."""

    def __init__(self, path: str, leaves: tuple[int, ...], groups: tuple[GroupLoss, ...]) -> None:
        shown = ", ".join(map(str, leaves[:8])) + (", ..." if len(leaves) > 8 else "")
        g = groups[0]
        super().__init__(
            f"{path}: {len(leaves)} damaged leaves cannot be rebuilt from parity (leaves {shown}); "
            f"e.g. group {g.group} lost {len(g.leaves)} data leaves but has {g.parity_available} usable parity leaves"
        )
        self.path = path
        self.leaves = leaves
        self.groups = groups


@dataclass(frozen=True)
class Reconstruction:
    """The result of reconstruct_leaves.

    `leaves` maps every rebuilt data leaf to its bytes (of its true length; the last leaf may be short),
    as read-only memoryviews into one buffer (write them with `f.write(view)`, copy with `bytes(view)`).
    `unrecoverable` lists, ascending, the erased leaves that cannot be rebuilt, and `lost_groups` says why.
    """

    leaves: dict[int, memoryview]
    unrecoverable: tuple[int, ...]
    lost_groups: tuple[GroupLoss, ...]

    @property
    def complete(self) -> bool:
        return not self.unrecoverable

    def raise_if_incomplete(self, path: str) -> None:
        if self.unrecoverable:
            raise UnrecoverableLeavesError(path, self.unrecoverable, self.lost_groups)


def _indices(values: Iterable[int], what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UsageError(f"{what} must hold non-negative int leaf indices, got {v!r}")
        out.append(v)
    return sorted(set(out))


def reconstruct_leaves(
    buffer: Any,
    size: int,
    leaf_size: int,
    params: ParityParams,
    parity: Any,
    damaged: Iterable[int],
    *,
    damaged_parity: Iterable[int] = (),
    threads: int = 0,
    isa: str = "",
) -> Reconstruction:
    """Rebuilds damaged data leaves of a byte range whose original size was `size`.

    `buffer` is the damaged content (a file's mmap); it may be shorter than `size` (truncated: every
    leaf not wholly inside it is rebuilt too, and reported in the result) or longer (appended bytes
    are ignored). `damaged` are the data leaves whose digests did not match; their bytes are never
    read. `damaged_parity` are parity leaves known to be bad (their digests did not match); they are
    not used. Nothing is raised for unrecoverable leaves: see `Reconstruction.raise_if_incomplete`.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UsageError(f"size must be a non-negative int, got {size!r}")
    _checked(params, size, leaf_size)
    n = n_leaves_of(size, leaf_size)
    bad = _indices(damaged, "damaged")
    if bad and bad[-1] >= n:
        raise UsageError(f"damaged leaf {bad[-1]} is out of range: a range of {size} bytes has {n} leaves")
    bad_parity = _indices(damaged_parity, "damaged_parity")
    if bad_parity and bad_parity[-1] >= params.parity_leaves:
        raise UsageError(
            f"damaged parity leaf {bad_parity[-1]} is out of range: there are {params.parity_leaves}"
        )
    # Views are released on the way out, even on error, so that the caller can close its mmaps.
    with _contiguous(buffer, "buffer") as view, _contiguous(parity, "parity") as pview:
        if pview.nbytes != params.parity_nbytes(leaf_size):
            raise UsageError(
                f"parity holds {pview.nbytes} bytes but these parameters need {params.parity_nbytes(leaf_size)} "
                "(m * groups * leaf_size)"
            )
        rebuilt, lost, data = _native.rs_reconstruct(
            view, size, leaf_size, params.k, params.m, params.groups, pview, bad, bad_parity, threads, isa
        )
    # Read-only views into the one buffer the engine filled: a truncated multi-GB file can need
    # hundreds of MB of rebuilt leaves, which are not copied again.
    out = memoryview(data)
    leaves: dict[int, memoryview] = {}
    for slot, leaf in enumerate(rebuilt):
        _, length = leaf_span(leaf, size, leaf_size)
        leaves[leaf] = out[slot * leaf_size : slot * leaf_size + length]
    losses: dict[int, list[int]] = {}
    for leaf in lost:
        losses.setdefault(leaf % params.groups, []).append(leaf)
    parity_bad_per_group: dict[int, int] = {}
    for j in bad_parity:
        parity_bad_per_group[j % params.groups] = parity_bad_per_group.get(j % params.groups, 0) + 1
    groups = tuple(
        GroupLoss(g, tuple(ls), params.m - parity_bad_per_group.get(g, 0)) for g, ls in sorted(losses.items())
    )
    return Reconstruction(leaves, tuple(lost), groups)


__all__ = [
    "DEFAULT_REDUNDANCY",
    "FIELD_POLYNOMIAL",
    "PARITY_VERSION",
    "SCHEME",
    "GroupLoss",
    "ParityParams",
    "ProtectedFile",
    "Reconstruction",
    "ScannedFile",
    "UnrecoverableLeavesError",
    "encode_file_parity",
    "leaf_span",
    "n_leaves_of",
    "protect_buffer",
    "protect_file",
    "reconstruct_leaves",
    "scan_file",
]
