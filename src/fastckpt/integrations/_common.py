"""Resume checks shared by the framework integrations (no framework or torch import)."""

from __future__ import annotations

import os
import shlex
from typing import Any

from ..errors import CorruptCheckpointError, FastckptError


def verify_for_resume(path: str, *, framework: str, threads: int = 0) -> dict[str, Any]:
    """Checks a checkpoint file or folder before a framework resumes from it, as `fastckpt latest`
    judges candidates: verify (sidecar or structural) plus completeness (DCP `.metadata`, a Trainer
    folder's trainer_state.json and weights). Pickle globals alone are not a reason to refuse (the
    framework's loader decides what it unpickles).

    Raises CorruptCheckpointError naming what is damaged, how to repair it, and the newest intact
    checkpoint of the run if there is one. Returns the `latest` entry ({path, ok, reason, ...})."""
    from ..latest import Candidate, check_candidate, find_latest, step_of
    from ..save import corrupt_error
    from ..verify import verify_path

    fspath = os.fspath(path)
    kind = "dir" if os.path.isdir(fspath) else "file"
    entry = check_candidate(
        Candidate(fspath, kind, step_of(os.path.basename(fspath.rstrip(os.sep))), os.path.getmtime(fspath)),
        threads=threads,
    )
    if entry["ok"]:
        return entry
    damaged: list[str] = []
    report: dict[str, Any] | None = None
    detail = f"{fspath}: {entry['reason']}"
    try:
        report = verify_path(fspath, threads=threads)
        if not report["ok"]:
            err = corrupt_error(fspath, report)
            damaged, detail = err.damaged, str(err)
    except (FastckptError, OSError):
        pass
    run_dir = os.path.dirname(os.path.abspath(fspath.rstrip(os.sep)))
    alt = ""
    try:
        latest = find_latest(run_dir)
        if latest["path"] and os.path.abspath(latest["path"]) != os.path.abspath(fspath):
            alt = f" The newest intact checkpoint of this run is {latest['path']} (`fastckpt latest {shlex.quote(run_dir)}`)."
    except (FastckptError, OSError):
        pass
    raise CorruptCheckpointError(
        fspath,
        damaged,
        f"{framework}: refusing to resume from a damaged or incomplete checkpoint. {detail}{alt}",
        report,
    )
