"""`fastckpt report`: what the checkpoints of one run cost, what they share and how fast they change.

`build_report(run_dir, ...)` returns the documented `--json` object (docs/CLI.md, section report):

- sizes per checkpoint, the total and the growth;
- dedup potential from leaf digests shared across checkpoints (taken from sidecars when they are
  current, else hashed natively), overall, per checkpoint and per tensor;
- the relative change ||B-A|| / ||A|| of every tensor between consecutive checkpoints, read through
  the format readers (the heatmap rows group tensors into layers when there are many);
- a compressibility estimate per dtype from a sample, with zstandard (zlib when it is missing);
- the Young/Daly checkpoint interval and the expected work lost per failure;
- the storage cost per month.

Run folders may be local or fsspec URLs (`fastckpt.remote`); torch is never imported.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import remote
from ._change import relative_change, sequence_sums, supported
from ._run import Checkpoint, CheckpointFile, discover
from .errors import FastckptError, InputError, UsageError

REPORT_VERSION = 1
DEFAULT_MTBF_HOURS = 24.0
# S3 Standard, first 50 TB, us-east-1 (USD per GB-month, where AWS's GB is 2**30 bytes).
DEFAULT_PRICE_USD_PER_GB_MONTH = 0.023
GB = 1 << 30
# Save time assumed when it is neither given nor measurable (checkpoint size / this rate).
ASSUMED_SAVE_BYTES_PER_SECOND = 1e9
SAMPLE_BYTES_PER_DTYPE = 4 << 20
SAMPLE_PIECE = 256 << 10
# Work pieces for the change computation: big enough to amortise Python, small enough to balance.
PIECE_BYTES = 16 << 20
MAX_HEATMAP_ROWS = 96


# ---------------------------------------------------------------------------------------------
# Per-file facts: leaf digests and tensor spans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    dense: bool  # the bytes are exactly the tensor's row-major elements
    digest: int | None = None  # v1 tensor digest (from a sidecar), when known


@dataclass
class FileFacts:
    file: CheckpointFile
    leaf_size: int
    leaves: bytes = b""
    digest_source: str = "hashed"  # "sidecar" | "hashed"
    spans: list[Span] = field(default_factory=list)
    format: str | None = None


@dataclass
class CkptFacts:
    ckpt: Checkpoint
    files: list[FileFacts]
    # key -> (file index, span)
    tensors: dict[str, tuple[int, Span]] = field(default_factory=dict)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _sidecar_for(f: CheckpointFile, leaf_size: int | None, warnings: list[str]) -> Any:
    """The file's sidecar manifest when it exists and is current, else None."""
    from .sidecar import KIND_FILE, FileManifest, read_sidecar, sidecar_path_for

    spath = sidecar_path_for(f.path)
    try:
        if remote.is_url(f.path):
            if not remote.exists(spath):
                return None
            s_mtime = remote.info(spath).mtime
        else:
            if not os.path.isfile(spath):
                return None
            s_mtime = os.path.getmtime(spath)
        sc = read_sidecar(spath, expect_kind=KIND_FILE)
    except (FastckptError, OSError) as e:
        warnings.append(f"{spath}: sidecar not used ({e}); hashing the file instead")
        return None
    m = sc.manifest
    if not isinstance(m, FileManifest):  # pragma: no cover - read_sidecar checked the kind
        return None
    if m.file_size != f.size:
        warnings.append(
            f"{spath}: sidecar describes {m.file_size} bytes, the file has {f.size}; hashing instead"
        )
        return None
    # Object stores record upload times, not save times, so only local files are checked for age.
    if not remote.is_url(f.path) and f.mtime is not None and s_mtime is not None and s_mtime + 1.0 < f.mtime:
        warnings.append(f"{spath}: sidecar is older than the file; hashing instead")
        return None
    if leaf_size is not None and m.leaf_size != leaf_size:
        return None
    return m


def _spans_from_sidecar(m: Any) -> list[Span]:
    out = []
    for t in m.tensor_entries():
        dense = not t.raw_range and _numel(t.shape) * t.itemsize == t.nbytes
        out.append(
            Span(t.key, t.dtype, tuple(t.shape), t.offset, t.nbytes, dense, t.digest if dense else None)
        )
    return out


def _spans_from_layout(f: CheckpointFile, warnings: list[str]) -> tuple[list[Span], str | None]:
    from .formats import read_layout

    try:
        layout = read_layout(f.path, check_crc=False)
    except (FastckptError, OSError) as e:
        warnings.append(f"{f.path}: cannot read its tensors ({e})")
        return [], None
    for p in layout.problems[:3]:
        warnings.append(f"{f.path}: {p}")
    out = []
    for t in layout.tensors:
        if t.offset + t.nbytes > f.size:
            continue
        dense = t.contiguous and t.numel * t.itemsize == t.nbytes
        out.append(Span(t.key, t.dtype, tuple(t.shape), t.offset, t.nbytes, dense))
    return out, layout.format


