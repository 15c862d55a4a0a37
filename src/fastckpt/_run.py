"""The checkpoints of one training run: which entries of a run folder are checkpoints, their step
numbers, their files and their order (by step, then modification time).

Understood layouts: checkpoint files (`step_100.pt`, `epoch=3-step=1000.ckpt`, `model_500.safetensors`),
torch.distributed.checkpoint step folders (`.metadata` plus `.distcp` shards), Hugging Face
`checkpoint-N` folders and sharded model folders (`*.index.json`). Works on local folders and on
fsspec URL prefixes (through `fastckpt.remote`). Never reads file contents.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import stat
from dataclasses import dataclass, field

from . import remote
from .errors import InputError

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar", ".pkl", ".distcp")
# Files inside a checkpoint folder that hold tensors (the others, e.g. JSON, only count as bytes).
TENSOR_FILE_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar", ".pkl", ".distcp")
_DIR_MARKERS = (".metadata",)

_STEP_PATTERNS = [
    re.compile(r"(?:^|[^a-z])(?:global_?)?steps?[=_\-]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])checkpoint[=_\-](\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])iter(?:ation)?s?[=_\-]?(\d+)", re.IGNORECASE),
]
_EPOCH = re.compile(r"(?:^|[^a-z])epoch[=_\-]?(\d+)", re.IGNORECASE)
_TRAILING_NUMBER = re.compile(r"^[A-Za-z][A-Za-z_\-]*?[_\-]?(\d+)$")


def parse_step(name: str) -> int | None:
    """The training step a checkpoint's name records, or None.

    `step_100.pt` -> 100, `epoch=3-step=1000.ckpt` -> 1000, `checkpoint-500` -> 500,
    `global_step200` -> 200, `iter_0000300` -> 300, `model_700.pt` -> 700; `last.ckpt` -> None.
    """
    base = os.path.basename(name.rstrip("/"))
    stem = base
    for ext in CHECKPOINT_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for pattern in _STEP_PATTERNS:
        m = pattern.search(stem)
        if m:
            return int(m.group(1))
    if _EPOCH.search(stem):
        return None
    m = _TRAILING_NUMBER.match(stem)
    return int(m.group(1)) if m else None


def parse_epoch(name: str) -> int | None:
    m = _EPOCH.search(os.path.basename(name.rstrip("/")))
    return int(m.group(1)) if m else None


def is_own_file(name: str) -> bool:
    """fastckpt's sidecars, directory manifests, temporary files and repair backups."""
    base = os.path.basename(name)
    return (
        base.endswith(".fastckpt")
        or base.startswith(".fastckpt")
        or base.endswith(".damaged")
        or (base.startswith(".") and ".tmp" in base)
    )


def _is_temporary(name: str) -> bool:
    """An unfinished save: dot-files, *.tmp, *.partial, *.incomplete (never a checkpoint)."""
    base = os.path.basename(name.rstrip("/"))
    low = base.lower()
    return (
        base.startswith(".") or low.endswith((".tmp", ".partial", ".incomplete", ".lock")) or ".tmp-" in low
    )


@dataclass
class CheckpointFile:
    rel: str  # path inside the checkpoint folder ('' for a single-file checkpoint)
    path: str  # full local path or URL
    size: int
    mtime: float | None
    btime: float | None = None  # creation time, when the file system records it

    @property
    def holds_tensors(self) -> bool:
        return self.path.lower().endswith(TENSOR_FILE_EXTENSIONS)


@dataclass
class Checkpoint:
    path: str
    name: str
    kind: str  # "file" | "dcp" | "hf" | "dir"
    files: list[CheckpointFile]
    step: int | None = None
    epoch: int | None = None
    mtime: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


# ---------------------------------------------------------------------------------------------
# Creation time (statx): the save duration of a file written in one go is mtime - btime.
# ---------------------------------------------------------------------------------------------

_STATX_BTIME = 0x800
_AT_FDCWD = -100
_statx_fn: object = None


def _statx() -> object:
    global _statx_fn
    if _statx_fn is None:
        fn: object = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            f = libc.statx
            f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
            f.restype = ctypes.c_int
            fn = f
        except (OSError, AttributeError):
            pass
        _statx_fn = fn
    return _statx_fn


def birth_time(path: str) -> float | None:
    """The file's creation time from statx(2), or None when the system or file system lacks it."""
    f = _statx()
    if not f:
        return None
    buf = ctypes.create_string_buffer(256)
    if f(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, buf) != 0:  # type: ignore[operator]
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & _STATX_BTIME:
        return None
    sec = int.from_bytes(buf.raw[80:88], "little", signed=True)
    nsec = int.from_bytes(buf.raw[88:92], "little")
    return sec + nsec / 1e9 if sec > 0 else None


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


def _local_file(path: str, rel: str) -> CheckpointFile:
    st = os.stat(path)
    return CheckpointFile(rel, path, st.st_size, st.st_mtime, birth_time(path))


def _local_dir_files(path: str) -> list[CheckpointFile]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if is_own_file(name) or os.path.islink(full) or not os.path.isfile(full):
                continue
            out.append(_local_file(full, os.path.relpath(full, path).replace(os.sep, "/")))
    return out


