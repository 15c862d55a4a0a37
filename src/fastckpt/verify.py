"""`verify`: checks a file or checkpoint folder and locates damage (docs/CLI.md has the JSON).

With a sidecar, only the sidecar and the file are read: every leaf is re-hashed natively on all
cores and compared; differing leaves are merged into byte runs and mapped through the sidecar's
TENSORS and SEGMENTS to tensor keys, element ranges and segments. torch is never imported on that
path. Without a sidecar, the format reader's structural checks (zip records and CRC-32,
safetensors offsets, DCP metadata) are reported instead.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from typing import Any

from .digest import PROGRESS_MIN_BYTES  # files this large get a bar during the structural CRC-32 pass
from .errors import FastckptError, InputError
from .sidecar import (
    DIR_MANIFEST_NAME,
    KIND_DIRECTORY,
    KIND_FILE,
    SIDECAR_SUFFIX,
    DirManifest,
    FileManifest,
    SidecarFile,
    read_sidecar,
    sidecar_path_for,
)

STRUCTURAL_NOTE = "no manifest: structural check only"
UNKNOWN_FORMAT = "unknown format: protect it to verify it"


def _base_report(path: str) -> dict[str, Any]:
    return {
        "ok": False,
        "path": path,
        "format": None,
        "manifest": False,
        "check": None,
        "sidecar": None,
        "size": None,
        "expected_size": None,
        "truncated": False,
        "unsafe": [],
        "sidecar_damaged": False,
        "damaged": [],
        "problems": [],
        "warnings": [],
        "leaf_size": None,
        "leaves_checked": 0,
    }


# ---------------------------------------------------------------------------------------------
# Locating damage
# ---------------------------------------------------------------------------------------------


def damaged_leaves(actual: bytes, expected: bytes) -> list[int]:
    """Indices of the leaves that differ; a leaf present on one side only counts as differing."""
    n_act, n_exp = len(actual) // 8, len(expected) // 8
    common = min(n_act, n_exp)
    out: list[int] = []
    if actual[: 8 * common] != expected[: 8 * common]:
        # Compare in blocks (memcmp) and look inside a block only when it differs.
        step = 8 * 4096
        for start in range(0, 8 * common, step):
            stop = min(start + step, 8 * common)
            a, e = actual[start:stop], expected[start:stop]
            if a != e:
                qa, qe = memoryview(a).cast("Q"), memoryview(e).cast("Q")
                out.extend(start // 8 + i for i in range(len(qa)) if qa[i] != qe[i])
    out.extend(range(common, max(n_act, n_exp)))
    return out


def merge_runs(leaves: list[int], leaf_size: int, end: int) -> list[tuple[int, int]]:
    """Merges sorted leaf indices into contiguous byte runs (offset, length), clipped to `end`."""
    runs: list[tuple[int, int]] = []
    for i in leaves:
        lo, hi = i * leaf_size, min((i + 1) * leaf_size, end)
        if runs and runs[-1][0] + runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi - runs[-1][0])
        else:
            runs.append((lo, hi - lo))
    return runs


class _SpanIndex:
    """Finds the tensors (or segments) overlapping a byte range; tensors may overlap each other."""

    def __init__(self, items: list[Any], length_attr: str) -> None:
        self.items = sorted(items, key=lambda t: t.offset)
        self.starts = [t.offset for t in self.items]
        self.length_attr = length_attr
        self.max_len = max((getattr(t, length_attr) for t in self.items), default=0)

    def hits(self, offset: int, length: int) -> list[Any]:
        if length <= 0:
            return []
        end = offset + length
        lo = bisect.bisect_left(self.starts, offset - self.max_len)
        hi = bisect.bisect_left(self.starts, end)
        out = []
        for t in self.items[lo:hi]:
            n = getattr(t, self.length_attr)
            if t.offset < end and t.offset + n > offset and (n > 0 or t.offset >= offset):
                out.append(t)
        return out


def describe_region(
    offset: int, length: int, tensors: _SpanIndex | None, segments: _SpanIndex | None
) -> dict[str, Any]:
    """One entry of `damaged`: the byte run, tensor keys hit with element ranges, segments hit."""
    entry: dict[str, Any] = {
        "offset": offset,
        "length": length,
        "tensors": [],
        "elements": [],
        "segments": [],
    }
    if tensors is not None:
        seen: set[str] = set()
        for t in tensors.hits(offset, length):
            lo, hi = max(offset, t.offset), min(offset + length, t.offset + t.nbytes)
            size = max(t.itemsize, 1)
            start, stop = (lo - t.offset) // size, -(-(hi - t.offset) // size)
            if t.key not in seen:
                seen.add(t.key)
                entry["tensors"].append(t.key)
            entry["elements"].append({"tensor": t.key, "start": start, "stop": stop})
    if segments is not None:
        for s in segments.hits(offset, length):
            entry["segments"].append({"kind": s.kind, "name": s.name, "offset": s.offset, "length": s.length})
    return entry


# ---------------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------------


def verify_with_sidecar(
    path: str,
    sidecar: str | SidecarFile,
    *,
    threads: int = 0,
    progress: bool = False,
    digest: Any = None,
) -> dict[str, Any]:
    """Checks every leaf of `path` against its sidecar. Reads only these two files.

    `digest`: the file's v1 digest when the caller already hashed it (remote objects are hashed
    while they stream in, see fastckpt.remote_verify); then `path` is not read here."""
    from .digest import hash_file

    sc = sidecar if isinstance(sidecar, SidecarFile) else read_sidecar(sidecar, expect_kind=KIND_FILE)
    m = sc.manifest
    assert isinstance(m, FileManifest)
    report = _base_report(path)
    report.update(
        manifest=True,
        check="manifest",
        sidecar=sc.path,
        format=m.format,
        expected_size=m.file_size,
        leaf_size=m.leaf_size,
        unsafe=list(m.unsafe),
        sidecar_damaged=sc.damaged,
    )
    if digest is None:
        if not os.path.exists(path):
            raise InputError(path, None, f"expected the file described by {sc.path}, but it does not exist")
        if os.path.isdir(path):
            raise InputError(path, None, f"expected a file (as described by {sc.path}), found a directory")
    # The parity is checked while the file is hashed: it is read from the disk (protect writes it
    # past the page cache), which then costs the hash no time where the disk keeps up.
    from .sidecar_parity import in_background, parity_problems

    parity_check = in_background(parity_problems, sc, threads=1)
    try:
        # digest: remote storage (report issue), hashed by the caller
        d = (
            digest
            if digest is not None
            else hash_file(path, leaf_size=m.leaf_size, threads=threads, progress=progress)
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the hash's error is the one to report
            parity_check.result()
        raise
    sidecar_problems = sc.problems() + parity_check.result()
    if sidecar_problems:
        report["sidecar_damaged"] = True
        report["sidecar_problems"] = sidecar_problems
        report["warnings"].append(
            f"{sc.path}: sidecar is damaged ({'; '.join(sidecar_problems)}); used copy {sc.used_copy}"
        )
    report["size"] = d.nbytes
    report["leaves_checked"] = len(d.leaf_bytes) // 8
    bad = damaged_leaves(d.leaf_bytes, m.leaf_bytes)
    if bad:
        tensors = _SpanIndex(m.tensor_entries(), "nbytes") if m.tensor_entries() else None
        segments = _SpanIndex(m.segment_entries(), "length") if m.segment_entries() else None
        runs = merge_runs(bad, m.leaf_size, max(d.nbytes, m.file_size))
        report["damaged"] = [describe_region(off, n, tensors, segments) for off, n in runs]
    if d.nbytes < m.file_size:
        report["truncated"] = True
        report["problems"].append(
            {
                "offset": d.nbytes,
                "kind": "truncated",
                "message": f"file is {d.nbytes} bytes, expected {m.file_size}: "
                f"truncated, the last {m.file_size - d.nbytes} bytes are missing",
            }
        )
    elif d.nbytes > m.file_size:
        report["problems"].append(
            {
                "offset": m.file_size,
                "kind": "size-mismatch",
                "message": f"file is {d.nbytes} bytes, expected {m.file_size}: "
                f"{d.nbytes - m.file_size} bytes were appended",
            }
        )
    if bad:
        total = sum(r["length"] for r in report["damaged"])
        report["problems"].append(
            {
                "offset": report["damaged"][0]["offset"],
                "kind": "damaged",
                "message": f"{len(bad)} of {max(len(d.leaf_bytes), len(m.leaf_bytes)) // 8} leaves differ "
                f"({len(report['damaged'])} region(s), {total} bytes)",
            }
        )
    for g in m.unsafe:
        report["problems"].append(
            {
                "offset": None,
                "kind": "unsafe-pickle",
                "message": f"pickle would call {g} when loaded (not executed)",
            }
        )
    report["digest"] = f"{d.value:032x}"
    report["expected_digest"] = f"{m.file_digest:032x}"
    report["ok"] = not bad and d.nbytes == m.file_size and d.value == m.file_digest and not m.unsafe
    return report


def verify_structural(path: str, *, progress: bool = False) -> dict[str, Any]:
    """Format-level checks without a manifest (zip records and CRC-32, safetensors header, ...).

    With `progress=True`, a local file of at least `PROGRESS_MIN_BYTES` shows a progress bar on
    stderr during the CRC-32 pass over its zip records (when stderr is a terminal)."""
    from . import _layout
    from ._url import is_url  # ---- remote storage (report issue)

    if is_url(path):
        from .remote import info

        size = info(path).size
    elif os.path.isdir(path):
        raise InputError(path, None, "expected a file, found a directory")
    else:
        size = os.path.getsize(path)
    if size == 0:
        raise InputError(path, 0, "expected a checkpoint, found an empty file (0 bytes)")
    if progress and size >= PROGRESS_MIN_BYTES and not is_url(path):
        from ._progress import Progress

        with Progress(f"verify {path} (CRC-32)", size) as bar:
            layout = _layout.read_layout(path, check_crc=True, progress=bar.update)
    else:
        layout = _layout.read_layout(path, check_crc=True)
    if layout.format == "opaque":
        raise InputError(path, None, UNKNOWN_FORMAT)
    report = _base_report(path)
    report.update(check="structural", format=layout.format, size=size, note=STRUCTURAL_NOTE)
    report["unsafe"] = sorted(set(layout.unsafe_globals))
    seg_index = _SpanIndex(list(layout.segments), "length") if layout.segments else None
    ten_index = _SpanIndex(list(layout.tensors), "nbytes") if layout.tensors else None
    expected = getattr(layout, "expected_size", None)
    report["expected_size"] = expected
    for p in layout.problems:
        report["problems"].append({"offset": p.offset, "kind": p.kind, "message": p.message})
        if p.kind == "truncated":
            report["truncated"] = True
        if p.kind == "bad-crc" and p.offset is not None and seg_index is not None:
            # The damaged range is the record (segment) whose CRC-32 does not match.
            hit = seg_index.hits(p.offset, 1)
            if hit:
                entry = describe_region(hit[0].offset, hit[0].length, ten_index, seg_index)
                if entry not in report["damaged"]:
                    report["damaged"].append(entry)
    if report["truncated"]:
        # Everything past the end of the file is lost: up to the size the reader expected, and at
        # least to the end of the last tensor it knows about.
        end = max([size, expected or 0, *(t.offset + t.nbytes for t in layout.tensors)])
        if end > size:
            report["damaged"].append(describe_region(size, end - size, ten_index, None))
    report["damaged"].sort(key=lambda d: d["offset"])
    report["ok"] = not layout.problems and not report["unsafe"]
    return report


def verify_file(
    path: str | os.PathLike[str], *, sidecar: str | None = None, threads: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Verifies one file: with its sidecar when there is one (or `sidecar` is given), else structurally."""
    fspath = os.fspath(path)
    if fspath.endswith(SIDECAR_SUFFIX) and sidecar is None and os.path.isfile(fspath):
        raise InputError(
            fspath,
            None,
            f"expected a checkpoint, found a fastckpt sidecar: verify {fspath[: -len(SIDECAR_SUFFIX)]}",
        )
    spath = sidecar or sidecar_path_for(fspath)
    if sidecar is not None or os.path.exists(spath):
        return verify_with_sidecar(fspath, spath, threads=threads, progress=progress)
    if not os.path.exists(fspath):
        raise InputError(fspath, None, "expected a file or directory to verify, but it does not exist")
    return verify_structural(fspath, progress=progress)