def _hash(f: CheckpointFile, leaf_size: int, threads: int) -> bytes:
    if remote.is_url(f.path):
        return bytes(remote.hash_url(f.path, leaf_size=leaf_size, threads=threads).leaf_bytes)
    from .digest import hash_file

    d = hash_file(f.path, leaf_size=leaf_size, threads=threads)
    if d.nbytes != f.size:
        raise InputError(
            f.path, d.nbytes, f"expected {f.size} bytes as listed, the file changed while being read"
        )
    return bytes(d.leaf_bytes)


# ---------------------------------------------------------------------------------------------
# Reading bytes (local mmap or remote ranged reads)
# ---------------------------------------------------------------------------------------------


class _Source:
    """Read access to one checkpoint file: zero-copy mmap views locally, ranged reads remotely."""

    def __init__(self, f: CheckpointFile) -> None:
        self.path = f.path
        self.size = f.size
        self._mm: mmap.mmap | None = None
        self._view: memoryview | None = None
        self.reader: remote.RangeReader | None = None
        if remote.is_url(f.path):
            self.reader = remote.open_reader(f.path)
        elif f.size:
            with open(remote.local_path(f.path), "rb") as fh:
                # Populated up front: faulting in 4 KiB pages one by one costs more than the reads.
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                self._mm = mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
            self._view = memoryview(self._mm)

    @property
    def local(self) -> bool:
        return self.reader is None

    def view(self, offset: int, length: int) -> Any:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InputError(
                self.path, offset, f"expected {length} bytes within the file's {self.size} bytes"
            )
        if self._view is not None:
            return self._view[offset : offset + length]
        if self.reader is not None:
            return self.reader.read(offset, length)
        return b""

    def close(self) -> None:
        import contextlib

        if self._view is not None:
            with contextlib.suppress(BufferError):
                self._view.release()
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
        if self.reader is not None:
            self.reader.close()


class _Sources:
    """Opened files of the checkpoints in use, closed when a checkpoint is no longer needed."""

    def __init__(self) -> None:
        self._open: dict[str, _Source] = {}

    def get(self, f: CheckpointFile) -> _Source:
        s = self._open.get(f.path)
        if s is None:
            s = self._open[f.path] = _Source(f)
        return s

    def release(self, ckpt: Checkpoint) -> None:
        for f in ckpt.files:
            s = self._open.pop(f.path, None)
            if s is not None:
                s.close()

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()


# ---------------------------------------------------------------------------------------------
# Dedup
# ---------------------------------------------------------------------------------------------


