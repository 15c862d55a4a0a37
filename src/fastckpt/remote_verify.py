"""`fastckpt verify` for fsspec URLs: an object, or a prefix holding a checkpoint folder.

An object with a sidecar (`URL.fastckpt`) is hashed while it streams in through parallel ranged
reads (`fastckpt.remote.iter_leaf_digests`); each chunk of leaf digests is compared with the
sidecar's as soon as it is computed, so the first damaged leaf is known (and reported through
`on_damage`) before the rest of the object has arrived. The report is then built by
`fastckpt.verify.verify_with_sidecar` from the digest, exactly as for a local file. Without a
sidecar the format's structural checks run through `RemoteFileView`.

For a prefix, the files under it are verified one by one; missing and extra files are found when a
directory manifest (`.fastckpt-dir`) is present. The folder readers' own structure checks (DCP
metadata against shards, HF index files) need local files and are not run remotely.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import remote
from .errors import FastckptError, InputError

OnDamage = Callable[[int, float], None]  # (first damaged leaf index, seconds since the start)


def stream_digest(
    url: str,
    expected_leaves: bytes,
    leaf_size: int,
    *,
    threads: int = 0,
    progress: bool = False,
    on_damage: OnDamage | None = None,
) -> Any:
    """The object's v1 digest, comparing leaf digests with `expected_leaves` as they are computed."""
    from .digest import digest_from_leaves

    start = time.perf_counter()
    reader = remote.open_reader(url)
    parts: list[bytes] = []
    reported = False
    try:
        from ._progress import Progress

        with Progress(f"verify {url}", reader.size, enabled=progress) as bar:
            for first, leaves in remote.iter_leaf_digests(
                reader, leaf_size, threads=threads, progress=bar.update
            ):
                parts.append(leaves)
                if on_damage is not None and not reported:
                    want = expected_leaves[8 * first : 8 * first + len(leaves)]
                    if want != leaves:
                        got_q, want_q = memoryview(leaves).cast("Q"), memoryview(want).cast("Q")
                        bad = next((i for i in range(len(want_q)) if got_q[i] != want_q[i]), len(want_q))
                        on_damage(first + bad, time.perf_counter() - start)
                        reported = True
        if on_damage is not None and not reported and reader.size < (len(expected_leaves) // 8) * leaf_size:
            on_damage(-(-reader.size // leaf_size), time.perf_counter() - start)  # truncated object
        return digest_from_leaves(b"".join(parts), leaf_size, reader.size)
    finally:
        reader.close()


def verify_url_file(
    url: str,
    *,
    sidecar: str | None = None,
    threads: int = 0,
    progress: bool = False,
    on_damage: OnDamage | None = None,
) -> dict[str, Any]:
    from .sidecar import KIND_FILE, FileManifest, read_sidecar, sidecar_path_for
    from .verify import verify_structural, verify_with_sidecar

    spath = sidecar or sidecar_path_for(url)
    if sidecar is not None or remote.exists(spath):
        sc = read_sidecar(spath, expect_kind=KIND_FILE)
        m = sc.manifest
        assert isinstance(m, FileManifest)
        if not remote.exists(url):
            raise InputError(url, None, f"expected the object described by {spath}, but there is none")
        d = stream_digest(
            url, m.leaf_bytes, m.leaf_size, threads=threads, progress=progress, on_damage=on_damage
        )
        return verify_with_sidecar(url, sc, threads=threads, digest=d)
    if not remote.exists(url):
        raise InputError(url, None, "expected an object or prefix to verify, but there is none")
    return verify_structural(url)


def verify_url_dir(url: str, *, threads: int = 0, progress: bool = False) -> dict[str, Any]:
    from ._run import is_own_file
    from .sidecar import DIR_MANIFEST_NAME, KIND_DIRECTORY, DirManifest, read_sidecar
    from .verify import STRUCTURAL_NOTE, _base_report, _file_error_report, _missing_report, aggregate_files

    root = url.rstrip("/")
    listing = remote.list_files(root)
    names = {rel for rel, _, _ in listing}
    on_store = [rel for rel in sorted(names) if not is_own_file(rel.split("/")[-1])]
    report = _base_report(root)
    report.update(missing=[], extra=[], unreadable=[], files=[])
    listed: dict[str, Any] = {}
    if DIR_MANIFEST_NAME in names:
        mpath = f"{root}/{DIR_MANIFEST_NAME}"
        sc = read_sidecar(mpath, expect_kind=KIND_DIRECTORY)
        assert isinstance(sc.manifest, DirManifest)
        listed = {e.path: e for e in sc.manifest.entries}
        report.update(manifest=True, check="manifest", sidecar=mpath, format=sc.manifest.format)
        if sc.damaged:
            report["sidecar_damaged"] = True
            report["warnings"].append(f"{mpath}: directory manifest is damaged; used copy {sc.used_copy}")
        expected = list(listed)
        report["extra"] = [rel for rel in on_store if rel not in listed]
        for rel in report["extra"]:
            report["warnings"].append(f"{root}/{rel}: not listed in {DIR_MANIFEST_NAME} (extra file)")
    else:
        report["format"] = "directory"
        expected = on_store
        with_sidecar = {rel for rel in on_store if f"{rel}.fastckpt" in names}
        report["check"] = "manifest" if expected and set(expected) <= with_sidecar else "structural"
        if report["check"] == "structural":
            report["note"] = STRUCTURAL_NOTE
    if not expected:
        raise InputError(root, None, "expected a checkpoint folder with files to verify, found none")
    for rel in expected:
        full = f"{root}/{rel}"
        entry = listed.get(rel)
        if rel not in names:
            file_report = _missing_report(full, entry.size if entry else None)
            report["missing"].append(rel)
        else:
            try:
                file_report = verify_url_file(full, threads=threads, progress=progress)
                if entry is not None and file_report.get("size") not in (None, entry.size):
                    file_report["ok"] = False
                    file_report["problems"].append(
                        {
                            "offset": None,
                            "kind": "size-mismatch",
                            "message": f"{DIR_MANIFEST_NAME} lists {entry.size} bytes, the object has {file_report['size']}",
                        }
                    )
            except (FastckptError, OSError) as e:
                file_report = _file_error_report(full, e)
                report["unreadable"].append(rel)
        file_report["file"] = rel
        report["files"].append(file_report)
    files = aggregate_files(report)
    report["ok"] = not report["missing"] and all(f["ok"] for f in files)
    return report


def verify_url(
    url: str, *, sidecar: str | None = None, threads: int = 0, progress: bool = False
) -> dict[str, Any]:
    """`verify_path` for a URL: an object (with or without sidecar) or a prefix (folder)."""
    if sidecar is None and remote.isdir(url):
        return verify_url_dir(url, threads=threads, progress=progress)
    return verify_url_file(url, sidecar=sidecar, threads=threads, progress=progress)