def _dir_kind(names: list[str]) -> str | None:
    """What kind of checkpoint folder holds these relative file names (None: not a checkpoint)."""
    base = {n.split("/")[-1] for n in names}
    if ".metadata" in base and any(n.endswith(".distcp") for n in base):
        return "dcp"
    if any(n.endswith(".index.json") for n in base) or "trainer_state.json" in base:
        return "hf"  # a sharded model folder, or a Hugging Face Trainer checkpoint-N folder
    if any(n.lower().endswith(TENSOR_FILE_EXTENSIONS) for n in base):
        return "dir"
    return None


def _finish(ckpt: Checkpoint) -> Checkpoint:
    ckpt.step = parse_step(ckpt.name)
    ckpt.epoch = parse_epoch(ckpt.name)
    times = [f.mtime for f in ckpt.files if f.mtime is not None]
    ckpt.mtime = max(times) if times else None
    return ckpt


def _sort(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    def key(c: Checkpoint) -> tuple[bool, int, float, str]:
        return (c.step is None, c.step or 0, c.mtime if c.mtime is not None else math.inf, c.name)

    return sorted(ckpts, key=key)


def discover_local(run_dir: str) -> list[Checkpoint]:
    if not os.path.exists(run_dir):
        raise InputError(run_dir, None, "expected a folder of checkpoints, but it does not exist")
    if not os.path.isdir(run_dir):
        raise InputError(run_dir, None, "expected a folder of checkpoints, found a file")
    try:
        entries = sorted(os.listdir(run_dir))
    except OSError as e:
        raise InputError(run_dir, None, f"expected a readable folder ({e.strerror})") from None
    # The folder may itself be one checkpoint (a DCP step folder or an HF checkpoint-N folder).
    own_kind = _dir_kind([e for e in entries if os.path.isfile(os.path.join(run_dir, e))])
    if own_kind in ("dcp", "hf"):
        name = os.path.basename(os.path.abspath(run_dir))
        return [_finish(Checkpoint(run_dir, name, own_kind, _local_dir_files(run_dir)))]
    out = []
    for name in entries:
        full = os.path.join(run_dir, name)
        if is_own_file(name) or _is_temporary(name):
            continue
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and name.lower().endswith(CHECKPOINT_EXTENSIONS):
            if name.lower().endswith(".distcp"):
                continue  # a shard outside its DCP folder is not a checkpoint of its own
            out.append(_finish(Checkpoint(full, name, "file", [_local_file(full, "")])))
        elif stat.S_ISDIR(st.st_mode):
            files = _local_dir_files(full)
            kind = _dir_kind([f.rel for f in files])
            if kind is not None:
                out.append(_finish(Checkpoint(full, name, kind, files)))
    return _sort(out)


def discover_remote(url: str) -> list[Checkpoint]:
    base = url.rstrip("/")
    listing = [x for x in remote.list_files(base) if not is_own_file(x[0].split("/")[-1])]
    if not listing:
        if remote.exists(base) and not remote.isdir(base):
            raise InputError(url, None, "expected a folder (prefix) of checkpoints, found a single object")
        raise InputError(url, None, "expected a folder (prefix) of checkpoints, found no objects under it")
    top = [rel for rel, _, _ in listing if "/" not in rel]
    own_kind = _dir_kind(top)
    if own_kind in ("dcp", "hf"):
        files = [CheckpointFile(rel, f"{base}/{rel}", size, mtime) for rel, size, mtime in listing]
        return [_finish(Checkpoint(base, base.rsplit("/", 1)[-1], own_kind, files))]
    out = []
    groups: dict[str, list[CheckpointFile]] = {}
    for rel, size, mtime in listing:
        head, _, rest = rel.partition("/")
        if _is_temporary(head):
            continue
        if not rest:
            if head.lower().endswith(CHECKPOINT_EXTENSIONS) and not head.lower().endswith(".distcp"):
                out.append(
                    _finish(
                        Checkpoint(
                            f"{base}/{head}",
                            head,
                            "file",
                            [CheckpointFile("", f"{base}/{head}", size, mtime)],
                        )
                    )
                )
            continue
        groups.setdefault(head, []).append(CheckpointFile(rest, f"{base}/{rel}", size, mtime))
    for head, files in groups.items():
        kind = _dir_kind([f.rel for f in files])
        if kind is not None:
            out.append(_finish(Checkpoint(f"{base}/{head}", head, kind, files)))
    return _sort(out)


def discover(run_dir: str) -> list[Checkpoint]:
    """The checkpoints of a run folder (local path, file:// or fsspec URL), oldest first."""
    is_url = remote.is_url(run_dir)
    found = discover_remote(run_dir) if is_url else discover_local(remote.local_path(run_dir))
    if not found:
        raise InputError(
            run_dir,
            None,
            "expected a folder of checkpoints (files like step_100.pt, epoch=3-step=1000.ckpt, or folders like "
            "checkpoint-100 / DCP step folders), found none",
        )
    return found
