"""Checkpoint folders: which files make up the checkpoint, and what is missing or short.

- "dcp": a torch.distributed.checkpoint folder (has `.metadata`).
- "hf-sharded": a folder with `*.index.json` files whose `weight_map` names shard files.
- "dir": any other folder; its checkpoint files are the files whose content (or, for damaged
  files, extension) is a known checkpoint format.
Sidecars (`*.fastckpt`) and hidden folders are never listed.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from ..errors import InputError
from ._dcp import METADATA_NAME, check_dcp_files, read_dcp_metadata, storage_files
from ._io import FileView, OutOfBounds
from ._segments import tile
from ._types import DirLayout, Layout, Problem, Segment

_MAX_INDEX = 256 << 20
_SHARD_NAME = re.compile(r"-\d{5}-of-\d{5}\.")
_KNOWN_EXT = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".distcp")


def _check_dir(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(path, None, "no such file or directory")
    if not os.path.isdir(path):
        raise InputError(path, None, "expected a directory, found a file (read it with read_layout)")


def _index_files(path: str) -> list[str]:
    return sorted(
        f for f in os.listdir(path) if f.endswith(".index.json") and os.path.isfile(os.path.join(path, f))
    )


def detect_dir_format(path: str) -> str:
    _check_dir(path)
    if os.path.isfile(os.path.join(path, METADATA_NAME)):
        return "dcp"
    if _index_files(path):
        return "hf-sharded"
    return "dir"


def read_dir_layout(path: str) -> DirLayout:
    fmt = detect_dir_format(path)
    if fmt == "dcp":
        return _read_dcp_dir(path)
    if fmt == "hf-sharded":
        return _read_hf_dir(path)
    return DirLayout(path, "dir", _checkpoint_files(path), [])


def _walk_files(path: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.endswith(".fastckpt") or f.startswith(".fastckpt"):
                continue
            full = os.path.join(root, f)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(os.path.relpath(full, path))
    return sorted(out)


def _checkpoint_files(path: str) -> list[str]:
    from . import _sniff

    out = []
    for rel in _walk_files(path):
        full = os.path.join(path, rel)
        if os.path.basename(rel) == METADATA_NAME or rel.endswith(_KNOWN_EXT) or rel.endswith(".index.json"):
            out.append(rel)
            continue
        try:
            with FileView(full) as fv:
                if _sniff(fv, full) != "opaque":
                    out.append(rel)
        except (InputError, OSError, OutOfBounds):
            continue
    return out


def _read_dcp_dir(path: str) -> DirLayout:
    md = read_dcp_metadata(path)
    missing, extra, problems = check_dcp_files(path, md)
    files = [METADATA_NAME, *[f for f in storage_files(md) if f not in missing]]
    layout = DirLayout(path, "dcp", files, md.problems + problems, extra_files=extra, missing_files=missing)
    layout.key_files = {it.key: it.file for it in md.items}
    layout.info = {
        "items": len(md.items),
        "tensors": len(md.tensors),
        "bytes_items": len(md.bytes_items),
        "version": md.info.get("version"),
    }
    return layout


def _read_hf_dir(path: str) -> DirLayout:
    problems: list[Problem] = []
    key_files: dict[str, str] = {}
    shard_keys: dict[str, set[str]] = {}
    indexes = _index_files(path)
    for idx in indexes:
        _read_index(path, idx, problems, key_files, shard_keys)
    missing = _check_shards(path, shard_keys, problems)
    files = sorted(set(_checkpoint_files(path)) | set(indexes))
    files = [f for f in files if f not in missing]
    extra = sorted(
        rel
        for rel in _walk_files(path)
        if _SHARD_NAME.search(os.path.basename(rel)) and rel not in shard_keys
    )
    for rel in extra:
        problems.append(Problem(None, f"shard-like file {rel!r} is not named by any index", "extra-file"))
    return DirLayout(
        path,
        "hf-sharded",
        files,
        problems,
        extra_files=extra,
        missing_files=missing,
        key_files=key_files,
        info={"indexes": indexes},
    )


def _check_shards(
    path: str, shard_keys: dict[str, set[str]], problems: list[Problem], *, sizes: bool = False
) -> list[str]:
    """Appends the problems of the shard files an index names (missing, unreadable, lacking or
    holding keys the index does not list; with `sizes`, also shorter than their own headers say);
    returns the missing shards."""
    missing: list[str] = []
    for shard in sorted(shard_keys):
        if not os.path.isfile(os.path.join(path, shard)):
            missing.append(shard)
            keys = sorted(shard_keys[shard])
            problems.append(
                Problem(
                    None,
                    f"shard {shard!r} is missing ({len(keys)} tensor(s), e.g. {keys[0]!r})",
                    "missing-file",
                )
            )
            continue
        problems.extend(_check_shard_keys(path, shard, shard_keys[shard], sizes=sizes))
    return missing


def _read_index(
    path: str, idx: str, problems: list[Problem], key_files: dict[str, str], shard_keys: dict[str, set[str]]
) -> None:
    """Reads one `*.index.json` of folder `path` into key_files / shard_keys (problems appended)."""
    full = os.path.join(path, idx)
    size = os.path.getsize(full)
    if size > _MAX_INDEX:
        problems.append(
            Problem(
                None,
                f"{idx} is {size} bytes, larger than the {_MAX_INDEX}-byte limit for an index",
                "bad-header",
            )
        )
        return
    with open(full, "rb") as f:
        raw = f.read(size)
    try:
        doc: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        problems.append(
            Problem(getattr(e, "pos", None), f"{idx} is not valid JSON: {getattr(e, 'msg', e)}", "bad-header")
        )
        return
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        problems.append(Problem(None, f"{idx} has no weight_map of tensor name to shard file", "bad-header"))
        return
    for key, shard in wm.items():
        if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
            problems.append(
                Problem(None, f"{idx}: shard {shard!r} for {key!r} is outside the folder", "bad-header")
            )
            continue
        key_files[key] = shard
        shard_keys.setdefault(shard, set()).add(key)


def _check_shard_keys(path: str, shard: str, want: set[str], *, sizes: bool = False) -> list[Problem]:
    from . import read_layout

    try:
        lay = read_layout(os.path.join(path, shard), check_crc=False)
    except InputError as e:
        return [Problem(None, f"shard {shard!r} cannot be read: {e.expected}", "missing-file")]
    if lay.format not in ("safetensors", "torch-zip", "torch-legacy"):
        return []
    out = []
    if sizes and any(q.kind == "truncated" for q in lay.problems):
        need = f", its header needs {lay.expected_size}" if lay.expected_size else ""
        out.append(Problem(None, f"shard {shard!r} is truncated: {lay.size} bytes{need}", "shard-truncated"))
    have = {t.key for t in lay.tensors}
    if not have and lay.problems:
        return out  # a damaged shard reports its own problems when it is verified
    absent = sorted(want - have)
    if absent:
        out.append(
            Problem(
                None,
                f"shard {shard!r} lacks {len(absent)} tensor(s) its index lists, e.g. {absent[0]!r}",
                "missing-key",
            )
        )
    unlisted = sorted(have - want)
    if unlisted:
        out.append(
            Problem(
                None,
                f"shard {shard!r} holds {len(unlisted)} tensor(s) no index lists, e.g. {unlisted[0]!r}",
                "extra-key",
            )
        )
    return out


def read_hf_index_file(fv: FileView, path: str) -> Layout:
    """An HF `*.index.json` given on its own ("hf-index"): its weight_map is read (bounded JSON),
    and the shard files it names, in the same folder, are checked to exist, to be as long as their
    own headers say, and to hold exactly the tensors the index assigns to them. The file holds no
    tensor bytes; its one segment is the index."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    problems: list[Problem] = []
    key_files: dict[str, str] = {}
    shard_keys: dict[str, set[str]] = {}
    size = fv.size
    if size == 0:
        problems.append(Problem(0, "file is empty (0 bytes)", "truncated"))
    else:
        _read_index(folder, name, problems, key_files, shard_keys)
        _check_shards(folder, shard_keys, problems, sizes=True)
    info = {"tensors": len(key_files), "files": sorted(shard_keys)}
    return Layout(
        path,
        "hf-index",
        size,
        tile(size, [Segment(0, size, "metadata", name)]),
        [],
        problems,
        [],
        {},
        info=info,
    )
