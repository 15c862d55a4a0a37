"""`fastckpt latest RUN_DIR`: the newest checkpoint of a training run that is complete and intact.

Auto-resume logic usually takes the highest-numbered checkpoint it finds, even when the save that
produced it was cut short. This module finds every checkpoint under a run folder, orders them by
step number then modification time, and returns the first, newest, that passes `fastckpt verify`
(through its sidecar, or structurally: zip records and CRC-32, safetensors header, DCP metadata
against its shards) plus completeness checks that verify alone cannot know about (a DCP folder
whose `.metadata` was never written, a Hugging Face `checkpoint-N` folder without its
`trainer_state.json` or weights).

Understood layouts: files such as `step_100.pt`, `model_100.pth`, `epoch=3-step=1000.ckpt`
(Lightning), DCP step folders (`step-100/`, `step_100/`, `global_step100/`, `iter_0000100/` with
`.metadata` + `*.distcp`), Hugging Face `checkpoint-N/` folders. Temporary files and folders
(fastckpt's `.NAME.fastckpt.tmp-*`, `*.tmp`, `tmp-checkpoint-N`, torch's `.metadata.tmp`, hidden
names) are never candidates. No torch import.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ._writer import is_temp_name
from .errors import FastckptError, InputError

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
MAX_DEPTH = 4

_STEP_RES = [
    re.compile(r"(?:^|[^a-z])(?:global_?)?step[=_-]?(\d+)", re.I),
    re.compile(r"^(?:tmp-)?checkpoint[-_](\d+)$", re.I),
    re.compile(r"^iter[-_]?(\d+)$", re.I),
    re.compile(r"(?:^|[^a-z])(?:ckpt|checkpoint|iter|it)[-_=]?(\d+)", re.I),
    re.compile(r"(?:^|[^a-z])epoch[=_-]?(\d+)", re.I),
    re.compile(r"^(\d+)$"),
    re.compile(r"[-_.=](\d+)$"),
]
_HF_NAME = re.compile(r"^checkpoint-\d+$")
# Weights files of a Trainer checkpoint (not optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin).
_HF_WEIGHT_RE = re.compile(r"^(?:pytorch_model|model|adapter_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)$")


def step_of(name: str) -> int | None:
    """The step number in a checkpoint's file or folder name, or None."""
    stem = name
    for ext in CHECKPOINT_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for rx in _STEP_RES:
        m = rx.search(stem)
        if m:
            return int(m.group(1))
    return None


def is_temporary(name: str) -> bool:
    base = os.path.basename(name.rstrip("/"))
    low = base.lower()
    return (
        base.startswith(".")
        or is_temp_name(base)
        or low.startswith(("tmp-", "tmp_", "tmp."))
        or low.endswith((".tmp", ".partial", ".incomplete", ".part"))
    )


@dataclass
class Candidate:
    path: str
    kind: str  # "file" | "dir"
    step: int | None
    mtime: float

    def sort_key(self) -> tuple[int, float, str]:
        return (-1 if self.step is None else self.step, self.mtime, self.path)


def _is_checkpoint_dir(path: str, names: list[str]) -> bool:
    base = os.path.basename(path)
    if ".metadata" in names or any(n.endswith(".distcp") for n in names):
        return True
    if _HF_NAME.match(base):
        return True
    has_files = any(n.endswith(CHECKPOINT_EXTENSIONS) or n == "trainer_state.json" for n in names)
    return step_of(base) is not None and (has_files or not names)


