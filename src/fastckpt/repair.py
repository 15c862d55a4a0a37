"""`repair`: restores a damaged checkpoint file (or folder) bit-exact from parity and other copies.

This module owns the repair plan and its safe execution. For one file it

1. reads the sidecar (a damaged copy is replaced by its twin; when both copies are damaged in
   different places, the intact bytes of each are spliced and accepted only if a copy checksum
   matches), and checks every parity leaf against its digest;
2. hashes the file once and finds the damaged leaves (a truncated tail counts as damaged leaves,
   appended bytes are cut);
3. plans where each damaged leaf comes from: a leaf with the expected digest in an OTHER file (same
   offset first, then any leaf-aligned offset), else Reed-Solomon parity; when the damage exceeds
   what both can restore, it reports exactly which bytes, tensors and elements are lost and writes
   nothing;
4. writes the repaired file to a temporary file in the same folder (copy, patch, reconstruct),
   verifies it against the sidecar, fsyncs it, keeps the original as `PATH.damaged` (a hard link
   made before the rename), renames the temporary file over `PATH` and fsyncs the folder: the
   final path always holds either the old or the repaired file.

How the temporary file is verified depends on how it was made. A byte copy moves every byte again,
so every leaf of the copy is read back and compared with the sidecar. A reflink clone (FICLONE on
XFS, btrfs, bcachefs, ...) moves no bytes: it shares the very blocks that step 2 just hashed, so
reading them back would only re-read the same blocks, cold, through a second page cache (on a real
disk, seconds per GiB). Instead the original's identity (device, inode, size, mtime and ctime in
ns) is taken before step 2 and again after the clone; any write, truncate or mmap store in between
changes mtime/ctime, and then nothing is replaced. The leaves the repair writes are always read back
and compared.

It never imports torch. docs/CLI.md describes the JSON report.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import _native
from .errors import FastckptError, InputError, UsageError
from .parity import ParityParams, leaf_span, n_leaves_of, reconstruct_leaves
from .sidecar import (
    COPY_A_OFFSET,
    COPY_CHECKSUM_SIZE,
    COPY_HEADER_SIZE,
    COPY_MAGIC,
    DIR_MANIFEST_NAME,
    HEADER_MAGIC,
    KIND_DIRECTORY,
    KIND_FILE,
    LOCATOR_SIZE,
    SIDECAR_SUFFIX,
    TRAILER_MAGIC,
    DirManifest,
    FileManifest,
    atomic_write,
    atomic_write_parts,
    bulk_offset,
    copy_b_offset,
    encode_sidecar,
    fsync_dir,
    read_sidecar,
    sidecar_path_for,
)
from .sidecar_parity import (
    LoadedParity,
    ParitySection,
    in_background,
    load_parity,
    parity_section_of,
    rebuild_parity_leaves,
)
from .verify import _SpanIndex, damaged_leaves, describe_region, merge_runs

BACKUP_SUFFIX = ".damaged"
# Bytes copied (and then verified) per step. Copying the next chunk overlaps hashing this one.
COPY_CHUNK = 64 << 20
# copy_file_range (in the kernel, no user-space buffer) where the filesystem offers it, else
# pwrite from the source's mapping. Benchmarks flip it to compare.
COPY_IN_KERNEL = True
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # linux/mman.h; Python may not name it
# Splicing two damaged sidecar copies tries every choice of side per differing region.
MAX_SPLICE_REGIONS = 12


class RepairError(FastckptError):
    """Repair could not finish safely (the file changed under it, the result did not verify)."""


# ---------------------------------------------------------------------------------------------
# The sidecar: read it, recover it when both copies are damaged, check its parity
# ---------------------------------------------------------------------------------------------


def _diff_runs(a: bytes, b: bytes, skip: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Maximal runs [start, end) where a and b differ, outside the `skip` ranges."""
    runs: list[tuple[int, int]] = []
    block = 4096
    n = len(a)
    for start in range(0, n, block):
        stop = min(start + block, n)
        if a[start:stop] == b[start:stop]:
            continue
        for i in range(start, stop):
            if a[i] != b[i] and not any(lo <= i < hi for lo, hi in skip):
                if runs and runs[-1][1] == i:
                    runs[-1] = (runs[-1][0], i + 1)
                else:
                    runs.append((i, i + 1))
    return runs


