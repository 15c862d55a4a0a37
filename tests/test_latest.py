"""`fastckpt latest`: newest valid checkpoint of a run, skipping incomplete and damaged saves."""

from __future__ import annotations

import json
import os
import time

import pytest

import fastckpt
from fastckpt._writer import temp_name_for
from fastckpt.latest import find_latest, is_temporary, step_of

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("step_100.pt", 100),
        ("step100.pt", 100),
        ("epoch=3-step=1000.ckpt", 1000),
        ("epoch=3-step=1000-v1.ckpt", 1000),
        ("checkpoint-500", 500),
        ("global_step1200", 1200),
        ("iter_0001000", 1000),
        ("step-30", 30),
        ("model_700.pth", 700),
        ("ckpt-12.pt", 12),
        ("epoch_4.pt", 4),
        ("1500", 1500),
        ("last.ckpt", None),
        ("resnet50.pt", None),
        ("model.safetensors", None),
    ],
)
def test_step_of(name: str, step: int | None) -> None:
    assert step_of(name) == step


def test_is_temporary() -> None:
    assert is_temporary(os.path.basename(temp_name_for("/x/step_5.pt")))
    assert is_temporary("tmp-checkpoint-400") and is_temporary("step_5.pt.tmp") and is_temporary(".hidden.pt")
    assert not is_temporary("step_5.pt") and not is_temporary("checkpoint-400")


def _touch_order(*paths) -> None:
    """Gives paths strictly increasing mtimes in the order given."""
    now = time.time()
    for i, p in enumerate(paths):
        os.utime(p, (now - 100 + i, now - 100 + i))


def _flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _sd(v: int) -> dict:
    return {"w": torch.full((256, 256), float(v)), "step": v}