def find_candidates(run_dir: str) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(checkpoint candidates, skipped temporary entries) under run_dir, unordered."""
    out: list[Candidate] = []
    skipped: list[dict[str, Any]] = []

    def walk(folder: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.is_symlink() or e.name.endswith(".fastckpt") or e.name == ".fastckpt-dir":
                continue
            if e.is_dir():
                if is_temporary(e.name):
                    skipped.append(
                        {"path": e.path, "reason": "temporary folder (a save in progress or cut short)"}
                    )
                    continue
                try:
                    names = os.listdir(e.path)
                except OSError:
                    continue
                if _is_checkpoint_dir(e.path, names):
                    out.append(Candidate(e.path, "dir", step_of(e.name), _dir_mtime(e.path, names)))
                elif depth < MAX_DEPTH:
                    walk(e.path, depth + 1)
            elif e.is_file() and e.name.lower().endswith(CHECKPOINT_EXTENSIONS):
                if is_temporary(e.name):
                    skipped.append(
                        {"path": e.path, "reason": "temporary file (a save in progress or cut short)"}
                    )
                    continue
                out.append(Candidate(e.path, "file", step_of(e.name), e.stat().st_mtime))

    walk(run_dir, 0)
    return out, skipped


def _dir_mtime(path: str, names: list[str]) -> float:
    t = os.stat(path).st_mtime
    for n in names:
        try:
            t = max(t, os.stat(os.path.join(path, n)).st_mtime)
        except OSError:
            continue
    return t


def _reason(report: dict[str, Any]) -> str:
    if report.get("missing"):
        return f"missing files: {', '.join(report['missing'][:5])}"
    if report.get("unreadable"):
        return f"unreadable files: {', '.join(report['unreadable'][:5])}"
    for p in report.get("problems", []):
        if p["kind"] != "unsafe-pickle":
            return str(p["message"])
    for f in report.get("files", []):
        if not f.get("ok"):
            if f.get("error"):
                return f"{f.get('file', f['path'])}: {f['error']}"
            inner = _reason(f)
            return f"{f.get('file', f['path'])}: {inner}"
    if report.get("damaged"):
        return f"{len(report['damaged'])} damaged region(s)"
    return "failed verification"


def _only_unsafe(report: dict[str, Any]) -> bool:
    """True when the only finding is pickle globals (reported, not a sign of an incomplete save)."""
    if not report.get("unsafe") or report.get("damaged") or report.get("truncated") or report.get("missing"):
        return False
    if any(p["kind"] != "unsafe-pickle" for p in report.get("problems", [])):
        return False
    return all(_only_unsafe(f) or f.get("ok") for f in report.get("files", []))


def _hf_incomplete(path: str) -> str | None:
    names = set(os.listdir(path))
    if not (_HF_NAME.match(os.path.basename(path)) or "trainer_state.json" in names):
        return None
    if "trainer_state.json" not in names:
        return "incomplete Hugging Face checkpoint: no trainer_state.json (written last by Trainer)"
    try:
        with open(os.path.join(path, "trainer_state.json"), "rb") as f:
            json.loads(f.read(64 << 20))
    except (ValueError, OSError) as e:
        return f"incomplete Hugging Face checkpoint: trainer_state.json is not valid JSON ({e})"
    weights = [n for n in names if _HF_WEIGHT_RE.match(n) or n.endswith((".index.json", ".safetensors"))]
    if not weights:
        return (
            "incomplete Hugging Face checkpoint: no model weights (model.safetensors, pytorch_model.bin, ...)"
        )
    return None


def check_candidate(c: Candidate, *, threads: int = 0) -> dict[str, Any]:
    """{path, step, ok, reason, kind, format, check, mtime, unsafe} for one candidate."""
    from .verify import verify_dir, verify_file

    entry: dict[str, Any] = {
        "path": c.path, "step": c.step, "ok": False, "reason": None, "kind": c.kind,
        "format": None, "check": None, "mtime": c.mtime, "unsafe": [],
    }  # fmt: skip
    try:
        if c.kind == "dir":
            names = os.listdir(c.path)
            if not names:
                entry["reason"] = "empty folder"
                return entry
            if ".metadata" not in names and any(n.endswith(".distcp") for n in names):
                n = sum(1 for x in names if x.endswith(".distcp"))
                entry["format"] = "dcp"
                entry["reason"] = f"incomplete DCP save: {n} .distcp shard(s) but no .metadata"
                return entry
            hf = _hf_incomplete(c.path)
            if hf:
                entry["format"] = "hf-checkpoint"
                entry["reason"] = hf
                return entry
            report = verify_dir(c.path, threads=threads)
        else:
            report = verify_file(c.path, threads=threads)
    except (FastckptError, OSError) as e:
        entry["reason"] = (
            str(e) if isinstance(e, FastckptError) else f"{e.filename or c.path}: {e.strerror or e}"
        )
        return entry
    entry["format"] = report.get("format")
    entry["check"] = report.get("check")
    entry["unsafe"] = list(report.get("unsafe") or [])
    entry["ok"] = bool(report["ok"]) or _only_unsafe(report)
    if not entry["ok"]:
        entry["reason"] = _reason(report)
    return entry


def find_latest(
    run_dir: str | os.PathLike[str], *, check_all: bool = False, threads: int = 0
) -> dict[str, Any]:
    """The `fastckpt latest --json` object: {ok, run_dir, path, step, format, checked, skipped}.

    Candidates are checked newest first (step number, then mtime); checking stops at the first
    valid one unless `check_all`."""
    root = os.fspath(run_dir)
    if not os.path.exists(root):
        raise InputError(root, None, "a run folder to search, but it does not exist")
    if not os.path.isdir(root):
        raise InputError(root, None, "a run folder to search, found a file")
    candidates, skipped = find_candidates(root)
    candidates.sort(key=Candidate.sort_key, reverse=True)
    result: dict[str, Any] = {
        "ok": False, "run_dir": root, "path": None, "step": None, "format": None,
        "candidates": len(candidates), "checked": [], "skipped": skipped,
    }  # fmt: skip
    for c in candidates:
        entry = check_candidate(c, threads=threads)
        result["checked"].append(entry)
        if entry["ok"] and result["path"] is None:
            result.update(ok=True, path=c.path, step=c.step, format=entry["format"])
            if not check_all:
                break
    return result