def _splice(a: bytes, b: bytes) -> bytes | None:
    """A valid copy A (copy_index 0, correct checksum) from two copies of the same length that are
    damaged in different places, or None.

    Where the copies agree both are taken as right; where they differ one of them is. Every choice
    of side per differing region is tried and accepted only when the result matches a stored XXH3-128
    (of either copy): with at most 2**12 candidates a false match has probability below 2**-116.
    """
    n = len(a)
    if n != len(b) or n < COPY_HEADER_SIZE + COPY_CHECKSUM_SIZE:
        return None
    end = n - COPY_CHECKSUM_SIZE
    stored = (int.from_bytes(a[end:], "little"), int.from_bytes(b[end:], "little"))
    runs = _diff_runs(a, b, [(12, 14), (end, n)])
    attempts: list[list[tuple[int, int]]] = []
    merged: list[tuple[int, int]] = []
    for lo, hi in runs:  # one fault is one region: merge runs separated by a few equal bytes
        if merged and lo - merged[-1][1] <= 64:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    attempts.append(merged)
    if runs != merged:
        attempts.append(runs)
    for regions in attempts:
        if len(regions) > MAX_SPLICE_REGIONS:
            continue
        for mask in range(1 << len(regions)):
            body = bytearray(a[:end])
            for i, (lo, hi) in enumerate(regions):
                if mask >> i & 1:
                    body[lo:hi] = b[lo:hi]
            for index in (0, 1):
                body[12:14] = index.to_bytes(2, "little")
                if _native.xxh3_128(bytes(body)) == stored[index]:
                    body[12:14] = b"\0\0"
                    return bytes(body) + _native.xxh3_128(bytes(body)).to_bytes(16, "little")
    return None


def _recover_copy(data: Any) -> bytes | None:
    """Copy A spliced from the two damaged copies of a sidecar's bytes, or None."""
    from .sidecar import _Bad, _parse_locator

    size = len(data)
    view = memoryview(data)
    lengths: set[int] = set()
    b_offsets: set[int] = set()
    bulk_lengths: set[int] = {0}
    for off, magic in ((0, HEADER_MAGIC), (size - LOCATOR_SIZE, TRAILER_MAGIC)):
        if off < 0:
            continue
        try:
            _, _, a_len, b_off, b_len, bulk_len = _parse_locator(
                view[off : off + LOCATOR_SIZE], off, magic, size
            )
        except _Bad:
            continue
        if a_len == b_len:
            lengths.add(a_len)
            b_offsets.add(b_off)
            bulk_lengths.add(bulk_len)
    scanned = [o for o in range(4096, size - COPY_HEADER_SIZE + 1, 4096) if view[o : o + 8] == COPY_MAGIC]
    for at in [COPY_A_OFFSET, *scanned]:
        if at + COPY_HEADER_SIZE <= size:
            body_len = int.from_bytes(view[at + 24 : at + 32], "little")
            if body_len < size:
                lengths.add(COPY_HEADER_SIZE + body_len + COPY_CHECKSUM_SIZE)
    b_offsets.update(scanned)
    for n in sorted(lengths):
        for bl in bulk_lengths:
            b_offsets.add(copy_b_offset(n, bl))
    for n in sorted(lengths):
        a_end = COPY_A_OFFSET + n
        for b_off in sorted(b_offsets):
            if b_off < a_end or b_off + n > size:
                continue
            out = _splice(bytes(view[COPY_A_OFFSET:a_end]), bytes(view[b_off : b_off + n]))
            if out is not None:
                return out
    return None


@dataclass
class SidecarState:
    """A sidecar as repair sees it: the trusted manifest, what is damaged, and its parity."""

    path: str
    kind: int
    manifest: FileManifest | DirManifest
    damaged: bool
    problems: list[str]
    bulk_offset: int
    recovered: bool = False  # both copies were damaged; the manifest was spliced from them
    parity_section: ParitySection | None = None
    parity: LoadedParity | None = None  # use loaded_parity(): it may still be loading
    warnings: list[str] = field(default_factory=list)
    parity_load: Any = field(default=None, repr=False)  # sidecar_parity.Pending of load_parity

    def loaded_parity(self) -> LoadedParity | None:
        """The parity with its leaves checked, once the load that load_sidecar_state started on a
        thread (it reads the parity from the disk while the file is hashed) has finished; a damaged
        parity leaf is then also one of `problems`."""
        pending, self.parity_load = self.parity_load, None
        if pending is not None:
            self.parity = pending.result()
            if self.parity is not None and self.parity.damaged:
                self.problems.append(f"{len(self.parity.damaged)} damaged parity leaves")
        return self.parity

    @property
    def parity_damaged(self) -> list[int]:
        parity = self.loaded_parity()
        return parity.damaged if parity is not None else []

    @property
    def needs_restore(self) -> bool:
        return self.damaged or bool(self.parity_damaged)

    def close(self) -> None:
        try:
            parity = self.loaded_parity()
        except Exception:  # the load failed: nothing to release, and the caller's own error stands
            return
        if parity is not None:
            parity.close()