def test_latest_plain_files(tmp_path, cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    fastckpt.save(_sd(100), run / "step_100.pt")
    torch.save(_sd(200), run / "step_200.pt")  # no sidecar: structural check
    torch.save(_sd(300), run / "step_300.pt")
    os.truncate(run / "step_300.pt", (run / "step_300.pt").stat().st_size - 50)  # a cut-short torch.save
    fastckpt.save(_sd(350), run / "step_350.pt")
    _flip(run / "step_350.pt", 5000)  # bit rot under a sidecar
    (run / os.path.basename(temp_name_for(str(run / "step_400.pt")))).write_bytes(b"PK\x03\x04partial")
    res = find_latest(run)
    assert res["ok"] and res["path"] == str(run / "step_200.pt") and res["step"] == 200
    checked = [(os.path.basename(c["path"]), c["ok"]) for c in res["checked"]]
    assert checked == [("step_350.pt", False), ("step_300.pt", False), ("step_200.pt", True)]
    assert res["checked"][0]["check"] == "manifest" and res["checked"][2]["check"] == "structural"
    assert all(c["reason"] for c in res["checked"][:2])
    assert len(res["skipped"]) == 1 and "step_400.pt" in res["skipped"][0]["path"]
    # CLI: only the path on stdout.
    r = cli(["latest", str(run)])
    assert r.returncode == 0 and r.stdout == str(run / "step_200.pt") + "\n"
    assert "step_350.pt" in r.stderr and "step_300.pt" in r.stderr
    r = cli(["latest", str(run), "--json", "--all"])
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["path"] == str(run / "step_200.pt")
    assert [c["ok"] for c in doc["checked"]] == [False, False, True, True]
    for c in doc["checked"]:
        assert {"path", "step", "ok", "reason"} <= c.keys()


def test_latest_lightning_names_and_mtime_order(tmp_path) -> None:
    run = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    run.mkdir(parents=True)
    for name, v in [
        ("epoch=0-step=50.ckpt", 50),
        ("epoch=1-step=1000.ckpt", 1000),
        ("epoch=2-step=1500.ckpt", 1500),
    ]:
        fastckpt.save(_sd(v), run / name)
    os.truncate(run / "epoch=2-step=1500.ckpt", 1000)
    res = find_latest(tmp_path)
    assert res["path"] == str(run / "epoch=1-step=1000.ckpt") and res["step"] == 1000
    # No step numbers: modification time decides.
    run2 = tmp_path / "plain"
    run2.mkdir()
    fastckpt.save(_sd(1), run2 / "a.pt")
    fastckpt.save(_sd(2), run2 / "b.pt")
    _touch_order(run2 / "b.pt", run2 / "a.pt")
    assert find_latest(run2)["path"] == str(run2 / "a.pt")
    _flip(run2 / "a.pt", 3000)
    assert find_latest(run2)["path"] == str(run2 / "b.pt")


def test_latest_dcp_step_folders(tmp_path) -> None:
    import torch.distributed.checkpoint as dcp

    run = tmp_path / "run"
    for step in (10, 20, 30, 40):
        dcp.save(
            {"w": torch.full((100, 100), float(step)), "b": torch.arange(step)},
            checkpoint_id=str(run / f"step-{step}"),
        )
    os.unlink(run / "step-20" / ".metadata")  # killed before the coordinator wrote .metadata
    shard = next(p for p in (run / "step-30").iterdir() if p.suffix == ".distcp")
    os.truncate(shard, shard.stat().st_size - 10)  # short shard
    shard = next(p for p in (run / "step-40").iterdir() if p.suffix == ".distcp")
    os.unlink(shard)  # missing shard
    res = find_latest(run, check_all=True)
    by = {os.path.basename(c["path"]): c for c in res["checked"]}
    assert res["path"] == str(run / "step-10") and res["step"] == 10
    assert [os.path.basename(c["path"]) for c in res["checked"]] == [
        "step-40",
        "step-30",
        "step-20",
        "step-10",
    ]
    assert "no .metadata" in by["step-20"]["reason"]
    assert not by["step-30"]["ok"] and not by["step-40"]["ok"] and by["step-10"]["ok"]


def test_latest_hf_checkpoint_folders(tmp_path, cli) -> None:
    st = pytest.importorskip("safetensors.torch")
    out = tmp_path / "out"

    def hf(step: int, *, state: bool = True, weights: bool = True) -> None:
        d = out / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if weights:
            st.save_file({"w": torch.randn(64, 64)}, d / "model.safetensors")
        torch.save({"state": {}, "param_groups": []}, d / "optimizer.pt")
        (d / "config.json").write_text("{}")
        if state:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    hf(100)
    hf(200, state=False)
    hf(300)
    _flip(out / "checkpoint-300" / "model.safetensors", 3)  # header length now wrong
    hf(350, weights=False)
    (out / "tmp-checkpoint-400").mkdir()
    res = find_latest(out, check_all=True)
    assert res["path"] == str(out / "checkpoint-100")
    by = {os.path.basename(c["path"]): c for c in res["checked"]}
    assert "trainer_state.json" in by["checkpoint-200"]["reason"]
    assert "weights" in by["checkpoint-350"]["reason"]
    assert not by["checkpoint-300"]["ok"]
    assert [os.path.basename(s["path"]) for s in res["skipped"]] == ["tmp-checkpoint-400"]
    r = cli(["latest", str(out), "--json"])
    assert json.loads(r.stdout)["path"] == str(out / "checkpoint-100")


def test_latest_none_valid_and_errors(tmp_path, cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    r = cli(["latest", str(run)])
    assert r.returncode == 1 and r.stdout == "" and "no valid checkpoint" in r.stderr
    torch.save(_sd(1), run / "step_1.pt")
    os.truncate(run / "step_1.pt", 100)
    r = cli(["latest", str(run), "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False and doc["path"] is None and len(doc["checked"]) == 1
    r = cli(["latest", str(tmp_path / "missing")])
    assert r.returncode == 2 and r.stderr.startswith("fastckpt: error: ") and "Traceback" not in r.stderr
