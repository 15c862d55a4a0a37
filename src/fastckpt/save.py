"""Protected saving and verified loading: `fastckpt.save`, `fastckpt.load`, `fastckpt.save_safetensors`.

`save` is a drop-in for `torch.save(obj, path)` that
- writes to a temp file in the destination folder and renames it into place (after fsync of the
  file and the folder), so the path never holds a partial checkpoint;
- computes the sidecar's leaf digests while torch writes the bytes (no second read) and writes the
  sidecar `PATH.fastckpt` that `fastckpt protect PATH` would write, with parity when asked for;
- for tensors on a GPU, hashes them on the device before torch copies them to the host and checks
  those digests against the digests of the bytes written, which catches device-to-disk corruption;
- optionally reads the file back from the storage device and checks it (`verify=True`).

`load` verifies first (through the sidecar when there is one: a native re-hash, no torch; else the
format's structural checks) and only then calls `torch.load(weights_only=True)`. Damage raises
`CorruptCheckpointError`. Nothing here imports torch at module level.
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _native
from ._writer import (
    HashingFile,
    LeafHasher,
    SealedManifest,
    TempFile,
    build_manifest,
    commit,
    default_redundancy,
    drop_cache,
    merge_ranges,
    sidecar_bytes,
)
from .digest import DEFAULT_LEAF_SIZE, check_leaf_size, digest_from_leaves, dtype_name, iter_tensors
from .errors import CorruptCheckpointError, InputError, UsageError
from .sidecar import encode_sidecar, sidecar_path_for

__all__ = ["CorruptCheckpointError", "SaveInfo", "check", "load", "save", "save_safetensors"]

# Writes of the in-memory safetensors image are cut at tensor boundaries and at most this long.
_SAFETENSORS_WRITE = 256 << 20


@dataclass(frozen=True)
class SaveInfo:
    """What a protected save wrote. `digest` is the file's byte-range digest (`fastckpt hash PATH`)."""

    path: str
    sidecar: str | None
    size: int
    digest: str
    leaf_size: int
    format: str
    tensors: int
    redundancy: float
    parity_bytes: int
    device_checked: int
    reread_bytes: int
    verified: bool


# ---------------------------------------------------------------------------------------------
# Device-to-disk check
# ---------------------------------------------------------------------------------------------


def _needs_device_check(t: Any) -> bool:
    """Tensors whose bytes cross a device-to-host copy on their way into the file."""
    return t.device.type not in ("cpu", "meta")


def _device_leaf_digests(tensors: list[Any], leaf_size: int, threads: int) -> list[tuple[bytes, int]]:
    """Leaf digests of tensors where they live (the GPU backend for CUDA tensors when usable)."""
    from ._tensors import state_dict_leaf_digests

    return state_dict_leaf_digests(tensors, leaf_size, threads)