def _leaf_lengths(size: int, leaf_size: int) -> Any:
    import numpy as np

    n = -(-size // leaf_size)
    lens = np.full(n, leaf_size, dtype=np.int64)
    if n:
        lens[-1] = size - (n - 1) * leaf_size
    return lens


def _dedup(facts: list[CkptFacts], leaf_size: int) -> tuple[dict[str, Any], dict[tuple[int, int], Any]]:
    """Overall and per-checkpoint dedup figures, plus each file's 'shared' mask (leaf digest seen
    in another checkpoint of the run), keyed by (checkpoint index, file index)."""
    import numpy as np

    digs, cks, lens, owners = [], [], [], []
    for ci, cf in enumerate(facts):
        for fi, ff in enumerate(cf.files):
            d = np.frombuffer(ff.leaves, dtype="<u8")
            digs.append(d)
            cks.append(np.full(d.size, ci, dtype=np.int64))
            lens.append(_leaf_lengths(ff.file.size, leaf_size))
            owners.append((ci, fi, d.size))
    n_ck = len(facts)
    if not digs or sum(d.size for d in digs) == 0:
        empty = {
            "leaf_size": leaf_size,
            "total_bytes": 0,
            "unique_bytes": 0,
            "shared_bytes": 0,
            "shared_fraction": 0.0,
            "dedup_ratio": 1.0,
            "per_checkpoint": [
                {"index": i, "shared_bytes": 0, "shared_with_previous_bytes": 0, "new_bytes": 0}
                for i in range(n_ck)
            ],
        }
        return empty, {(ci, fi): np.zeros(n, dtype=bool) for ci, fi, n in owners}
    dig = np.concatenate(digs)
    ck = np.concatenate(cks)
    ln = np.concatenate(lens)
    order = np.lexsort((ck, dig))
    ds, cs, ls = dig[order], ck[order], ln[order]
    new_digest = np.empty(ds.size, dtype=bool)
    new_digest[0] = True
    np.not_equal(ds[1:], ds[:-1], out=new_digest[1:])
    new_pair = new_digest.copy()
    new_pair[1:] |= cs[1:] != cs[:-1]
    gid = np.cumsum(new_digest) - 1
    ck_per_digest = np.bincount(gid, weights=new_pair)
    shared_sorted = ck_per_digest[gid] >= 2
    shared = np.empty_like(shared_sorted)
    shared[order] = shared_sorted
    first = np.flatnonzero(new_digest)
    total = int(ln.sum())
    unique = int(ls[first].sum())
    shared_bytes = int(ln[shared].sum())
    new_bytes = np.bincount(cs[first], weights=ls[first], minlength=n_ck)
    shared_per_ck = np.bincount(ck[shared], weights=ln[shared], minlength=n_ck)
    masks: dict[tuple[int, int], Any] = {}
    pos = 0
    for ci, fi, n in owners:
        masks[(ci, fi)] = shared[pos : pos + n]
        pos += n
    per_ck = []
    prev_set: Any = None
    for ci, cf in enumerate(facts):
        mine = (
            np.concatenate([np.frombuffer(ff.leaves, dtype="<u8") for ff in cf.files])
            if cf.files
            else np.zeros(0, "<u8")
        )
        my_lens = (
            np.concatenate([_leaf_lengths(ff.file.size, leaf_size) for ff in cf.files])
            if cf.files
            else np.zeros(0, np.int64)
        )
        with_prev = int(my_lens[np.isin(mine, prev_set)].sum()) if prev_set is not None and mine.size else 0
        per_ck.append(
            {
                "index": ci,
                "shared_bytes": int(shared_per_ck[ci]),
                "shared_with_previous_bytes": with_prev,
                "new_bytes": int(new_bytes[ci]),
            }
        )
        prev_set = mine
    summary = {
        "leaf_size": leaf_size,
        "total_bytes": total,
        "unique_bytes": unique,
        "shared_bytes": shared_bytes,
        "shared_fraction": shared_bytes / total if total else 0.0,
        "dedup_ratio": total / unique if unique else 1.0,
        "per_checkpoint": per_ck,
    }
    return summary, masks


def _shared_bytes_in_spans(mask: Any, size: int, leaf_size: int, spans: list[Span]) -> list[int]:
    """Bytes of each span that lie in shared leaves (partial leaves count by their overlap)."""
    import numpy as np

    if not spans:
        return []
    lens = _leaf_lengths(size, leaf_size)
    shared_len = np.where(mask, lens, 0)
    cum = np.concatenate([[0], np.cumsum(shared_len)])

    def upto(x: Any) -> Any:
        idx = np.minimum(x // leaf_size, max(mask.size - 1, 0))
        whole = cum[np.minimum(x // leaf_size, mask.size)]
        part = np.where((x // leaf_size) < mask.size, mask[idx] * (x % leaf_size), 0)
        return whole + part

    lo = np.array([s.offset for s in spans], dtype=np.int64)
    hi = np.array([s.offset + s.nbytes for s in spans], dtype=np.int64)
    return [int(v) for v in upto(hi) - upto(lo)]


# ---------------------------------------------------------------------------------------------
# Change between consecutive checkpoints
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """A tensor key present with one dtype and shape in consecutive checkpoints first..first+len-1."""

    key: str
    first: int
    spans: list[tuple[int, Span]]  # (file index, span) per checkpoint


def _plan_changes(facts: list[CkptFacts], keys: list[str]) -> tuple[list[dict[str, Any]], list[_Run]]:
    """Per consecutive pair, an entry for every key present in both, and the runs to read."""
    per_pair: list[dict[str, Any]] = [{} for _ in range(len(facts) - 1)]
    runs: list[_Run] = []
    for key in keys:
        cur: _Run | None = None
        prev: Span | None = None  # the key's span in the previous checkpoint
        for ci, cf in enumerate(facts):
            hit = cf.tensors.get(key)
            if hit is None:
                cur = prev = None
                continue
            fi, s = hit
            usable = s.dense and supported(s.dtype)
            if prev is not None:
                entry: dict[str, Any] = {"dtype": s.dtype, "nbytes": s.nbytes}
                per_pair[ci - 1][key] = entry
                if prev.dtype != s.dtype or prev.shape != s.shape:
                    entry["status"] = "dtype_or_shape_changed"
                elif not supported(s.dtype):
                    entry["status"] = "unsupported_dtype"
                elif not (prev.dense and s.dense) or prev.nbytes != s.nbytes:
                    entry["status"] = "not_comparable"
                elif cur is not None:
                    same = prev.digest is not None and prev.digest == s.digest
                    entry.update(status="equal" if same else "compared", sq_diff=0.0, sq_a=0.0)
                    cur.spans.append((fi, s))
                    prev = s
                    continue
            cur = _Run(key, ci, [(fi, s)]) if usable else None
            if cur is not None:
                runs.append(cur)
            prev = s
    return per_pair, [r for r in runs if len(r.spans) > 1]


def _changes(
    facts: list[CkptFacts],
    keys: list[str],
    sources: _Sources,
    pool: ThreadPoolExecutor,
    progress: Callable[[int], None] | None,
) -> tuple[list[dict[str, Any]], int]:
    """Sums of squares per key and consecutive pair: sq_diff = sum((B-A)^2), sq_a = sum(A^2).

    Every run of a key is walked in pieces across all its checkpoints at once, so each tensor byte
    is read once (not once per pair it belongs to); a checkpoint whose tensor digest equals the
    previous one's (sidecars) is not read at all."""
    per_pair, runs = _plan_changes(facts, keys)
    remote_run = any(remote.is_url(ff.file.path) for cf in facts for ff in cf.files)
    piece_bytes = PIECE_BYTES // 4 if remote_run else PIECE_BYTES

    def piece(run: _Run, lo: int, n: int) -> tuple[_Run, list[float], list[float], int]:
        bufs: list[Any] = []
        pending: list[Any] = []
        nread = 0
        for j, (fi, s) in enumerate(run.spans):
            same = j > 0 and s.digest is not None and s.digest == run.spans[j - 1][1].digest
            if same:
                bufs.append(None)
                continue
            src = sources.get(facts[run.first + j].files[fi].file)
            if src.reader is not None:
                bufs.append(src.reader.submit(s.offset + lo, n))
            else:
                bufs.append(src.view(s.offset + lo, n))
            nread += n
        try:
            bufs = [b.result() if hasattr(b, "result") else b for b in bufs]
            sq, sq_diff = sequence_sums(bufs, run.spans[0][1].dtype, threads=1)
        finally:
            for b in bufs + pending:
                if isinstance(b, memoryview):
                    b.release()
        return run, sq, sq_diff, nread

    futures = []
    for run in runs:
        s0 = run.spans[0][1]
        isz = max(s0.nbytes // max(_numel(s0.shape), 1), 1)
        step = max(piece_bytes // isz, 1) * isz
        for lo in range(0, s0.nbytes, step):
            futures.append(pool.submit(piece, run, lo, min(step, s0.nbytes - lo)))
    total_read = 0
    for fut in futures:
        run, sq, sq_diff, nread = fut.result()
        total_read += nread
        for j in range(1, len(run.spans)):
            e = per_pair[run.first + j - 1][run.key]
            e["sq_diff"] += sq_diff[j - 1]
            e["sq_a"] += sq[j - 1]
        if progress:
            progress(nread)
    for pair in per_pair:
        for e in pair.values():
            if e.get("status") == "compared" and e["sq_diff"] == 0.0:
                e["status"] = "equal"
    return per_pair, total_read


def _layer_of(key: str, level: str) -> str:
    parts = key.split(".")
    if level == "tensor":
        return key
    if level == "module":
        return ".".join(parts[:-1]) or key
    if level == "block":
        for i, p in enumerate(parts):
            if p.isdigit():
                return ".".join(parts[: i + 1])
        return ".".join(parts[:-1]) or key
    return parts[0]


def _heatmap(keys: list[str], per_pair: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows (tensors, or layers when there are many) x consecutive pairs of relative change."""
    for level in ("tensor", "module", "block", "top"):
        rows: dict[str, None] = {}
        for k in keys:
            rows.setdefault(_layer_of(k, level), None)
        if len(rows) <= MAX_HEATMAP_ROWS or level == "top":
            break
    labels = list(rows)
    index = {lab: i for i, lab in enumerate(labels)}
    values: list[list[float | None]] = []
    for _ in labels:
        values.append([None] * len(per_pair))
    for j, results in enumerate(per_pair):
        sums: dict[str, list[float]] = {}
        for key, e in results.items():
            if e.get("status") not in ("compared", "equal"):
                continue
            acc = sums.setdefault(_layer_of(key, level), [0.0, 0.0])
            acc[0] += e["sq_diff"]
            acc[1] += e["sq_a"]
        for lab, (sd, sa) in sums.items():
            values[index[lab]][j] = relative_change(sd, sa)
    return {"grouping": level, "labels": labels, "values": values}


# ---------------------------------------------------------------------------------------------
# Compressibility
# ---------------------------------------------------------------------------------------------


def _compressor() -> tuple[str, Callable[[bytes], int]]:
    """(name, compressed length of a sample). Each call makes its own compressor context, so the
    function may run on several threads at once (zstandard and zlib release the GIL)."""
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]

        return "zstd-3", lambda data: len(zstandard.ZstdCompressor(level=3).compress(data))
    except ImportError:
        import zlib

        return "zlib-6", lambda data: len(zlib.compress(data, 6))


def _byte_grouped(data: bytes, itemsize: int) -> bytes:
    """The bytes of each element position together (all low bytes, then the next...): how float
    compressors expose the redundancy of exponents and high mantissa bits."""
    import numpy as np

    if itemsize <= 1 or len(data) % itemsize:
        return data
    return bytes(np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize).T.tobytes())


def _sample_ranges(spans: list[tuple[int, Span]], total: int, budget: int) -> list[tuple[int, int, int]]:
    """(file index, offset, length) pieces spread evenly over the concatenated spans."""
    if total <= 0:
        return []
    piece = max(min(SAMPLE_PIECE, total, budget), 1)
    count = max(1, min(budget // piece, total // piece))
    out = []
    starts = [int(i * (total - piece) / max(count - 1, 1)) for i in range(count)] if count > 1 else [0]
    it = iter(spans)
    cur = next(it, None)
    base = 0
    for want in starts:
        while cur is not None and want >= base + cur[1].nbytes:
            base += cur[1].nbytes
            cur = next(it, None)
        if cur is None:
            break
        fi, s = cur
        off = want - base
        n = min(piece, s.nbytes - off)
        if n > 0:
            out.append((fi, s.offset + off, n))
    return out


def _gaps(size: int, spans: list[Span]) -> list[tuple[int, int]]:
    """The byte ranges of a file that no tensor covers (headers, pickles, padding, other data)."""
    out = []
    pos = 0
    for s in sorted(spans, key=lambda x: x.offset):
        if s.offset > pos:
            out.append((pos, s.offset - pos))
        pos = max(pos, s.offset + s.nbytes)
    if pos < size:
        out.append((pos, size - pos))
    return out


def _compression(facts: list[CkptFacts], sources: _Sources, budget: int, threads: int) -> dict[str, Any]:
    """Compression ratio per dtype from samples of the latest checkpoint holding that dtype, plus
    the bytes outside tensors ("(other bytes)"); samples are compressed on all cores."""
    name, compressed_len = _compressor()
    by_dtype_total: dict[str, int] = {}
    for cf in facts:
        for _, s in cf.tensors.values():
            by_dtype_total[s.dtype] = by_dtype_total.get(s.dtype, 0) + s.nbytes
    # (row, sample bytes, itemsize): every sample is compressed as is and byte-grouped.
    samples: list[tuple[str, bytes, int]] = []
    for dtype in sorted(by_dtype_total, key=lambda d: -by_dtype_total[d]):
        latest = next(cf for cf in reversed(facts) if any(s.dtype == dtype for _, s in cf.tensors.values()))
        seen: set[tuple[int, int]] = set()
        spans = []
        for fi, s in latest.tensors.values():
            if s.dtype == dtype and (fi, s.offset) not in seen and s.nbytes > 0:
                seen.add((fi, s.offset))
                spans.append((fi, s))
        total = sum(s.nbytes for _, s in spans)
        itemsize = max(spans[0][1].nbytes // max(_numel(spans[0][1].shape), 1), 1) if spans else 1
        for fi, off, n in _sample_ranges(spans, total, budget):
            samples.append((dtype, bytes(sources.get(latest.files[fi].file).view(off, n)), itemsize))
    tensor_bytes_total = sum(by_dtype_total.values())
    total_bytes = sum(cf.ckpt.size for cf in facts)
    other = max(total_bytes - tensor_bytes_total, 0)
    if other:
        latest = facts[-1]
        pseudo = [
            (fi, Span("(other)", "uint8", (n,), off, n, True))
            for fi, ff in enumerate(latest.files)
            for off, n in _gaps(ff.file.size, [s for s in ff.spans if s.offset + s.nbytes <= ff.file.size])
        ]
        for fi, off, n in _sample_ranges(pseudo, sum(p[1].nbytes for p in pseudo), budget):
            samples.append(("(other bytes)", bytes(sources.get(latest.files[fi].file).view(off, n)), 1))

    def measure(sample: tuple[str, bytes, int]) -> tuple[str, int, int, int | None]:
        row, data, itemsize = sample
        grouped = compressed_len(_byte_grouped(data, itemsize)) if itemsize > 1 else None
        return row, len(data), compressed_len(data), grouped

    sums: dict[str, list[int]] = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for row, raw, comp, grouped in pool.map(measure, samples):
            acc = sums.setdefault(row, [0, 0, 0])
            acc[0] += raw
            acc[1] += comp
            acc[2] += grouped if grouped is not None else comp
    rows = []
    estimated = 0.0
    for row, nbytes in [*sorted(by_dtype_total.items(), key=lambda kv: -kv[1]), ("(other bytes)", other)]:
        if nbytes == 0 and row == "(other bytes)":
            continue
        raw, comp, grouped = sums.get(row, [0, 0, 0])
        ratio = raw / comp if comp else 1.0
        ratio_g = raw / grouped if grouped else 1.0
        is_tensor = row != "(other bytes)"
        rows.append(
            {
                "dtype": row,
                "bytes": nbytes,
                "sampled_bytes": raw,
                "ratio": ratio,
                "ratio_byte_grouped": ratio_g if is_tensor else None,
            }
        )
        estimated += nbytes / (max(ratio, ratio_g) if is_tensor else ratio)
    return {
        "compressor": name,
        "sample_bytes_per_dtype": budget,
        "dtypes": rows,
        "estimated_compressed_bytes": int(estimated),
        "estimated_ratio": total_bytes / estimated if estimated else 1.0,
    }


# ---------------------------------------------------------------------------------------------
# Interval (Young/Daly) and cost
# ---------------------------------------------------------------------------------------------


def young_interval(save_seconds: float, mtbf_seconds: float) -> float:
    """Young (1974): sqrt(2 C M), the first-order optimum of compute time between checkpoints."""
    return math.sqrt(2.0 * save_seconds * mtbf_seconds)


def daly_interval(save_seconds: float, mtbf_seconds: float) -> float:
    """Daly (2006), higher-order optimum of compute time between checkpoints:
    sqrt(2CM) * (1 + sqrt(C/2M)/3 + (C/2M)/9) - C for C < 2M, else M."""
    c, m = save_seconds, mtbf_seconds
    if c >= 2.0 * m:
        return m
    x = c / (2.0 * m)
    return math.sqrt(2.0 * c * m) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - c


def waste_fraction(interval: float, save_seconds: float, mtbf_seconds: float) -> float:
    """Fraction of wall time not spent on useful work, for exponential failures with mean M and no
    restart cost (Daly's model): 1 - tau / (M (exp((tau + C) / M) - 1))."""
    tau, c, m = interval, save_seconds, mtbf_seconds
    if tau <= 0:
        return 1.0
    denom = m * math.expm1((tau + c) / m)
    return 1.0 - tau / denom if denom > 0 else 1.0


def expected_loss_per_failure(interval: float, save_seconds: float, mtbf_seconds: float) -> float:
    """Expected time since the last completed checkpoint when a failure strikes: E[t | t < T] for
    T = tau + C and exponential failures, M - T / (exp(T/M) - 1) (about T/2 when T << M)."""
    t, m = interval + save_seconds, mtbf_seconds
    if t <= 0:
        return 0.0
    if t / m < 1e-6:
        return t / 2.0
    return m - t / math.expm1(t / m)


def _measured_save_seconds(facts: list[CkptFacts]) -> float | None:
    """Median over checkpoints of (last write - creation) of their files, when the file system
    records creation times (statx btime). A file copied with its mtime preserved is ignored."""
    durations = []
    for cf in facts:
        b = [f.file.btime for f in cf.files if f.file.btime is not None]
        m = [f.file.mtime for f in cf.files if f.file.mtime is not None]
        if len(b) != len(cf.files) or not m:
            continue
        d = max(m) - min(b)
        if 0.0 < d < 86400.0:
            durations.append(d)
    return statistics.median(durations) if durations else None


def _interval(facts: list[CkptFacts], mtbf_hours: float | None, save_seconds: float | None) -> dict[str, Any]:
    sizes = [cf.ckpt.size for cf in facts]
    if save_seconds is not None:
        c, c_source = float(save_seconds), "given"
    else:
        measured = _measured_save_seconds(facts)
        if measured is not None:
            c, c_source = measured, "measured"
        else:
            c, c_source = max(sizes[-1] / ASSUMED_SAVE_BYTES_PER_SECOND, 1e-3), "estimated"
    m = (mtbf_hours if mtbf_hours is not None else DEFAULT_MTBF_HOURS) * 3600.0
    rec = daly_interval(c, m)
    out: dict[str, Any] = {
        "save_seconds": c,
        "save_seconds_source": c_source,
        "mtbf_seconds": m,
        "mtbf_source": "given" if mtbf_hours is not None else "default",
        "young_seconds": young_interval(c, m),
        "recommended_seconds": rec,
        "expected_lost_seconds_per_failure": expected_loss_per_failure(rec, c, m),
        "expected_waste_fraction": waste_fraction(rec, c, m),
        "observed_seconds": None,
        "observed_lost_seconds_per_failure": None,
        "observed_waste_fraction": None,
        "steps_per_second": None,
        "recommended_steps": None,
    }
    times = [cf.ckpt.mtime for cf in facts]
    if len(facts) >= 2 and all(t is not None for t in times):
        gaps = [b - a for a, b in itertools.pairwise(times)]  # type: ignore[operator]
        gaps = [g for g in gaps if g > 0]
        # A gap no longer than the save itself is not a training interval (a copy, an upload).
        if gaps and statistics.median(gaps) > c:
            obs = statistics.median(gaps)
            tau = obs - c
            out["observed_seconds"] = obs
            out["observed_lost_seconds_per_failure"] = expected_loss_per_failure(tau, c, m)
            out["observed_waste_fraction"] = waste_fraction(tau, c, m)
        steps = [cf.ckpt.step for cf in facts]
        if all(s is not None for s in steps) and times[-1] > times[0]:  # type: ignore[operator]
            rate = (steps[-1] - steps[0]) / (times[-1] - times[0])  # type: ignore[operator]
            if rate > 0:
                out["steps_per_second"] = rate
                out["recommended_steps"] = max(1, round(rec * rate))
    return out


def _cost(total: int, unique: int, compressed: int | None, sizes: list[int], price: float) -> dict[str, Any]:
    per_gb = price
    return {
        "price_usd_per_gb_month": price,
        "gb_bytes": GB,
        "monthly_usd": total / GB * per_gb,
        "monthly_usd_deduplicated": unique / GB * per_gb,
        "monthly_usd_compressed_estimate": None if compressed is None else compressed / GB * per_gb,
        "monthly_usd_per_checkpoint": (sizes[-1] / GB * per_gb) if sizes else 0.0,
    }


def _growth(facts: list[CkptFacts]) -> dict[str, Any]:
    sizes = [cf.ckpt.size for cf in facts]
    n = len(sizes)
    out: dict[str, Any] = {
        "first_bytes": sizes[0],
        "last_bytes": sizes[-1],
        "bytes_per_checkpoint": (sizes[-1] - sizes[0]) / (n - 1) if n > 1 else 0.0,
        "relative": (sizes[-1] / sizes[0] - 1.0) if sizes[0] else None,
        "run_bytes_per_day": None,
    }
    times = [cf.ckpt.mtime for cf in facts]
    if n > 1 and all(t is not None for t in times) and times[-1] > times[0]:  # type: ignore[operator]
        # The run's storage grows by one checkpoint per interval when every checkpoint is kept.
        span = times[-1] - times[0]  # type: ignore[operator]
        out["run_bytes_per_day"] = sum(sizes[1:]) / span * 86400.0
    return out


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _gather(
    ckpts: list[Checkpoint],
    leaf_size: int | None,
    threads: int,
    warnings: list[str],
    progress: Callable[[int], None] | None,
) -> tuple[list[CkptFacts], int, dict[str, int]]:
    # Leaf size: the one the sidecars agree on, else the default.
    from .digest import DEFAULT_LEAF_SIZE, check_leaf_size

    manifests: dict[str, Any] = {}
    for c in ckpts:
        for f in c.files:
            m = _sidecar_for(f, None, warnings)
            if m is not None:
                manifests[f.path] = m
    if leaf_size is None:
        counts: dict[int, int] = {}
        for m in manifests.values():
            counts[m.leaf_size] = counts.get(m.leaf_size, 0) + 1
        leaf_size = max(counts, key=lambda k: counts[k]) if counts else DEFAULT_LEAF_SIZE
    check_leaf_size(leaf_size)
    sources = {"sidecar": 0, "hashed": 0}
    facts = []
    for c in ckpts:
        files = []
        for f in c.files:
            m = manifests.get(f.path)
            ff = FileFacts(f, leaf_size)
            if m is not None and m.leaf_size == leaf_size:
                ff.leaves = bytes(m.leaf_bytes)
                ff.digest_source = "sidecar"
                ff.format = m.format
                if f.holds_tensors:
                    ff.spans = _spans_from_sidecar(m)
            else:
                ff.leaves = _hash(f, leaf_size, threads)
                if f.holds_tensors:
                    ff.spans, ff.format = _spans_from_layout(f, warnings)
            if progress:
                progress(f.size)
            sources[ff.digest_source] += 1
            files.append(ff)
        cf = CkptFacts(c, files)
        for fi, ff in enumerate(files):
            for s in ff.spans:
                key = s.key if s.key not in cf.tensors else f"{ff.file.rel}:{s.key}"
                cf.tensors.setdefault(key, (fi, s))
        facts.append(cf)
    return facts, leaf_size, sources


def build_report(
    run_dir: str | os.PathLike[str],
    *,
    mtbf_hours: float | None = None,
    price_usd_per_gb_month: float = DEFAULT_PRICE_USD_PER_GB_MONTH,
    save_seconds: float | None = None,
    leaf_size: int | None = None,
    threads: int = 0,
    sample_bytes: int = SAMPLE_BYTES_PER_DTYPE,
    change: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """The report of a run folder (local path or fsspec URL) as the documented JSON object."""
    if mtbf_hours is not None and not (mtbf_hours > 0 and math.isfinite(mtbf_hours)):
        raise UsageError(f"--mtbf must be a positive number of hours, got {mtbf_hours}")
    if save_seconds is not None and not (save_seconds > 0 and math.isfinite(save_seconds)):
        raise UsageError(f"--save-seconds must be a positive number of seconds, got {save_seconds}")
    if not (price_usd_per_gb_month >= 0 and math.isfinite(price_usd_per_gb_month)):
        raise UsageError(f"--price must be a non-negative number, got {price_usd_per_gb_month}")
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise UsageError("fastckpt report needs numpy: pip install 'fastckpt[report]'") from None
    from ._progress import Progress

    run = os.fspath(run_dir)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t0 = time.perf_counter()
    ckpts = discover(run)
    timings["discover"] = time.perf_counter() - t0
    n_threads = threads if threads > 0 else (os.cpu_count() or 1)

    t = time.perf_counter()
    total_size = sum(c.size for c in ckpts)
    with Progress("report: digests", total_size, enabled=progress) as bar:
        facts, leaf, digest_sources = _gather(ckpts, leaf_size, threads, warnings, bar.update)
    timings["digests"] = time.perf_counter() - t

    t = time.perf_counter()
    dedup, masks = _dedup(facts, leaf)
    dedup["digest_sources"] = digest_sources
    timings["dedup"] = time.perf_counter() - t

    # Model order: keys in the order they first appear, oldest checkpoint first.
    order: dict[str, None] = {}
    for cf in facts:
        for k in cf.tensors:
            order.setdefault(k, None)
    keys = list(order)

    t = time.perf_counter()
    sources = _Sources()
    per_pair: list[dict[str, Any]] = []
    pairs_json: list[dict[str, Any]] = []
    bytes_read = 0
    try:
        if change and len(facts) > 1:
            compare_total = 0
            for _, cf in enumerate(facts):
                compare_total += sum(sp.nbytes for _, sp in cf.tensors.values() if sp.dense)
            remote_run = any(remote.is_url(c.path) for c in ckpts)
            workers = max(n_threads, 8) if remote_run else n_threads
            with (
                ThreadPoolExecutor(workers, thread_name_prefix="fastckpt-report") as pool,
                Progress("report: changes", compare_total, enabled=progress) as bar,
            ):
                per_pair, bytes_read = _changes(facts, keys, sources, pool, bar.update)
            for i, res in enumerate(per_pair, start=1):
                ok = [e for e in res.values() if e.get("status") in ("compared", "equal")]
                sd = sum(e["sq_diff"] for e in ok)
                sa = sum(e["sq_a"] for e in ok)
                pairs_json.append(
                    {
                        "from": i - 1,
                        "to": i,
                        "from_step": facts[i - 1].ckpt.step,
                        "to_step": facts[i].ckpt.step,
                        "relative_change": relative_change(sd, sa),
                        "tensors_compared": len(ok),
                        "tensors_unchanged": sum(1 for e in ok if e["status"] == "equal"),
                        "tensors_skipped": len(res) - len(ok),
                    }
                )
        timings["change"] = time.perf_counter() - t

        t = time.perf_counter()
        compression = _compression(facts, sources, sample_bytes, n_threads)
        timings["compression"] = time.perf_counter() - t
    finally:
        sources.close()

    # Per-tensor table: bytes, shared bytes (dedup) and relative change per pair, in model order.
    tensor_rows: dict[str, dict[str, Any]] = {}
    for ci, cf in enumerate(facts):
        by_file: dict[int, list[tuple[str, Span]]] = {}
        for key, (fi, s) in cf.tensors.items():
            by_file.setdefault(fi, []).append((key, s))
        for fi, items in by_file.items():
            ff = cf.files[fi]
            shared = _shared_bytes_in_spans(masks[(ci, fi)], ff.file.size, leaf, [s for _, s in items])
            for (key, s), sh in zip(items, shared, strict=True):
                row = tensor_rows.setdefault(
                    key,
                    {
                        "key": key,
                        "dtype": s.dtype,
                        "shape": list(s.shape),
                        "bytes": 0,
                        "shared_bytes": 0,
                        "checkpoints": 0,
                    },
                )
                row["bytes"] += s.nbytes
                row["shared_bytes"] += sh
                row["checkpoints"] += 1
                row["dtype"], row["shape"] = s.dtype, list(s.shape)
    tensors_json = []
    for key in keys:
        row = tensor_rows[key]
        row["shared_fraction"] = row["shared_bytes"] / row["bytes"] if row["bytes"] else 0.0
        changes: list[float | None] = []
        unchanged = 0
        for res in per_pair:
            e = res.get(key)
            if e is None or e.get("status") not in ("compared", "equal"):
                changes.append(None)
                continue
            rc = relative_change(e["sq_diff"], e["sq_a"])
            if e["sq_diff"] == 0.0:
                unchanged += 1
            changes.append(rc)
        row["relative_change"] = changes
        row["unchanged_pairs"] = unchanged
        tensors_json.append(row)
    dedup["tensors"] = tensors_json

    sizes = [c.size for c in ckpts]
    checkpoints_json = []
    for i, cf in enumerate(facts):
        c = cf.ckpt
        srcs = {ff.digest_source for ff in cf.files}
        checkpoints_json.append(
            {
                "index": i,
                "path": c.path,
                "name": c.name,
                "kind": c.kind,
                "step": c.step,
                "epoch": c.epoch,
                "size": c.size,
                "files": len(c.files),
                "mtime": c.mtime,
                "tensors": len(cf.tensors),
                "digests": srcs.pop() if len(srcs) == 1 else ("mixed" if srcs else None),
                "format": next((ff.format for ff in cf.files if ff.format), None),
            }
        )
    interval = _interval(facts, mtbf_hours, save_seconds)
    total = sum(sizes)
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "run": run,
        "checkpoints": checkpoints_json,
        "size": {"total_bytes": total, "checkpoints": len(ckpts), "growth": _growth(facts)},
        "dedup": dedup,
        "change": {
            "method": "native-sumsq",
            "bytes_read": bytes_read,
            "pairs": pairs_json,
            "heatmap": _heatmap(keys, per_pair),
        },
        "compression": compression,
        "interval": interval,
        "cost": _cost(
            total,
            dedup["unique_bytes"],
            compression["estimated_compressed_bytes"],
            sizes,
            price_usd_per_gb_month,
        ),
        "warnings": warnings,
        "timings": timings,
    }
    timings["total"] = time.perf_counter() - t0
    return report