# ---------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------


def _file_error_report(path: str, err: FastckptError | OSError) -> dict[str, Any]:
    report = _base_report(path)
    message = str(err) if isinstance(err, FastckptError) else f"{err.filename or path}: {err.strerror or err}"
    report["error"] = message
    report["problems"].append(
        {"offset": getattr(err, "offset", None), "kind": "unreadable", "message": message}
    )
    return report


def _missing_report(path: str, expected_size: int | None) -> dict[str, Any]:
    report = _base_report(path)
    report.update(size=None, expected_size=expected_size, missing=True, truncated=False)
    report["problems"].append({"offset": None, "kind": "missing-file", "message": "file is missing"})
    return report


def _digest_only_report(
    path: str, entry: Any, leaf_size: int, threads: int, progress: bool
) -> dict[str, Any]:
    """A listed file whose own sidecar is gone: the directory manifest still has its size and digest."""
    from .digest import hash_file

    report = _base_report(path)
    d = hash_file(path, leaf_size=leaf_size, threads=threads, progress=progress)
    report.update(
        manifest=True, check="directory-digest", size=d.nbytes, expected_size=entry.size, leaf_size=leaf_size
    )
    report["leaves_checked"] = len(d.leaf_bytes) // 8
    report["warnings"].append(
        f"{path}: no sidecar; checked the whole-file digest from {DIR_MANIFEST_NAME} only"
    )
    if d.nbytes < entry.size:
        report["truncated"] = True
        report["problems"].append(
            {
                "offset": d.nbytes,
                "kind": "truncated",
                "message": f"file is {d.nbytes} bytes, expected {entry.size}",
            }
        )
    if d.value != entry.digest:
        report["damaged"].append(
            {"offset": 0, "length": max(d.nbytes, entry.size), "tensors": [], "elements": [], "segments": []}
        )
        report["problems"].append(
            {
                "offset": None,
                "kind": "damaged",
                "message": "whole-file digest differs (no sidecar to locate the damage)",
            }
        )
    report["ok"] = d.value == entry.digest and d.nbytes == entry.size
    return report