class _DeviceCheck:
    """Digests of device tensors taken before the save, compared with the written file afterwards."""

    def __init__(self, items: list[tuple[str, Any]], leaf_size: int, threads: int) -> None:
        import torch

        self.leaf_size = leaf_size
        self.threads = threads
        self.items = [
            (k, t)
            for k, t in items
            if type(t) in (torch.Tensor, torch.nn.Parameter) and _needs_device_check(t)
        ]
        dense = [(k, t) for k, t in self.items if t.is_contiguous() and t.numel() > 0]
        self.before: dict[str, int] = {}
        if dense:
            leaves = _device_leaf_digests([t for _, t in dense], leaf_size, threads)
            for (k, t), (lb, nb) in zip(dense, leaves, strict=True):
                self.before[k] = digest_from_leaves(
                    lb, leaf_size, nb, dtype_name(t.dtype), tuple(t.shape)
                ).value

    def __len__(self) -> int:
        return len(self.items)

    def _storage_digest(self, t: Any, e: Any) -> int:
        """The digest the sidecar entry `e` holds, computed on t's device from t's storage bytes
        [first element, first element + e.nbytes): for views whose file bytes are not t's logical
        row-major bytes (RAW_RANGE entries, or e.g. a transposed full view)."""
        import torch

        start = t.storage_offset() * t.element_size()
        if start + e.nbytes > t.untyped_storage().nbytes():
            return -1
        raw = torch.empty(0, dtype=torch.uint8, device=t.device)
        raw.set_(t.untyped_storage(), start, (e.nbytes,), (1,))
        ((lb, nb),) = _device_leaf_digests([raw], self.leaf_size, self.threads)
        if e.raw_range:
            return digest_from_leaves(lb, self.leaf_size, nb).value
        return digest_from_leaves(lb, self.leaf_size, nb, e.dtype, e.shape).value

    def check(self, path: str, sealed: SealedManifest) -> int:
        """Raises CorruptCheckpointError when a device tensor's bytes in the file differ from the
        device's; returns the number of tensors checked."""
        entries = {e.key: e for e in sealed.manifest.tensors}
        bad: list[str] = []
        unmatched: list[str] = []
        checked = 0
        for key, t in self.items:
            e = entries.get(key)
            if e is None or t.numel() == 0:
                if e is None:
                    unmatched.append(key)
                continue
            want = self.before[key] if key in self.before and not e.raw_range else self._storage_digest(t, e)
            checked += 1
            if want != e.digest:
                bad.append(key)
        if unmatched:
            warnings.warn(
                f"fastckpt.save: {len(unmatched)} device tensor(s) could not be matched to the file's tensors "
                f"and were not checked against the device (e.g. {unmatched[0]!r})",
                RuntimeWarning,
                stacklevel=4,
            )
        if bad:
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise CorruptCheckpointError(
                path,
                bad,
                f"{path}: device-to-disk corruption: the bytes written for {len(bad)} tensor(s) differ from "
                f"the same tensors hashed on their device before the copy to the host: {shown}. "
                f"Nothing was written to {path} (it still holds the previous version, if any); "
                "check the GPU and host memory (e.g. ECC errors) and save again.",
            )
        return checked


# ---------------------------------------------------------------------------------------------
# Sealing: manifest, device check, parity, read-back, commit
# ---------------------------------------------------------------------------------------------


def _check_path(f: Any, what: str) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    raise UsageError(
        f"{what} needs a file path (str or os.PathLike), got {type(f).__name__}: an atomic, protected save "
        "renames a temp file into place, which a file object cannot do; use torch.save for file objects"
    )


def _check_redundancy(redundancy: float | None) -> float:
    if redundancy is None:
        return default_redundancy()
    if isinstance(redundancy, bool) or not isinstance(redundancy, (int, float)) or redundancy < 0:
        raise UsageError(f"redundancy must be a percentage >= 0 (0 = no parity), got {redundancy!r}")
    return float(redundancy)


def _read_back(tmp: TempFile, sealed: SealedManifest, threads: int) -> None:
    """Re-reads the finished temp file (from the device when it was fsynced) and compares leaves."""
    from .verify import damaged_leaves, merge_runs

    m = sealed.manifest
    if tmp.fd is not None:
        drop_cache(tmp.fd)
    size, leaves = _native.hash_file(tmp.path, m.leaf_size, threads)
    bad = damaged_leaves(leaves, m.leaf_bytes)
    if not bad and size == m.file_size:
        return
    runs = merge_runs(bad, m.leaf_size, max(size, m.file_size))
    hit = []
    for off, n in runs:
        hit += [
            e.key for e in m.tensors if e.offset < off + n and e.offset + e.nbytes > off and e.key not in hit
        ]
    if size != m.file_size:
        hit.append(f"<size {size}, expected {m.file_size}>")
    raise CorruptCheckpointError(
        tmp.final,
        hit or [f"<bytes [{runs[0][0]}, {runs[0][0] + runs[0][1]})>"],
        f"{tmp.final}: read-back after writing found {len(bad)} damaged leaves in {len(runs)} region(s) "
        f"(tensors hit: {', '.join(hit[:8]) or 'none'}); the storage did not keep what was written. "
        f"Nothing was written to {tmp.final} (it still holds the previous version, if any).",
    )


