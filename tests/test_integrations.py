"""Lightning and Hugging Face Trainer integrations (skipped when the framework is not installed)."""

from __future__ import annotations

import json
import os
import warnings

import pytest

import fastckpt
from fastckpt.errors import CorruptCheckpointError
from fastckpt.verify import verify_path

torch = pytest.importorskip("torch")


def _flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _tensor_offset(path: str, key_part: str) -> int:
    from fastckpt.sidecar import read_sidecar

    m = read_sidecar(path + ".fastckpt").manifest
    return next(t.offset for t in m.tensor_entries() if key_part in t.key)


# ---------------------------------------------------------------------------------------------
# PyTorch Lightning
# ---------------------------------------------------------------------------------------------


def _lightning_setup():
    L = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(16, 4)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    data = DataLoader(
        TensorDataset(torch.randn(64, 16, generator=g), torch.randn(64, 4, generator=g)), batch_size=8
    )
    return L, Tiny, data


def _trainer(L, tmp_path, callbacks, max_steps):
    return L.Trainer(
        default_root_dir=tmp_path, max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip


def test_lightning_protects_saves_and_refuses_damaged_resume(tmp_path) -> None:
    L, Tiny, data = _lightning_setup()
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fastckpt.integrations.lightning import FastckptCallback, FastckptCheckpointIO

    ckdir = tmp_path / "ckpts"
    mc = ModelCheckpoint(dirpath=ckdir, every_n_train_steps=2, save_top_k=2, monitor="step", mode="max")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(L, tmp_path, [mc, FastckptCallback()], 8)
        trainer.fit(Tiny(), data)
    assert isinstance(trainer.strategy.checkpoint_io, FastckptCheckpointIO)
    ckpts = sorted(p for p in os.listdir(ckdir) if p.endswith(".ckpt"))
    assert ckpts == ["epoch=0-step=6.ckpt", "epoch=0-step=8.ckpt"]
    # Every kept checkpoint has its sidecar; the sidecars of the rotated-out ones are gone too.
    assert sorted(os.listdir(ckdir)) == sorted(ckpts + [c + ".fastckpt" for c in ckpts])
    for c in ckpts:
        assert verify_path(str(ckdir / c))["ok"]
    last = str(ckdir / "epoch=0-step=8.ckpt")
    assert fastckpt.load(last)["global_step"] == 8

    # Resuming from an intact checkpoint works.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t2 = _trainer(L, tmp_path, [FastckptCallback()], 10)
        t2.fit(Tiny(), data, ckpt_path=last)
    assert t2.global_step == 10

    # A damaged one is refused before anything is restored, naming the damage and an alternative.
    _flip(last, _tensor_offset(last, "layer.weight") + 5)
    t3 = _trainer(L, tmp_path, [FastckptCallback()], 12)
    with pytest.raises(CorruptCheckpointError) as ei:
        t3.fit(Tiny(), data, ckpt_path=last)
    msg = str(ei.value)
    assert "refusing to resume" in msg and "state_dict.layer.weight" in msg and "fastckpt repair" in msg
    assert "epoch=0-step=6.ckpt" in msg
    assert ei.value.damaged == ["state_dict.layer.weight"]


def test_lightning_checkpoint_io_plugin_alone(tmp_path) -> None:
    L, Tiny, data = _lightning_setup()
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fastckpt.integrations.lightning import FastckptCheckpointIO

    ckdir = tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            default_root_dir=tmp_path, max_steps=4, accelerator="cpu", devices=1, logger=False,
            enable_progress_bar=False, enable_model_summary=False, plugins=[FastckptCheckpointIO(redundancy=5)],
            callbacks=[ModelCheckpoint(dirpath=ckdir, every_n_train_steps=4)],
        )  # fmt: skip
        trainer.fit(Tiny(), data)
    (ck,) = [p for p in os.listdir(ckdir) if p.endswith(".ckpt")]
    path = str(ckdir / ck)
    assert verify_path(path)["ok"]
    os.truncate(path, os.path.getsize(path) - 7)
    with pytest.raises(CorruptCheckpointError, match="refusing to resume"):
        FastckptCheckpointIO().load_checkpoint(path)


def _intact(report: dict) -> bool:
    """Verified intact; pickle globals (a Trainer pickles TrainingArguments and numpy RNG state)
    are reported by verify but say nothing about damage."""
    from fastckpt.latest import _only_unsafe

    return bool(report["ok"] or _only_unsafe(report))


# ---------------------------------------------------------------------------------------------
# Hugging Face Trainer
# ---------------------------------------------------------------------------------------------


def test_huggingface_protects_checkpoints_and_refuses_damaged_resume(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from fastckpt.integrations.huggingface import FastckptTrainerCallback, last_valid_checkpoint

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def forward(self, x, labels=None):
            out = self.layer(x)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    g = torch.Generator().manual_seed(0)
    rows = [{"x": torch.randn(8, generator=g), "labels": torch.randn(2, generator=g)} for _ in range(32)]
    out = tmp_path / "out"

    def make(max_steps: int) -> transformers.Trainer:
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=max_steps, save_steps=2, per_device_train_batch_size=4,
            report_to=[], use_cpu=True, logging_strategy="no", save_total_limit=3, disable_tqdm=True,
        )  # fmt: skip
        return transformers.Trainer(
            model=Tiny(), args=args, train_dataset=rows, callbacks=[FastckptTrainerCallback()]
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make(6).train()
    folders = sorted(os.listdir(out))
    assert folders == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for f in folders:
        names = os.listdir(out / f)
        assert ".fastckpt-dir" in names and "model.safetensors.fastckpt" in names
        assert _intact(verify_path(str(out / f)))
    assert last_valid_checkpoint(out) == str(out / "checkpoint-6")

    # Bit rot in the newest checkpoint's weights: refused with a pointer to checkpoint-4.
    weights = str(out / "checkpoint-6" / "model.safetensors")
    _flip(weights, _tensor_offset(weights, "layer.weight") + 2)
    assert last_valid_checkpoint(out) == str(out / "checkpoint-4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = make(8)
        with pytest.raises(CorruptCheckpointError) as ei:
            t.train(resume_from_checkpoint=str(out / "checkpoint-6"))
    assert "refusing to resume" in str(ei.value) and "checkpoint-4" in str(ei.value)
    assert ei.value.damaged == ["model.safetensors:layer.weight"]
    # The intact one resumes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = make(8)
        t.train(resume_from_checkpoint=last_valid_checkpoint(out))
    assert t.state.global_step == 8
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and _intact(verify_path(str(out / "checkpoint-8")))