def _folder_file_report(path: str, fmt: str, folder_problems: list[dict[str, Any]]) -> dict[str, Any]:
    """A folder metadata file without a sidecar: the folder reader has checked it (its problems
    are reported for the folder)."""
    report = _base_report(path)
    report.update(check="folder", format=fmt, size=os.path.getsize(path))
    report["ok"] = not any(p["kind"] == "bad-header" for p in folder_problems)
    return report


def verify_dir(path: str | os.PathLike[str], *, threads: int = 0, progress: bool = False) -> dict[str, Any]:
    """Verifies every file of a checkpoint folder, plus missing, extra and short files."""
    from ._layout import folder_file_format, read_dir_layout, walk_files

    root = os.fspath(path)
    report = _base_report(root)
    report.update(missing=[], extra=[], unreadable=[], files=[])
    mpath = os.path.join(root, DIR_MANIFEST_NAME)
    on_disk = list(walk_files(root))
    listed: dict[str, Any] = {}
    dir_manifest: DirManifest | None = None
    if os.path.exists(mpath):
        sc = read_sidecar(mpath, expect_kind=KIND_DIRECTORY)
        assert isinstance(sc.manifest, DirManifest)
        dir_manifest = sc.manifest
        listed = {e.path: e for e in dir_manifest.entries}
        report.update(manifest=True, check="manifest", sidecar=mpath, format=dir_manifest.format)
        if sc.damaged:
            report["sidecar_damaged"] = True
            report["warnings"].append(
                f"{mpath}: directory manifest is damaged ({'; '.join(sc.problems())}); "
                f"used copy {sc.used_copy}"
            )
        expected = list(listed)
    else:
        dir_layout = read_dir_layout(root)
        with_sidecar = [rel for rel in on_disk if os.path.exists(sidecar_path_for(os.path.join(root, rel)))]
        if dir_layout is not None:
            report["format"] = dir_layout.format
            for p in dir_layout.problems:
                report["problems"].append({"offset": p.offset, "kind": p.kind, "message": p.message})
            missing = list(getattr(dir_layout, "missing_files", []))
            # Checkpoint files per the reader, plus anything protected; other files (README,
            # config.json) are not checkpoint files and are not checked without a sidecar.
            expected = sorted(set(dir_layout.files) | set(with_sidecar) | set(missing))
        else:
            report["format"] = "directory"
            expected = on_disk
        report["check"] = "manifest" if expected and set(expected) <= set(with_sidecar) else "structural"
        if report["check"] == "structural":
            report["note"] = STRUCTURAL_NOTE
    if not expected:
        raise InputError(root, None, "expected a checkpoint folder with files to verify, found none")

    present = set(on_disk)
    for rel in expected:
        full = os.path.join(root, rel)
        entry = listed.get(rel)
        folder_fmt = folder_file_format(report["format"], rel)
        if rel not in present and not os.path.isfile(full):
            file_report = _missing_report(full, entry.size if entry else None)
            report["missing"].append(rel)
        else:
            try:
                if folder_fmt and entry is None and not os.path.exists(sidecar_path_for(full)):
                    file_report = _folder_file_report(full, folder_fmt, report["problems"])
                elif entry is not None and dir_manifest and not os.path.exists(sidecar_path_for(full)):
                    file_report = _digest_only_report(full, entry, dir_manifest.leaf_size, threads, progress)
                else:
                    file_report = verify_file(full, threads=threads, progress=progress)
                    if entry is not None and file_report.get("expected_size") not in (None, entry.size):
                        file_report["ok"] = False
                        file_report["problems"].append(
                            {
                                "offset": None,
                                "kind": "size-mismatch",
                                "message": f"sidecar expects {file_report['expected_size']} bytes but "
                                f"{DIR_MANIFEST_NAME} lists {entry.size}: the sidecar was replaced",
                            }
                        )
            except (FastckptError, OSError) as e:
                file_report = _file_error_report(full, e)
                report["unreadable"].append(rel)
        file_report["file"] = rel
        report["files"].append(file_report)
    if dir_manifest is not None:
        report["extra"] = [rel for rel in on_disk if rel not in listed]
        for rel in report["extra"]:
            report["warnings"].append(
                f"{os.path.join(root, rel)}: not listed in {DIR_MANIFEST_NAME} (extra file)"
            )

    files = aggregate_files(report)
    dir_problem = any(p["kind"] not in ("extra-file",) for p in report["problems"])
    report["ok"] = not dir_problem and not report["missing"] and all(f["ok"] for f in files)
    return report