def load_sidecar_state(spath: str, *, expect_kind: int = KIND_FILE, threads: int = 0) -> SidecarState:
    """Reads a sidecar for repair. Raises InputError when no trustworthy manifest can be had."""
    from .sidecar import _Bad, _decode_dir_manifest, _decode_file_manifest, _parse_copy

    try:
        sc = read_sidecar(spath, expect_kind=expect_kind)
        state = SidecarState(spath, sc.kind, sc.manifest, sc.damaged, sc.problems(), sc.bulk_offset)
    except InputError as err:
        with open(spath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with contextlib.ExitStack() as stack:
                mm = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if size else b""
                found = _recover_copy(mm) if size else None
        if found is None:
            raise err from None
        copy = found
        try:
            kind, sections, _, _ = _parse_copy(memoryview(copy), COPY_A_OFFSET, 0)
            manifest: FileManifest | DirManifest = (
                _decode_file_manifest(sections) if kind == KIND_FILE else _decode_dir_manifest(sections)
            )
        except _Bad:
            raise err from None
        if kind != expect_kind:
            raise err from None
        if isinstance(manifest, FileManifest):
            manifest._source = spath
        state = SidecarState(
            spath,
            kind,
            manifest,
            True,
            ["both manifest copies were damaged; recovered by splicing their intact bytes"],
            bulk_offset(len(copy)),
            recovered=True,
        )
    if isinstance(state.manifest, FileManifest):
        try:
            state.parity_section = parity_section_of(state.manifest, path=spath)
        except InputError as e:
            state.warnings.append(f"{spath}: parity is unusable ({e.expected}); repairing without it")
        if state.parity_section is not None:
            state.parity_load = in_background(
                load_parity, spath, state.bulk_offset, state.parity_section, threads=1
            )
    return state


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def _unrecoverable(
    erased: Iterable[int], params: ParityParams | None, bad_parity: Iterable[int]
) -> list[int]:
    """The erased leaves that parity cannot rebuild (FORMAT.md 3.6): all of a group's erased leaves
    when they outnumber its usable parity leaves; all of them when there is no parity."""
    erased = sorted(erased)
    if params is None:
        return erased
    per_group: dict[int, list[int]] = {}
    for i in erased:
        per_group.setdefault(i % params.groups, []).append(i)
    bad: dict[int, int] = {}
    for j in bad_parity:
        bad[j % params.groups] = bad.get(j % params.groups, 0) + 1
    out = [i for g, ls in per_group.items() if len(ls) > params.m - bad.get(g, 0) for i in ls]
    return sorted(out)


class _Source:
    """A file other leaves may be copied from (`--from OTHER`), mapped read-only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        self.view = memoryview(self._mm) if self._mm is not None else memoryview(b"")
        self.index: dict[int, list[tuple[int, int]]] | None = None  # digest -> [(offset, length)]
        self.index_trusted = False  # digests computed from the bytes now, not read from a sidecar

    def leaf_digest(self, offset: int, length: int) -> int | None:
        if offset + length > self.size:
            return None
        return int(_native.xxh3_64(self.view[offset : offset + length]))

    def build_index(self, leaf_size: int, threads: int) -> None:
        """Digest -> leaf-aligned places in this file. From its own sidecar when it has an intact one
        (every use is re-checked against the bytes), else by hashing it natively."""
        index: dict[int, list[tuple[int, int]]] = {}
        leaves: bytes | None = None
        spath = sidecar_path_for(self.path)
        if os.path.exists(spath):
            with contextlib.suppress(FastckptError, OSError):
                sc = read_sidecar(spath, expect_kind=KIND_FILE)
                m = sc.manifest
                if isinstance(m, FileManifest) and m.leaf_size == leaf_size and m.file_size == self.size:
                    leaves = m.leaf_bytes
        trusted = leaves is None
        if leaves is None:
            leaves = _native.leaf_digests(self.view, leaf_size, threads) if self.size else b""
        for j, d in enumerate(memoryview(leaves).cast("Q")):
            off = j * leaf_size
            index.setdefault(int(d), []).append((off, min(leaf_size, self.size - off)))
        self.index = index
        self.index_trusted = trusted

    def find(self, digest: int, length: int) -> int | None:
        """Offset of a leaf-aligned run of `length` bytes with this digest, checked against the bytes."""
        assert self.index is not None
        for off, n in self.index.get(digest, ()):
            if n == length and (self.index_trusted or self.leaf_digest(off, n) == digest):
                return off
        return None

    def close(self) -> None:
        self.view.release()
        if self._mm is not None:
            self._mm.close()
        self._file.close()


@dataclass
class _Plan:
    damaged: list[int]
    from_sources: dict[int, tuple[_Source, int]]  # leaf -> (source, offset in it)
    from_parity: list[int]
    unrecoverable: list[int]


def _plan(
    damaged: list[int],
    expected: memoryview,
    size: int,
    leaf_size: int,
    params: ParityParams | None,
    bad_parity: list[int],
    sources: list[_Source],
    threads: int,
) -> _Plan:
    remaining = set(damaged)
    taken: dict[int, tuple[_Source, int]] = {}
    # Same offset first: a replica or an older checkpoint of the same layout costs one leaf hash each.
    for src in sources:
        for i in sorted(remaining):
            off, n = leaf_span(i, size, leaf_size)
            if src.leaf_digest(off, n) == expected[i]:
                taken[i] = (src, off)
                remaining.discard(i)
    lost = _unrecoverable(remaining, params, bad_parity)
    if lost:
        # Parity is not enough: look for the missing leaves anywhere (leaf-aligned) in the sources.
        for src in sources:
            if not remaining:
                break
            if src.index is None:
                src.build_index(leaf_size, threads)
            for i in sorted(remaining):
                _, n = leaf_span(i, size, leaf_size)
                found = src.find(int(expected[i]), n)
                if found is not None:
                    taken[i] = (src, found)
                    remaining.discard(i)
        lost = _unrecoverable(remaining, params, bad_parity)
    lost_set = set(lost)
    return _Plan(sorted(damaged), taken, sorted(remaining - lost_set), lost)


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


def temp_path_for(path: str) -> str:
    """The temporary file repair writes beside `path` (skipped by folder walks: see _layout)."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.fastckpt-repair.tmp-{os.getpid()}")


