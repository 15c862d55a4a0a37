"""`fastckpt verify` scaled out over torch.distributed: `torchrun --nproc_per_node=N -m fastckpt verify DIR`.

Under torchrun (RANK, WORLD_SIZE and MASTER_ADDR set, WORLD_SIZE > 1) the expensive work of a
verify, hashing file bytes against sidecars and the structural checks of files without one, is
cut into units (files, and leaf-aligned ranges of large files), spread over the ranks by size,
computed where they land, and gathered on rank 0 (gloo). Rank 0 then runs the ordinary
`fastckpt.verify.verify_path` with those results standing in for `hash_file` and `read_layout`,
so the report is exactly the single-process report. Every rank returns it; only rank 0 prints.
Outside torchrun this module only forwards to `fastckpt.verify.verify_path` (no torch import).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ._record import dataclass
from .errors import FastckptError

# Large files are split into leaf-aligned ranges of about this many bytes, so ranks share them.
UNIT_BYTES = 1 << 30


def under_torchrun() -> bool:
    env = os.environ
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        return False
    try:
        return int(env["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def verify_path(
    path: str | os.PathLike[str], *, sidecar: str | None = None, threads: int = 0, progress: bool = False
) -> dict[str, Any]:
    """`fastckpt.verify.verify_path`, distributed when run under torchrun (see module docstring), with
    DCP item annotations for torch.distributed.checkpoint folders (fastckpt.dcp_verify)."""
    from . import verify as single

    if not under_torchrun():
        report = single.verify_path(path, sidecar=sidecar, threads=threads, progress=progress)
        if "files" not in report:  # one file: no DCP items to annotate (and no module to import)
            return report
        from .dcp_verify import annotate

        return annotate(os.fspath(path), report)
    from .dcp_verify import annotate

    return annotate(
        os.fspath(path), verify_path_distributed(os.fspath(path), sidecar=sidecar, threads=threads)
    )


@dataclass(frozen=True)
class Unit:
    kind: str  # "hash" | "layout"
    path: str
    leaf_size: int = 0
    start: int = 0  # first leaf
    stop: int = 0  # leaf after the last
    size: int = 0  # bytes of work (for balancing)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.kind, self.path, self.leaf_size, self.start)


def _hash_units(path: str, leaf_size: int) -> list[Unit]:
    size = os.path.getsize(path)
    n = -(-size // leaf_size)
    per = max(UNIT_BYTES // leaf_size, 1)
    if n == 0:
        return [Unit("hash", path, leaf_size, 0, 0, 0)]
    return [
        Unit("hash", path, leaf_size, s, min(s + per, n), min(s + per, n) * leaf_size - s * leaf_size)
        for s in range(0, n, per)
    ]


def _sidecar_leaf_size(spath: str) -> int | None:
    from .sidecar import KIND_FILE, FileManifest, read_sidecar

    try:
        m = read_sidecar(spath, expect_kind=KIND_FILE).manifest
    except (FastckptError, OSError):
        return None
    return m.leaf_size if isinstance(m, FileManifest) else None


def plan_units(path: str, sidecar: str | None = None) -> list[Unit]:
    """The hashing and structural-check work a verify of `path` will ask for (deterministic)."""
    from ._layout import folder_file_format, read_dir_layout, walk_files
    from .sidecar import DIR_MANIFEST_NAME, KIND_DIRECTORY, DirManifest, read_sidecar, sidecar_path_for

    def for_file(full: str, listed_leaf: int | None, dir_fmt: str | None, rel: str) -> list[Unit]:
        spath = sidecar_path_for(full)
        if os.path.exists(spath):
            ls = _sidecar_leaf_size(spath)
            return _hash_units(full, ls) if ls else []
        if listed_leaf is not None:
            return _hash_units(full, listed_leaf)
        if folder_file_format(dir_fmt, rel):
            return []
        return [Unit("layout", full, size=os.path.getsize(full))]

    if not os.path.isdir(path):
        if not os.path.isfile(path):
            return []
        spath = sidecar or sidecar_path_for(path)
        if os.path.exists(spath):
            ls = _sidecar_leaf_size(spath)
            return _hash_units(path, ls) if ls else []
        return [Unit("layout", path, size=os.path.getsize(path))]
    listed: dict[str, int] = {}
    dir_fmt = None
    mpath = os.path.join(path, DIR_MANIFEST_NAME)
    if os.path.exists(mpath):
        with contextlib.suppress(FastckptError, OSError):
            dm = read_sidecar(mpath, expect_kind=KIND_DIRECTORY).manifest
            if isinstance(dm, DirManifest):
                listed = {e.path: dm.leaf_size for e in dm.entries}
                dir_fmt = dm.format
    if dir_fmt is None:
        with contextlib.suppress(FastckptError, OSError):
            dl = read_dir_layout(path)
            dir_fmt = dl.format if dl is not None else None
    units: list[Unit] = []
    for rel in sorted(set(walk_files(path)) | set(listed)):
        full = os.path.join(path, rel)
        if os.path.isfile(full):
            units += for_file(full, listed.get(rel), dir_fmt, rel)
    return units


def assign(units: list[Unit], world: int) -> list[list[Unit]]:
    """Largest first onto the least loaded rank (ties: lowest rank)."""
    loads = [0] * world
    out: list[list[Unit]] = [[] for _ in range(world)]
    for u in sorted(units, key=lambda u: (-u.size, u.key)):
        r = min(range(world), key=lambda i: (loads[i], i))
        out[r].append(u)
        loads[r] += max(u.size, 1)
    return out


def run_unit(u: Unit, threads: int) -> Any:
    import mmap

    from . import _native

    if u.kind == "layout":
        from ._layout import read_layout

        return read_layout(u.path, check_crc=True)
    with open(u.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        lo, hi = u.start * u.leaf_size, min(u.stop * u.leaf_size, size)
        if hi <= lo:
            return size, b""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm)[lo:hi] as view:
            return size, _native.leaf_digests(view, u.leaf_size, threads)


@contextlib.contextmanager
def precomputed(results: dict[tuple[str, str, int, int], Any]) -> Iterator[None]:
    """Makes fastckpt.digest.hash_file and fastckpt._layout.read_layout answer from `results`
    (falling back to the real functions for anything not there, or for a file that changed)."""
    from . import _layout, digest

    real_hash, real_layout = digest.hash_file, _layout.read_layout

    def hash_file(
        path: Any, *, leaf_size: int = digest.DEFAULT_LEAF_SIZE, threads: int = 0, progress: bool = False
    ) -> Any:
        full = os.path.abspath(os.fspath(path))
        parts: list[bytes] = []
        size = None
        start = 0
        while True:
            r = results.get(("hash", full, leaf_size, start))
            if r is None:
                break
            size = r[0] if size is None else size
            if r[0] != size:
                break
            parts.append(r[1])
            start += len(r[1]) // 8
            if start * leaf_size >= size:
                break
        if size is not None and start == -(-size // leaf_size) and os.path.getsize(full) == size:
            return digest.digest_from_leaves(b"".join(parts), leaf_size, size)
        return real_hash(path, leaf_size=leaf_size, threads=threads, progress=progress)

    def read_layout(path: str, *, check_crc: bool = True, progress: Any = None) -> Any:
        r = results.get(("layout", os.path.abspath(os.fspath(path)), 0, 0))
        if check_crc and r is not None:
            return r
        return real_layout(path, check_crc=check_crc, progress=progress)

    digest.hash_file, _layout.read_layout = hash_file, read_layout
    try:
        yield
    finally:
        digest.hash_file, _layout.read_layout = real_hash, real_layout


def verify_path_distributed(path: str, *, sidecar: str | None = None, threads: int = 0) -> dict[str, Any]:
    import torch.distributed as dist

    from . import verify as single

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        # Units name files by absolute path, so every rank (and the lookups) agree.
        units = plan_units(os.path.abspath(path), sidecar)
        share = assign(units, world)
        mine: dict[tuple[str, str, int, int], Any] = {}
        for u in share[rank]:
            try:
                mine[u.key] = run_unit(u, threads)
            except (FastckptError, OSError, ValueError):
                continue  # rank 0 redoes it and reports the error exactly as a single process would
        gathered: list[Any] = [None] * world if rank == 0 else []
        dist.gather_object(mine, gathered if rank == 0 else None, dst=0)
        report: dict[str, Any] | None = None
        error: str | None = None
        if rank == 0:
            results: dict[tuple[str, str, int, int], Any] = {}
            for g in gathered:
                results.update(g or {})
            try:
                with precomputed(results):
                    report = single.verify_path(path, sidecar=sidecar, threads=threads, progress=False)
                report["distributed"] = {
                    "world_size": world,
                    "units": len(units),
                    "bytes_per_rank": [sum(u.size for u in s) for s in share],
                    "files_per_rank": [len({u.path for u in s}) for s in share],
                }
            except FastckptError as e:
                error = str(e)
        box: list[Any] = [report, error]
        dist.broadcast_object_list(box, src=0)
        report, error = box[0], box[1]
    finally:
        if own:
            dist.destroy_process_group()
    if rank != 0:
        # The report is printed once, by rank 0; other ranks only share its exit code.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    if error is not None:
        raise FastckptError(error)
    assert report is not None
    return report