def aggregate_files(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Fills a folder report's totals from its per-file reports (local and object-storage folders
    alike); returns the file reports. Whether the folder is `ok` is left to the caller."""
    files: list[dict[str, Any]] = report["files"]
    report["size"] = sum(f["size"] or 0 for f in files)
    sizes = [f["expected_size"] for f in files]
    report["expected_size"] = sum(sizes) if all(s is not None for s in sizes) else None
    report["truncated"] = any(f["truncated"] for f in files)
    report["unsafe"] = sorted({g for f in files for g in f["unsafe"]})
    report["sidecar_damaged"] = report["sidecar_damaged"] or any(f["sidecar_damaged"] for f in files)
    report["damaged"] = [dict(d, file=f["file"]) for f in files for d in f["damaged"]]
    report["leaves_checked"] = sum(f["leaves_checked"] for f in files)
    report["warnings"] += [w for f in files for w in f["warnings"]]
    return files


def verify_path(
    path: str | os.PathLike[str], *, sidecar: str | None = None, threads: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Verifies a file or a checkpoint folder; the returned dict is the `--json` object."""
    from ._url import is_url, local_path  # ---- remote storage (report issue)

    fspath = local_path(os.fspath(path))
    if is_url(fspath):
        from .remote_verify import verify_url

        return verify_url(fspath, sidecar=sidecar, threads=threads, progress=progress)
    # ---- end remote storage
    if os.path.isdir(fspath):
        if sidecar is not None:
            raise InputError(fspath, None, "expected a file with --sidecar, found a directory")
        return verify_dir(fspath, threads=threads, progress=progress)
    return verify_file(fspath, sidecar=sidecar, threads=threads, progress=progress)
