"""Hugging Face Trainer integration: protected checkpoint folders and verified resumes.

    trainer = Trainer(..., callbacks=[FastckptTrainerCallback()])
    trainer.train(resume_from_checkpoint=last_valid_checkpoint(args.output_dir))

`FastckptTrainerCallback.on_save` protects the `checkpoint-N` folder the Trainer just wrote (a
sidecar beside every file plus the directory manifest, as `fastckpt protect DIR`). `on_train_begin`
verifies the checkpoint the run resumed from and raises CorruptCheckpointError if it is damaged or
incomplete, before any training step. The Trainer has already read the weights by then (it loads
before the first callback event), so use `last_valid_checkpoint(output_dir)` instead of
`resume_from_checkpoint=True` to pick a checkpoint that passes verify in the first place.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "fastckpt.integrations.huggingface needs transformers: pip install 'fastckpt[huggingface]'"
    ) from e

from ._common import verify_for_resume

__all__ = ["FastckptTrainerCallback", "last_valid_checkpoint"]

PREFIX = "checkpoint"


def last_valid_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest `checkpoint-N` folder under output_dir that is complete and passes verify (what
    `fastckpt latest` prints), or None. Use it instead of `resume_from_checkpoint=True`."""
    from ..latest import find_latest

    if not os.path.isdir(output_dir):
        return None
    result = find_latest(output_dir)
    path: str | None = result["path"]
    return path


class FastckptTrainerCallback(TrainerCallback):  # type: ignore[misc, unused-ignore]
    """Protects each saved checkpoint folder; refuses to train on from a damaged one."""

    def __init__(self, *, verify_resume: bool = True) -> None:
        self.verify_resume = verify_resume
        self.protected: list[str] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not state.is_world_process_zero:
            return control
        folder = os.path.join(args.output_dir, f"{PREFIX}-{state.global_step}")
        if os.path.isdir(folder):
            from ..protect import protect_dir

            result = protect_dir(folder)
            if result.written:
                self.protected.append(folder)
            else:
                problems = (
                    "; ".join(p["message"] for p in result.problems[:3])
                    or "a file failed its structural check"
                )
                warnings.warn(f"fastckpt: did not protect {folder}: {problems}", RuntimeWarning, stacklevel=2)
        return control

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not self.verify_resume:
            return control
        resumed = getattr(args, "resume_from_checkpoint", None)
        if not isinstance(resumed, str) and state.global_step > 0:
            candidate = os.path.join(args.output_dir, f"{PREFIX}-{state.global_step}")
            resumed = candidate if os.path.isdir(candidate) else None
        if isinstance(resumed, str) and os.path.exists(resumed):
            verify_for_resume(resumed, framework="fastckpt (Hugging Face Trainer)")
        return control
