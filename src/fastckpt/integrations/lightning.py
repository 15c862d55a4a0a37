"""PyTorch Lightning integration: protected checkpoint saves and verified resumes.

    trainer = Trainer(callbacks=[ModelCheckpoint(...), FastckptCallback()])
    trainer.fit(model, ckpt_path=...)   # refuses a damaged ckpt_path with CorruptCheckpointError

`FastckptCallback` installs `FastckptCheckpointIO` on the trainer's strategy in `setup` (before any
checkpoint is restored) and verifies `trainer.ckpt_path`. `FastckptCheckpointIO` (usable on its own
as `Trainer(plugins=[FastckptCheckpointIO()])`) writes every local checkpoint with `fastckpt.save`
(atomic, sidecar, parity per protect's defaults), verifies before every load, and removes a
checkpoint's sidecar with it. Remote paths (fsspec URLs) pass through to Lightning's own IO.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.plugins.io import TorchCheckpointIO
except ImportError as e:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "fastckpt.integrations.lightning needs PyTorch Lightning: pip install 'fastckpt[lightning]'"
    ) from e

from ..sidecar import sidecar_path_for
from ._common import verify_for_resume

__all__ = ["FastckptCallback", "FastckptCheckpointIO"]


def _is_local(path: Any) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _local(path: Any) -> str:
    p = str(path)
    return p[len("file://") :] if p.startswith("file://") else os.fspath(path)


class FastckptCheckpointIO(CheckpointIO):  # type: ignore[misc, unused-ignore]
    """Lightning CheckpointIO: `fastckpt.save` for saves, verification before loads.

    `checkpoint_io` is the IO used for remote paths and for the actual load (default
    TorchCheckpointIO). `redundancy` is the parity percentage (None: protect's default)."""

    def __init__(
        self,
        checkpoint_io: CheckpointIO | None = None,
        *,
        redundancy: float | None = None,
        fsync: bool = True,
    ) -> None:
        super().__init__()
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self.redundancy = redundancy
        self.fsync = fsync

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        import warnings

        from .. import save

        target = _local(path)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with warnings.catch_warnings():
            # Lightning checkpoints may pickle hyper-parameter objects; Lightning's loader decides.
            warnings.filterwarnings(
                "ignore", message="fastckpt.save: .* pickles globals", category=RuntimeWarning
            )
            save(checkpoint, target, redundancy=self.redundancy, fsync=self.fsync)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if _is_local(path):
            verify_for_resume(_local(path), framework="fastckpt (Lightning)")
        loaded: dict[str, Any] = self.checkpoint_io.load_checkpoint(
            path, map_location=map_location, weights_only=weights_only
        )
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        self.checkpoint_io.remove_checkpoint(path)
        if _is_local(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sidecar_path_for(_local(path)))

    def teardown(self) -> None:
        self.checkpoint_io.teardown()


class FastckptCallback(Callback):  # type: ignore[misc, unused-ignore]
    """Protects every checkpoint the trainer saves and refuses to resume from a damaged one.

    `redundancy`: parity percentage for saves (None: protect's default). `verify_resume`: verify
    `ckpt_path` before it is restored (default True). Strategies whose CheckpointIO is not Lightning's
    plain TorchCheckpointIO (async, distributed) keep their IO; only resumes are verified then."""

    def __init__(
        self, *, redundancy: float | None = None, verify_resume: bool = True, fsync: bool = True
    ) -> None:
        self.redundancy = redundancy
        self.verify_resume = verify_resume
        self.fsync = fsync

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        io = strategy.checkpoint_io
        if type(io) is TorchCheckpointIO:
            strategy.checkpoint_io = FastckptCheckpointIO(io, redundancy=self.redundancy, fsync=self.fsync)
        ckpt = trainer.ckpt_path
        if self.verify_resume and ckpt and _is_local(ckpt) and os.path.exists(_local(ckpt)):
            verify_for_resume(_local(ckpt), framework="fastckpt (Lightning)")