def _background_fsync(fd: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastckpt-fsync")
    try:
        return pool.submit(os.fsync, fd)
    finally:
        pool.shutdown(wait=False)


def _seal(
    tmp: TempFile,
    hasher: LeafHasher,
    *,
    layout: Any = None,
    device: _DeviceCheck | None,
    redundancy: float,
    verify: bool,
    fsync: bool,
    sidecar: bool,
    threads: int,
) -> SaveInfo:
    sealed = build_manifest(tmp.path, tmp.final, hasher, layout=layout, threads=threads)
    m = sealed.manifest
    problems = [p for p in sealed.layout.problems if p.kind != "unsafe-pickle"]
    if problems:
        p = problems[0]
        raise InputError(
            tmp.final,
            p.offset,
            f"a well-formed {m.format} file from the serializer, but the reader found: {p.message}",
        )
    if m.unsafe:
        warnings.warn(
            f"fastckpt.save: {tmp.final} pickles globals that weights_only loading refuses ({', '.join(m.unsafe[:5])}); "
            "fastckpt.load and fastckpt verify will report them",
            RuntimeWarning,
            stacklevel=3,
        )
    checked = device.check(tmp.final, sealed) if device is not None else 0
    parity_bytes = 0
    data: bytes | None = None
    if sidecar and redundancy > 0:
        # The file's fsync (disk-bound) runs while parity is encoded from the page cache.
        syncing = _background_fsync(tmp.fd) if fsync and tmp.fd is not None else None
        try:
            data, parity_bytes = sidecar_bytes(m, tmp.path, redundancy, threads=threads)
        finally:
            if syncing is not None:
                syncing.result()
    else:
        if fsync and tmp.fd is not None:
            os.fsync(tmp.fd)
        if sidecar:
            data = encode_sidecar(m)
    if verify:
        _read_back(tmp, sealed, threads)
    tmp.close_fd()
    commit(tmp, data, fsync=fsync)
    return SaveInfo(
        path=tmp.final,
        sidecar=sidecar_path_for(tmp.final) if sidecar else None,
        size=m.file_size,
        digest=f"{m.file_digest:032x}",
        leaf_size=m.leaf_size,
        format=m.format,
        tensors=len(m.tensors),
        redundancy=redundancy,
        parity_bytes=parity_bytes,
        device_checked=checked,
        reread_bytes=sealed.reread_bytes,
        verified=verify,
    )


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def save(
    obj: Any,
    f: str | os.PathLike[str],
    pickle_module: Any = None,
    pickle_protocol: int = 2,
    _use_new_zipfile_serialization: bool = True,
    _disable_byteorder_record: bool = False,
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    redundancy: float | None = None,
    verify: bool = False,
    fsync: bool = True,
    sidecar: bool = True,
    check_device: bool = True,
) -> SaveInfo:
    """`torch.save(obj, f)`, written atomically with its sidecar `f.fastckpt`.

    Options (keyword-only):
      leaf_size: sidecar leaf size (power of two, default 65536).
      threads: hashing threads (0 = all cores).
      redundancy: parity in percent of the file (None = `fastckpt protect`'s default; 0 = none).
      verify: after writing, read the file back (from the device: its cached pages are dropped
        after the fsync) and compare every leaf; raises CorruptCheckpointError on a mismatch.
      fsync: make the file, the sidecar and the renames durable (default True). Without it the save
        is still atomic with respect to crashes of the process, not of the machine.
      sidecar: write `f.fastckpt` (default True).
      check_device: hash GPU tensors on their device before the save and compare (default True).

    On any error the destination is untouched (the previous file, if any, stays in place).
    """
    import pickle

    import torch

    path = _check_path(f, "fastckpt.save")
    check_leaf_size(leaf_size)
    red = _check_redundancy(redundancy)
    device = _DeviceCheck(list(iter_tensors(obj)), leaf_size, threads) if check_device else None
    if device is not None and not len(device):
        device = None
    stable = _cpu_storage_ranges(obj)
    hasher = LeafHasher(leaf_size, threads, background=bool(stable))
    try:
        with TempFile(path) as tmp:
            assert tmp.fd is not None
            with HashingFile(tmp.fd, hasher, name=tmp.path, stable_ranges=stable) as out:
                torch.save(
                    obj,
                    out,  # type: ignore[arg-type]
                    pickle_module=pickle if pickle_module is None else pickle_module,
                    pickle_protocol=pickle_protocol,
                    _use_new_zipfile_serialization=_use_new_zipfile_serialization,
                    _disable_byteorder_record=_disable_byteorder_record,
                )
            return _seal(
                tmp,
                hasher,
                device=device,
                redundancy=red,
                verify=verify,
                fsync=fsync,
                sidecar=sidecar,
                threads=threads,
            )
    finally:
        hasher.close()


def _cpu_storage_ranges(obj: Any) -> list[tuple[int, int]]:
    """Address ranges of the CPU storages in `obj`: torch writes them to the file straight from this
    memory, which stays valid (the caller holds `obj`) while they are hashed in the background."""
    ranges = []
    for _, t in iter_tensors(obj):
        if t.device.type != "cpu" or t.is_sparse or t.is_quantized:
            continue
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            continue
        if s.nbytes():
            ranges.append((s.data_ptr(), s.data_ptr() + s.nbytes()))
    return merge_ranges(ranges)


def save_safetensors(
    tensors: Mapping[str, Any],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
    redundancy: float | None = None,
    verify: bool = False,
    fsync: bool = True,
    sidecar: bool = True,
    check_device: bool = True,
) -> SaveInfo:
    """`safetensors.torch.save_file(tensors, path, metadata)` with the guarantees of `save`.

    The safetensors package serializes the file in memory (as `safetensors.torch.save` does); it is
    then written in pieces cut at tensor boundaries, so every tensor digest comes from the write.
    Options as for `save`.
    """
    import json

    try:
        from safetensors.torch import save as st_save
    except ImportError:
        raise UsageError(
            "fastckpt.save_safetensors needs the safetensors package: pip install 'fastckpt[safetensors]'"
        ) from None
    fspath = _check_path(path, "fastckpt.save_safetensors")
    check_leaf_size(leaf_size)
    red = _check_redundancy(redundancy)
    if not isinstance(tensors, Mapping):
        raise UsageError(f"save_safetensors expects a dict of name -> tensor, got {type(tensors).__name__}")
    device = _DeviceCheck(list(tensors.items()), leaf_size, threads) if check_device else None
    if device is not None and not len(device):
        device = None
    image = st_save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    view = memoryview(image)
    header_len = int.from_bytes(view[:8], "little")
    header = json.loads(bytes(view[8 : 8 + header_len]))
    base = 8 + header_len
    cuts = sorted(
        {base + int(v["data_offsets"][0]) for k, v in header.items() if k != "__metadata__"}
        | {0, base, len(view)}
    )
    # Every write here starts a tensor (or the header): keep write-relative digests for all of them.
    hasher = LeafHasher(leaf_size, threads, chunk_min=1)
    with TempFile(fspath) as tmp:
        assert tmp.fd is not None
        with HashingFile(tmp.fd, hasher, name=tmp.path) as out:
            for a, b in itertools.pairwise(cuts):
                for s in range(a, b, _SAFETENSORS_WRITE):
                    out.write(view[s : min(b, s + _SAFETENSORS_WRITE)])
        view.release()
        del image
        return _seal(
            tmp,
            hasher,
            device=device,
            redundancy=red,
            verify=verify,
            fsync=fsync,
            sidecar=sidecar,
            threads=threads,
        )


def _tensor_mismatches(path: str, sidecar: str, keys: list[str]) -> list[str] | None:
    """Which of `keys` (tensors of `path` hit by a damaged leaf) no longer match their own digest,
    or None when the sidecar cannot say."""
    import mmap

    from .sidecar import FileManifest, read_sidecar

    try:
        m = read_sidecar(sidecar).manifest
        if not isinstance(m, FileManifest):
            return None
        entries = {e.key: e for e in m.tensor_entries()}
        size = os.path.getsize(path)
    except (InputError, OSError):
        return None
    bad = []
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        try:
            for key in keys:
                e = entries.get(key)
                if e is None or e.offset + e.nbytes > size or mm is None:
                    bad.append(key)
                    continue
                with memoryview(mm)[e.offset : e.offset + e.nbytes] as region:
                    leaves = _native.leaf_digests(region, m.leaf_size)
                if e.raw_range:
                    got = digest_from_leaves(leaves, m.leaf_size, e.nbytes).value
                else:
                    got = digest_from_leaves(leaves, m.leaf_size, e.nbytes, e.dtype, e.shape).value
                if got != e.digest:
                    bad.append(key)
        finally:
            if mm is not None:
                mm.close()
    return bad


def _exact_tensors(path: str, report: dict[str, Any]) -> dict[int, list[str]] | None:
    """For a sidecar report: per damaged region, the tensors whose own digest no longer matches.

    A damaged leaf (64 KiB by default) can hold many small tensors; re-hashing just the candidates
    (bytes already located, usually few) tells which of them actually changed. For a folder report
    the regions carry their `file`, and keys are returned as `file:key`."""
    if not report.get("manifest"):
        return None
    out: dict[int, list[str]] = {}
    for i, d in enumerate(report.get("damaged", [])):
        keys = list(d.get("tensors", []))
        if "file" in d:
            fpath = os.path.join(path, d["file"])
            sidecar = sidecar_path_for(fpath)
            exact = _tensor_mismatches(fpath, sidecar, keys) if keys and os.path.exists(sidecar) else None
            out[i] = [f"{d['file']}:{k}" for k in (keys if exact is None else exact)]
        elif report.get("sidecar"):
            exact = _tensor_mismatches(path, report["sidecar"], keys) if keys else []
            out[i] = keys if exact is None else exact
        else:
            return None
    return out


def _bad_records(path: str, report: dict[str, Any], region: dict[str, Any]) -> list[str]:
    """Segments named by the zip reader's CRC-32 failures inside a damaged region (zip files only)."""
    if report.get("format") not in ("torch-zip", "zip") or not report.get("manifest") or "file" in region:
        return []
    from ._layout import read_layout

    try:
        layout = read_layout(path, check_crc=True)
    except (InputError, OSError):
        return []
    lo, hi = region["offset"], region["offset"] + region["length"]
    out: list[str] = []
    for p in layout.problems:
        if p.kind != "bad-crc" or p.offset is None or not lo <= p.offset < hi:
            continue
        for s in layout.segments:
            if s.offset <= p.offset < s.offset + s.length:
                name = f"{s.kind} {s.name}" if s.name else s.kind
                if name not in out:
                    out.append(name)
    return out


def _damage_list(path: str, report: dict[str, Any]) -> list[str]:
    names: list[str] = []

    def add(s: str) -> None:
        if s not in names:
            names.append(s)

    exact = _exact_tensors(path, report)
    for i, d in enumerate(report.get("damaged", [])):
        tensors = d.get("tensors", []) if exact is None else exact.get(i, [])
        if exact is None and "file" in d:
            tensors = [f"{d['file']}:{t}" for t in tensors]
        for t in tensors:
            add(t)
        if not tensors:
            # The damage is outside every tensor's bytes: name the zip records whose CRC-32 fails
            # in the region, else the region's other segments.
            segs = _bad_records(path, report, d) or [
                f"{s['kind']} {s['name']}" if s.get("name") else s["kind"]
                for s in d.get("segments", [])
                if s["kind"] != "tensor-data" or not d.get("tensors")
            ]
            if len(segs) > 4:
                segs = [*segs[:4], f"... {len(segs) - 4} more segments"]
            add(f"<{', '.join(segs)}>" if segs else f"<bytes [{d['offset']}, {d['offset'] + d['length']})>")
    if report.get("truncated"):
        add(f"<truncated: {report.get('size')} of {report.get('expected_size')} bytes>")
    for p in report.get("problems", []):
        if p["kind"] == "size-mismatch":
            add(f"<{p['message']}>")
    return names


def corrupt_error(path: str, report: dict[str, Any]) -> CorruptCheckpointError:
    """The CorruptCheckpointError for a failed verify report (`fastckpt verify --json` object)."""
    damaged = _damage_list(path, report)
    tensors = [d for d in damaged if not d.startswith("<")]
    other = [d for d in damaged if d.startswith("<")]
    parts = []
    if tensors:
        shown = ", ".join(tensors[:10]) + (f" and {len(tensors) - 10} more" if len(tensors) > 10 else "")
        parts.append(f"{len(tensors)} damaged tensor(s): {shown}")
    if other:
        parts.append(
            "also " + "; ".join(o.strip("<>") for o in other[:5])
            if tensors
            else "; ".join(o.strip("<>") for o in other[:5])
        )
    if not parts:
        msgs = [p["message"] for p in report.get("problems", [])]
        parts.append("; ".join(msgs[:3]) or "verification failed")
    how = "sidecar" if report.get("manifest") else "structural check (no sidecar)"
    q = shlex.quote(path)
    message = (
        f"{path} is damaged ({how}): {'; '.join(parts)}. Not loaded. "
        f"To repair it in place run `fastckpt repair {q}` (rebuilds damaged leaves from the sidecar's parity; "
        f"add `--from OTHER` to copy intact leaves from another copy of the checkpoint); "
        f"`fastckpt verify {q}` shows every damaged byte range."
    )
    return CorruptCheckpointError(path, damaged, message, report)


def check(path: str | os.PathLike[str], *, threads: int = 0, require_sidecar: bool = False) -> dict[str, Any]:
    """Verifies a checkpoint file (sidecar fast path, else structural) and returns the verify report;
    raises CorruptCheckpointError when it is damaged. Never imports torch."""
    from .verify import verify_structural, verify_with_sidecar

    fspath = os.fspath(path)
    if not os.path.exists(fspath):
        raise FileNotFoundError(2, "No such file or directory", fspath)
    spath = sidecar_path_for(fspath)
    report = None
    if os.path.exists(spath):
        try:
            report = verify_with_sidecar(fspath, spath, threads=threads)
        except InputError as e:
            if e.path != spath:
                raise
            warnings.warn(
                f"fastckpt: unusable sidecar ({e}); falling back to a structural check",
                RuntimeWarning,
                stacklevel=3,
            )
    if report is None:
        if require_sidecar:
            raise CorruptCheckpointError(
                fspath,
                [],
                f"{fspath}: no usable sidecar ({spath}); run `fastckpt protect {shlex.quote(fspath)}`",
            )
        report = verify_structural(fspath)
    if not report["ok"]:
        only_unsafe = (
            report.get("unsafe")
            and not report.get("damaged")
            and not report.get("truncated")
            and all(p["kind"] == "unsafe-pickle" for p in report.get("problems", []))
        )
        if only_unsafe:
            raise InputError(
                fspath,
                None,
                "a checkpoint that loads with weights_only=True, but its pickle would call "
                f"{', '.join(report['unsafe'])} (not executed)",
            )
        raise corrupt_error(fspath, report)
    return report


def load(
    f: str | os.PathLike[str],
    verify: bool = True,
    *,
    map_location: Any = None,
    threads: int = 0,
    require_sidecar: bool = False,
    **kwargs: Any,
) -> Any:
    """Verifies `f`, then `torch.load(f, weights_only=True, map_location=..., **kwargs)`.

    A `.safetensors` file is loaded with safetensors (device = map_location or "cpu").
    Raises CorruptCheckpointError (a RuntimeError) when verification finds damage; its `damaged`
    attribute lists the damaged tensors. `weights_only=False` is refused: fastckpt never runs code
    from a checkpoint.
    """
    fspath = _check_path(f, "fastckpt.load")
    if kwargs.pop("weights_only", True) is not True:
        raise UsageError(
            "fastckpt.load always loads with weights_only=True (it never runs code from a checkpoint)"
        )
    if verify:
        report = check(fspath, threads=threads, require_sidecar=require_sidecar)
        fmt = report.get("format")
    else:
        fmt = None
    if fmt == "safetensors" or (fmt is None and fspath.endswith(".safetensors")):
        from safetensors.torch import load_file

        return load_file(fspath, device=str(map_location) if map_location is not None else "cpu")
    import torch

    return torch.load(fspath, map_location=map_location, weights_only=True, **kwargs)


class _CallableModule(types.ModuleType):
    """`fastckpt.save` is this module's `save` function; if the submodule object ever shadows it
    (e.g. `import fastckpt.save as m`), calling the module still saves."""

    def __call__(self, *args: Any, **kwargs: Any) -> SaveInfo:
        return save(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