def _free_backup_name(path: str) -> str:
    name = path + BACKUP_SUFFIX
    i = 1
    while os.path.lexists(name):
        name = f"{path}{BACKUP_SUFFIX}.{i}"
        i += 1
    return name


def _clone(src_fd: int, dst_fd: int) -> bool:
    """Makes dst share src's blocks (FICLONE: btrfs, XFS, bcachefs...); False where unsupported.
    The clone is then verified leaf by leaf like a copy, but costs no data write."""
    import fcntl

    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError:
        return False
    return True


FileIdentity = tuple[int, int, int, int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    """What changes when a file's bytes change: any write, truncate or store through a mapping
    updates mtime and ctime (at nanosecond granularity on Linux >= 6.13 multigrain timestamps once
    they have been read, as here)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _copy_range(src_fd: int, src_view: memoryview, dst_fd: int, start: int, stop: int) -> None:
    """Copies bytes [start, stop) between files at the same offsets, in the kernel when it can."""
    pos = start
    while pos < stop:
        try:
            n = os.copy_file_range(src_fd, dst_fd, stop - pos, pos, pos) if COPY_IN_KERNEL else 0
        except OSError:
            n = 0
        if n <= 0:  # not supported here (or a short source): copy from the mapping instead
            while pos < stop:
                pos += os.pwrite(dst_fd, src_view[pos:stop], pos)
            return
        pos += n


def _mismatched(got: bytes, want: bytes, first: int) -> list[int]:
    if got == want:
        return []
    qa, qe = memoryview(got).cast("Q"), memoryview(want).cast("Q")
    return [first + i for i in range(len(qe)) if qa[i] != qe[i]]


def _write_repaired(
    path: str,
    tmp: str,
    manifest: FileManifest,
    plan: _Plan,
    present: int,
    parity: LoadedParity | None,
    bad_parity: list[int],
    threads: int,
    progress: bool,
    timings: dict[str, float],
    hashed_identity: FileIdentity | None = None,
) -> str:
    """Builds and verifies the repaired file at `tmp`; returns how it was made: "clone" or "copy".

    A copy is read back leaf by leaf from `tmp` itself and compared with the sidecar. A clone (tried
    only when `hashed_identity`, the original's identity from before its leaves were hashed, is
    given) is trusted when the original still has that identity (the module docstring says why);
    otherwise RepairError: nothing is replaced. The leaves patched into `tmp` are read back and
    compared in both cases."""
    from ._progress import Progress
    from .digest import PROGRESS_MIN_BYTES

    L = manifest.leaf_size
    size = manifest.file_size
    expected = manifest.leaf_bytes
    patched = set(plan.damaged)
    mode = 0o644
    with contextlib.suppress(OSError):
        mode = os.stat(path).st_mode & 0o7777
    t0 = time.perf_counter()
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, fd)
        cloned = False
        if present:
            # The original, opened and mapped once: the clone or copy source, and (under a clone)
            # what the parity rebuild reads.
            src_file = stack.enter_context(open(path, "rb"))
            smm = stack.enter_context(mmap.mmap(src_file.fileno(), 0, access=mmap.ACCESS_READ))
            sview = memoryview(smm)
            stack.callback(sview.release)
            if hashed_identity is not None:
                cloned = _clone(src_file.fileno(), fd)
                if cloned and file_identity(os.fstat(src_file.fileno())) != hashed_identity:
                    raise RepairError(
                        f"{path}: changed while it was being repaired (its size, mtime or ctime moved "
                        f"after it was hashed); nothing was replaced: run repair again"
                    )
        os.ftruncate(fd, size)
        tmm = stack.enter_context(mmap.mmap(fd, size, access=mmap.ACCESS_READ)) if size else None
        tview = memoryview(tmm) if tmm is not None else memoryview(b"")
        stack.callback(tview.release)
        if present and not cloned:
            chunk = max(COPY_CHUNK // L, 1) * L
            starts = list(range(0, present, chunk))
            bar = stack.enter_context(
                Progress(f"repair {path}", present, enabled=progress and present >= PROGRESS_MIN_BYTES)
            )

            def copy(i: int) -> None:
                a = starts[i]
                _copy_range(src_file.fileno(), sview, fd, a, min(a + chunk, present))

            # Copy chunk i+1 while chunk i is read back from the temporary file and hashed.
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(copy, 0)
                for i, a in enumerate(starts):
                    pending.result()
                    if i + 1 < len(starts):
                        pending = pool.submit(copy, i + 1)
                    b = min(a + chunk, size)
                    if tmm is not None:
                        # Map the chunk in one call rather than a page fault per page (Linux >= 5.14).
                        with contextlib.suppress(OSError, ValueError):
                            tmm.madvise(MADV_POPULATE_READ, a, b - a)
                    got = _native.leaf_digests(tview[a:b], L, threads)
                    first = a // L
                    bad = _mismatched(got, expected[8 * first : 8 * first + len(got)], first)
                    if not set(bad) <= patched:
                        raise RepairError(
                            f"{path}: leaves {bad[:5]} changed while it was being repaired (or the copy "
                            f"to {tmp} failed); nothing was replaced"
                        )
                    bar.update(min(chunk, present - a))
        timings["copy_and_verify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, (src, off) in sorted(plan.from_sources.items(), key=lambda kv: kv[0]):
            o, n = leaf_span(i, size, L)
            os.pwrite(fd, src.view[off : off + n], o)
        if plan.from_parity:
            assert parity is not None
            # A clone's pages are cold (a new inode has its own page cache) while the original's
            # were just hashed; both hold the same bytes, except leaves patched from --from files.
            rebuild_from = sview if cloned and not plan.from_sources else tview
            rec = reconstruct_leaves(
                rebuild_from,
                size,
                L,
                parity.section.params,
                parity.data,
                plan.from_parity,
                damaged_parity=bad_parity,
                threads=threads,
            )
            if rec.unrecoverable:  # the plan said otherwise: never write guessed bytes
                raise RepairError(f"{path}: parity could not rebuild leaves {list(rec.unrecoverable)[:5]}")
            for i, data in rec.leaves.items():
                os.pwrite(fd, data, i * L)
        # Read the patched leaves back from the temporary file and check them too.
        for i in sorted(patched):
            o, n = leaf_span(i, size, L)
            if _native.xxh3_64(tview[o : o + n]) != int.from_bytes(expected[8 * i : 8 * i + 8], "little"):
                raise RepairError(
                    f"{path}: repaired leaf {i} does not match the sidecar; nothing was replaced"
                )
        if os.fstat(fd).st_size != size:
            raise RepairError(f"{tmp}: size changed while repairing; nothing was replaced")
        timings["patch"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        os.fsync(fd)
        timings["fsync"] = time.perf_counter() - t0
    return "clone" if cloned else "copy"


def _commit(path: str, tmp: str, backup: bool, original_exists: bool) -> str | None:
    """Keeps the original as PATH.damaged (hard link, or a copy where links are not supported), then
    renames the verified temporary file over PATH and fsyncs the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    kept: str | None = None
    if backup and original_exists:
        while True:
            kept = _free_backup_name(path)
            try:
                os.link(path, kept)
                break
            except FileExistsError:
                continue
            except OSError:  # no hard links here: a durable copy instead
                try:
                    _copy_file(path, kept)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(kept)
                    raise
                break
    os.replace(tmp, path)
    fsync_dir(folder)
    return kept


def _copy_file(src: str, dst: str) -> None:
    with open(src, "rb") as fi:
        size = os.fstat(fi.fileno()).st_size
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with (
                mmap.mmap(fi.fileno(), 0, access=mmap.ACCESS_READ)
                if size
                else contextlib.nullcontext(b"") as mm
            ):
                view = memoryview(mm)
                _copy_range(fi.fileno(), view, fd, 0, size)
                view.release()
            os.fsync(fd)
        finally:
            os.close(fd)


def _restore_sidecar(state: SidecarState, data_path: str, threads: int) -> None:
    """Rewrites the sidecar (atomically) from its trusted manifest and its parity, with damaged parity
    leaves recomputed from the now intact file and checked against their recorded digests."""
    from .sidecar_parity import _container_parts

    manifest = state.manifest
    parity = state.loaded_parity()
    if parity is None or not isinstance(manifest, FileManifest):
        new = encode_sidecar(manifest)
        state.close()
        atomic_write(state.path, new)
        return
    sec = parity.section
    bulk: Any = parity.data  # written straight from the old sidecar's mapping when intact
    if parity.damaged:
        with open(data_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with (
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                if size
                else contextlib.nullcontext(b"") as mm
            ):
                fixed = rebuild_parity_leaves(mm, manifest.file_size, sec, parity.damaged, threads=threads)
        L = sec.leaf_size
        bulk = bytearray(bulk)
        for j, leaf in fixed.items():
            if _native.xxh3_64(leaf) != int.from_bytes(sec.leaf_bytes[8 * j : 8 * j + 8], "little"):
                raise RepairError(
                    f"{state.path}: recomputed parity leaf {j} does not match its recorded digest; "
                    "run 'fastckpt protect' on the (verified) file to rebuild the sidecar"
                )
            bulk[j * L : (j + 1) * L] = leaf
    try:
        atomic_write_parts(state.path, _container_parts(manifest, bulk))
    finally:
        state.close()


# ---------------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------------


def _regions(leaves: list[int], manifest: FileManifest, end: int) -> list[dict[str, Any]]:
    if not leaves:
        return []
    tensors = _SpanIndex(manifest.tensor_entries(), "nbytes") if manifest.tensor_entries() else None
    segments = _SpanIndex(manifest.segment_entries(), "length") if manifest.segment_entries() else None
    return [describe_region(o, n, tensors, segments) for o, n in merge_runs(leaves, manifest.leaf_size, end)]


def _base_report(path: str, dry_run: bool) -> dict[str, Any]:
    return {
        "ok": False,
        "path": path,
        "sidecar": None,
        "format": None,
        "dry_run": dry_run,
        "size": None,
        "expected_size": None,
        "missing": False,
        "intact": False,
        "repairable": False,
        "repaired": False,
        "truncated": False,
        "appended": 0,
        "damaged": [],
        "rebuilt_from_parity": 0,
        "copied_from": [],
        "unrecoverable": [],
        "lost_groups": 0,
        "backup": None,
        "copy": None,
        "sidecar_damaged": False,
        "sidecar_restored": False,
        "sidecar_problems": [],
        "parity": None,
        "warnings": [],
        "timings": {},
    }


def repair_file(
    path: str | os.PathLike[str],
    *,
    sources: Sequence[str | os.PathLike[str]] = (),
    dry_run: bool = False,
    backup: bool = True,
    sidecar: str | None = None,
    threads: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Repairs one file against its sidecar; returns the `--json` report (`ok` means exit code 0).

    Raises InputError for unusable input (no sidecar, both sidecar copies damaged beyond splicing,
    an unreadable source) and RepairError when the result could not be verified; in every failure
    the file is left as it was and no temporary file remains.
    """
    fspath = os.fspath(path)
    if fspath.endswith(SIDECAR_SUFFIX) and sidecar is None and os.path.isfile(fspath):
        raise InputError(
            fspath,
            None,
            f"expected a checkpoint, found a fastckpt sidecar: repair {fspath[: -len(SIDECAR_SUFFIX)]}",
        )
    if os.path.isdir(fspath):
        raise InputError(fspath, None, "expected a file, found a directory (use repair_dir)")
    spath = sidecar or sidecar_path_for(fspath)
    if not os.path.exists(spath):
        raise InputError(
            fspath,
            None,
            f"expected its sidecar {spath}: repair needs the leaf digests and parity that "
            "'fastckpt protect' records (protect files while they are intact)",
        )
    state = load_sidecar_state(spath, threads=threads)
    opened: list[_Source] = []
    try:
        for s in sources:
            sp = os.fspath(s)
            if os.path.isdir(sp):
                raise InputError(
                    sp, None, "expected a file for --from (a folder is only valid when repairing a folder)"
                )
            opened.append(_Source(sp))
        # A symbolic link is followed: its target is repaired (temp file and backup in its folder).
        data_path = os.path.realpath(fspath) if os.path.islink(fspath) else fspath
        report = _repair_one(data_path, state, opened, dry_run, backup, threads, progress)
        report["path"] = fspath
        return report
    finally:
        for src in opened:
            src.close()
        state.close()


def _hash_present(path: str, size: int, leaf_size: int, threads: int, progress: bool) -> tuple[int, bytes]:
    """(actual size, leaf digests of the first min(actual, size) bytes)."""
    from .digest import hash_file

    actual = os.path.getsize(path)
    if actual <= size:
        d = hash_file(path, leaf_size=leaf_size, threads=threads, progress=progress)
        return d.nbytes, d.leaf_bytes
    # Appended bytes are not part of the file: hash exactly its first `size` bytes.
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            leaves = _native.leaf_digests(view[:size], leaf_size, threads)
        finally:
            view.release()
    return actual, leaves


def _repair_one(
    path: str,
    state: SidecarState,
    sources: list[_Source],
    dry_run: bool,
    backup: bool,
    threads: int,
    progress: bool,
) -> dict[str, Any]:
    m = state.manifest
    if not isinstance(m, FileManifest):
        raise InputError(state.path, None, "expected a file sidecar, found a directory manifest")
    L, size = m.leaf_size, m.file_size
    report = _base_report(path, dry_run)
    # sidecar_damaged and sidecar_problems are filled in after the hash: the parity is checked on a
    # thread meanwhile (load_sidecar_state), and its damaged leaves count.
    report.update(
        sidecar=state.path, format=m.format, expected_size=size, sidecar_damaged=None, sidecar_problems=[]
    )
    report["warnings"] += state.warnings
    params = state.parity_section.params if state.parity_section is not None else None
    timings: dict[str, float] = {}
    report["timings"] = timings
    t0 = time.perf_counter()
    exists = os.path.isfile(path)
    identity: FileIdentity | None = None
    if exists:
        identity = file_identity(os.stat(path))
        actual, leaves = _hash_present(path, size, L, threads, progress)
    else:
        actual, leaves = 0, b""
        report["missing"] = True
    report["size"] = actual if exists else None
    n = n_leaves_of(size, L)
    bad = damaged_leaves(leaves[: 8 * n], m.leaf_bytes)
    report["truncated"] = actual < size
    report["appended"] = max(0, actual - size)
    timings["hash"] = time.perf_counter() - t0
    report["damaged"] = _regions(bad, m, size)
    bad_parity = state.parity_damaged
    report["sidecar_damaged"] = state.needs_restore
    report["sidecar_problems"] = list(state.problems)
    if params is not None:
        report["parity"] = {
            "k": params.k,
            "m": params.m,
            "groups": params.groups,
            "leaf_size": L,
            "bytes": params.parity_nbytes(L),
            "damaged_leaves": len(bad_parity),
        }
    data_ok = not bad and actual == size
    report["intact"] = data_ok
    expected = memoryview(m.leaf_bytes).cast("Q")

    plan = _plan(bad, expected, size, L, params, bad_parity, sources, threads)
    report["rebuilt_from_parity"] = len(plan.from_parity)
    per_source: dict[str, int] = {}
    for src, _ in plan.from_sources.values():
        per_source[src.path] = per_source.get(src.path, 0) + 1
    report["copied_from"] = [{"path": p, "leaves": c} for p, c in per_source.items()]
    if plan.unrecoverable:
        report["unrecoverable"] = _regions(plan.unrecoverable, m, size)
        if params is not None:
            report["lost_groups"] = len({i % params.groups for i in plan.unrecoverable})
        else:
            report["warnings"].append(f"{state.path}: has no parity (protected with --redundancy 0)")
        return report
    report["repairable"] = True
    if dry_run:
        report["ok"] = True
        return report

    if not data_ok:
        tmp = temp_path_for(path)
        try:
            report["copy"] = _write_repaired(
                path,
                tmp,
                m,
                plan,
                min(actual, size),
                state.loaded_parity(),
                bad_parity,
                threads,
                progress,
                timings,
                identity,
            )
            t0 = time.perf_counter()
            report["backup"] = _commit(path, tmp, backup, exists)
            timings["commit"] = time.perf_counter() - t0
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        report["repaired"] = True
    if state.needs_restore:
        t0 = time.perf_counter()
        _restore_sidecar(state, path, threads)
        report["sidecar_restored"] = True
        timings["sidecar"] = time.perf_counter() - t0
    report["ok"] = True
    return report


# ---------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------


def _error_report(path: str, err: BaseException, dry_run: bool) -> dict[str, Any]:
    report = _base_report(path, dry_run)
    report["error"] = (
        str(err)
        if isinstance(err, FastckptError)
        else f"{getattr(err, 'filename', None) or path}: {getattr(err, 'strerror', None) or err}"
    )
    return report


def repair_dir(
    path: str | os.PathLike[str],
    *,
    sources: Sequence[str | os.PathLike[str]] = (),
    dry_run: bool = False,
    backup: bool = True,
    threads: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Repairs every protected file of a folder (each against its own sidecar) and the folder
    manifest. A folder in `sources` contributes the file at the same relative path; a file in
    `sources` is offered to every file."""
    from ._layout import is_fastckpt_file

    root = os.fspath(path)
    if not os.path.isdir(root):
        raise InputError(root, None, "expected a directory")
    report = _base_report(root, dry_run)
    report.update(files=[], errors=[])
    rels: list[str] = []
    mpath = os.path.join(root, DIR_MANIFEST_NAME)
    if os.path.exists(mpath):
        try:
            dstate = load_sidecar_state(mpath, expect_kind=KIND_DIRECTORY, threads=threads)
            assert isinstance(dstate.manifest, DirManifest)
            rels += [e.path for e in dstate.manifest.entries]
            report["sidecar"] = mpath
            report["format"] = dstate.manifest.format
            if dstate.needs_restore:
                report["sidecar_damaged"] = True
                report["sidecar_problems"] += [f"{DIR_MANIFEST_NAME}: {p}" for p in dstate.problems]
                if not dry_run:
                    _restore_sidecar(dstate, mpath, threads)
                    report["sidecar_restored"] = True
        except (FastckptError, OSError) as e:
            report["errors"].append(str(e))
    # Protected files on disk, and files whose sidecar survived them.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if name.endswith(SIDECAR_SUFFIX):
                base = rel[: -len(SIDECAR_SUFFIX)]
                if base not in rels and not is_fastckpt_file(base):
                    rels.append(base)
    if not rels:
        raise InputError(root, None, "expected a protected folder (files with sidecars), found none")
    dir_sources = [os.fspath(s) for s in sources if os.path.isdir(s)]
    file_sources = [os.fspath(s) for s in sources if not os.path.isdir(s)]
    for rel in sorted(rels):
        full = os.path.join(root, rel)
        srcs = [os.path.join(d, rel) for d in dir_sources if os.path.isfile(os.path.join(d, rel))]
        srcs += file_sources
        try:
            if not os.path.exists(sidecar_path_for(full)):
                raise InputError(
                    full, None, "expected its sidecar (listed in the folder manifest); cannot locate damage"
                )
            fr = repair_file(
                full, sources=srcs, dry_run=dry_run, backup=backup, threads=threads, progress=progress
            )
        except (FastckptError, OSError) as e:
            fr = _error_report(full, e, dry_run)
            report["errors"].append(fr["error"])
        fr["file"] = rel
        report["files"].append(fr)
    files = report["files"]
    report["size"] = sum(f["size"] or 0 for f in files)
    report["expected_size"] = sum(f["expected_size"] or 0 for f in files)
    for key in ("intact", "repairable"):
        report[key] = all(f[key] for f in files) and not report["errors"]
    for key in ("repaired", "truncated", "missing", "sidecar_damaged", "sidecar_restored"):
        report[key] = bool(report[key]) or any(f[key] for f in files)
    report["appended"] = sum(f["appended"] for f in files)
    report["rebuilt_from_parity"] = sum(f["rebuilt_from_parity"] for f in files)
    report["lost_groups"] = sum(f["lost_groups"] for f in files)
    for key in ("damaged", "unrecoverable"):
        report[key] = [dict(d, file=f["file"]) for f in files for d in f[key]]
    merged: dict[str, int] = {}
    for f in files:
        for c in f["copied_from"]:
            merged[c["path"]] = merged.get(c["path"], 0) + c["leaves"]
    report["copied_from"] = [{"path": p, "leaves": c} for p, c in merged.items()]
    report["backups"] = [f["backup"] for f in files if f["backup"]]
    report["warnings"] += [w for f in files for w in f["warnings"]]
    report["ok"] = not report["errors"] and all(f["ok"] for f in files)
    return report


def repair_path(
    path: str | os.PathLike[str],
    *,
    sources: Sequence[str | os.PathLike[str]] = (),
    dry_run: bool = False,
    backup: bool = True,
    sidecar: str | None = None,
    threads: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Repairs a file or a folder; the returned dict is the `--json` object."""
    fspath = os.fspath(path)
    for s in sources:
        if not os.path.exists(s):
            raise InputError(
                os.fspath(s),
                None,
                "expected a file or folder to copy leaves from (--from), but it does not exist",
            )
    if os.path.isdir(fspath):
        if sidecar is not None:
            raise UsageError("--sidecar applies to a file, not a folder")
        return repair_dir(
            fspath, sources=sources, dry_run=dry_run, backup=backup, threads=threads, progress=progress
        )
    return repair_file(
        fspath,
        sources=sources,
        dry_run=dry_run,
        backup=backup,
        sidecar=sidecar,
        threads=threads,
        progress=progress,
    )


def exit_code(report: dict[str, Any]) -> int:
    """0 intact or repaired (with --dry-run: repairable), 1 not repairable, 2 error."""
    if report.get("error") or report.get("errors"):
        return 2
    return 0 if report["ok"] else 1


__all__ = [
    "BACKUP_SUFFIX",
    "RepairError",
    "SidecarState",
    "exit_code",
    "load_sidecar_state",
    "repair_dir",
    "repair_file",
    "repair_path",
    "temp_path_for",
]
