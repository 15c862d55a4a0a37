"""`fastckpt inspect PATH --check-optimizer`: optimizer state validated from the file alone (torch
zip, legacy, DCP folders, plain folders), the exit codes, the JSON contract, and that nothing in
the checkpoint is executed."""

from __future__ import annotations

import copy
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fastckpt.cli import main

OPT_CHECK_KEYS = {"ok", "checked", "found", "message", "errors", "warnings", "summary"}


def trained(make_opt: Any, steps: int = 2) -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = make_opt(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    return model, opt.state_dict()


def adam_ckpt() -> dict[str, Any]:
    model, osd = trained(lambda p: torch.optim.Adam(p, lr=1e-3))
    return {"model": model.state_dict(), "optimizer": osd, "epoch": 2}


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", "--check-optimizer", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def inspect_json(
    capsys: pytest.CaptureFixture[str], path: Path | str, *args: str
) -> tuple[int, dict[str, Any]]:
    rc, out, _ = inspect(capsys, "--json", *args, str(path))
    return rc, json.loads(out)


def save(tmp_path: Path, obj: Any, name: str = "ckpt.pt", **kw: Any) -> Path:
    p = tmp_path / name
    torch.save(obj, p, **kw)
    return p


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.Adam(p, lr=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.AdamW(p, lr=1e-3, amsgrad=True),
    ],
    ids=["adam", "sgd_momentum", "adamw_amsgrad"],
)
def test_healthy_checkpoints_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str], make_opt: Any) -> None:
    model, osd = trained(make_opt)
    p = save(tmp_path, {"model": model.state_dict(), "optimizer": osd})
    rc, out, err = inspect(capsys, str(p))
    assert rc == 0, out + err
    assert out.splitlines()[0].startswith(f"{p}: torch-zip")
    assert "optimizer: 1 param group(s), 4 params (4 with state)" in out
    assert out.rstrip().endswith("OK: 0 error(s), 0 warning(s)")
    rc, d = inspect_json(capsys, p)
    assert rc == 0
    assert d["optimizer_check"]["ok"] and d["optimizer_check"]["found"] and d["optimizer_check"]["checked"]


def test_state_entry_for_unknown_param_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][7] = copy.deepcopy(ckpt["optimizer"]["state"][0])
    p = save(tmp_path, ckpt)
    rc, out, _ = inspect(capsys, str(p))
    assert rc == 1
    assert "error: optimizer.state[7]: belongs to no param listed in param_groups" in out
    assert out.rstrip().endswith("FAILED: 1 error(s), 0 warning(s)")


def test_mismatched_moment_shapes_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][0]["exp_avg_sq"] = torch.zeros(4, 4)
    rc, d = inspect_json(capsys, save(tmp_path, ckpt))
    assert rc == 1
    assert d["optimizer_check"]["errors"] == [
        "optimizer.state[0]: moment shapes disagree: exp_avg [4, 3], exp_avg_sq [4, 4]"
    ]


@pytest.mark.parametrize("step", [-1.0, float("nan"), float("inf")])
def test_negative_or_non_finite_step_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step: float
) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][1]["step"] = torch.tensor(step)
    rc, d = inspect_json(capsys, save(tmp_path, ckpt))
    assert rc == 1
    assert d["optimizer_check"]["errors"] == [
        f"optimizer.state[1].step: {step!r} is not a finite non-negative step count"
    ]


def test_nan_moments_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][2]["exp_avg"][1, 2] = float("nan")
    ckpt["optimizer"]["state"][3]["exp_avg_sq"][0] = float("inf")
    rc, out, _ = inspect(capsys, str(save(tmp_path, ckpt)))
    assert rc == 1
    assert "error: optimizer.state[2].exp_avg: 1 NaN in 8 elements" in out
    assert "error: optimizer.state[3].exp_avg_sq: 1 Inf in 2 elements" in out


def test_step_spread_is_a_warning_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][0]["step"] = torch.tensor(1.0)  # the others are at 2
    p = save(tmp_path, ckpt)
    rc, out, _ = inspect(capsys, str(p))
    assert rc == 0
    assert "warning: optimizer.state: step counts differ across params (1.0 to 2.0" in out
    assert out.rstrip().endswith("OK: 0 error(s), 1 warning(s)")
    rc, d = inspect_json(capsys, p)
    assert rc == 0 and d["optimizer_check"]["ok"] and len(d["optimizer_check"]["warnings"]) == 1


def test_no_optimizer_state_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = trained(lambda p: torch.optim.SGD(p, lr=0.1))
    p = save(tmp_path, {"model": model.state_dict(), "epoch": 1})
    rc, out, err = inspect(capsys, str(p))
    assert rc == 2
    assert out == f"{p}: torch-zip, {p.stat().st_size} bytes\n"
    assert err.startswith(f"fastckpt: error: {p}: no optimizer state_dict found:")
    assert "top-level entries: 'model', 'epoch'" in err
    rc, d = inspect_json(capsys, p)
    assert rc == 2
    assert d["optimizer_check"]["found"] is False and d["optimizer_check"]["checked"] is True
    assert d["optimizer_check"]["ok"] is False


def test_safetensors_file_has_no_optimizer_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    p = tmp_path / "model.safetensors"
    safetensors_torch.save_file({"w": torch.ones(2)}, str(p))
    rc, d = inspect_json(capsys, p)
    assert rc == 2
    assert (
        d["optimizer_check"]["message"] == "no optimizer state_dict: a safetensors file holds no param_groups"
    )


def test_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = save(tmp_path, adam_ckpt())
    rc, d = inspect_json(capsys, p)
    assert rc == 0
    plain = main(["inspect", "--json", str(p)])
    base = json.loads(capsys.readouterr().out)
    assert plain == 0
    # The inspect object is unchanged; the check adds one key.
    assert set(d) == set(base) | {"optimizer_check"}
    assert {k: v for k, v in d.items() if k != "optimizer_check"} == base
    oc = d["optimizer_check"]
    assert set(oc) == OPT_CHECK_KEYS
    assert oc["message"] is None and oc["errors"] == [] and oc["warnings"] == []
    (opt,) = oc["summary"]["optimizers"]
    assert opt["path"] == "optimizer"
    assert opt["params"] == 4 and opt["params_with_state"] == 4
    assert opt["steps"] == {"min": 2.0, "max": 2.0, "params": 4}
    assert opt["state_keys"] == {"step": 4, "exp_avg": 4, "exp_avg_sq": 4}


def test_optimizer_key_selects_one_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    bad = copy.deepcopy(ckpt["optimizer"])
    bad["state"][0]["exp_avg"][0, 0] = float("nan")
    ckpt["optimizer_d"] = bad
    p = save(tmp_path, ckpt)
    rc, d = inspect_json(capsys, p)
    assert rc == 1 and d["optimizer_check"]["errors"] == [
        "optimizer_d.state[0].exp_avg: 1 NaN in 12 elements"
    ]
    rc, d = inspect_json(capsys, p, "--optimizer-key", "optimizer")
    assert rc == 0 and [o["path"] for o in d["optimizer_check"]["summary"]["optimizers"]] == ["optimizer"]
    assert main(["inspect", "--optimizer-key", "optimizer", str(p)]) == 2


def test_legacy_format_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    ckpt["optimizer"]["state"][1]["exp_avg"][0] = float("nan")
    p = save(tmp_path, ckpt, _use_new_zipfile_serialization=False)
    rc, d = inspect_json(capsys, p)
    assert d["format"] == "torch-legacy"
    assert rc == 1 and d["optimizer_check"]["errors"] == ["optimizer.state[1].exp_avg: 1 NaN in 4 elements"]


class Boom:
    """Pickles as a call of os.system: loading it with weights_only=False would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_global_is_refused_and_never_executed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    ckpt = adam_ckpt()
    ckpt["extra"] = Boom(marker)
    p = tmp_path / "evil.pt"
    torch.save(ckpt, p, pickle_module=pickle)
    rc, out, _ = inspect(capsys, str(p))
    assert rc == 1
    assert "posix.system" in out
    assert (
        "optimizer check: not loaded: the pickle names globals outside the weights_only allowlist (posix.system)"
        in out
    )
    rc, d = inspect_json(capsys, p)
    assert rc == 1
    oc = d["optimizer_check"]
    assert oc["checked"] is False and oc["found"] is None and not oc["ok"]
    assert "posix.system" in oc["message"]
    assert not marker.exists()


def test_truncated_file_is_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = save(tmp_path, adam_ckpt())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 200])
    rc, d = inspect_json(capsys, p)
    assert rc == 1
    assert d["optimizer_check"]["checked"] is False
    assert (
        d["optimizer_check"]["message"] == "not loaded: the checkpoint has structural problems (see problems)"
    )


def dcp_save(state: dict[str, Any], path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group": a single-process save
        dcp.save(state, checkpoint_id=str(path))


def test_dcp_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = adam_ckpt()
    dcp_save(ckpt, tmp_path / "good")
    rc, out, err = inspect(capsys, str(tmp_path / "good"))
    assert rc == 0, out + err
    assert "optimizer: 1 param group(s), 4 params (4 with state)" in out
    ckpt["optimizer"]["state"][3]["exp_avg"][1] = float("nan")
    dcp_save(ckpt, tmp_path / "bad")
    rc, d = inspect_json(capsys, tmp_path / "bad")
    assert rc == 1
    assert d["format"] == "dcp"
    assert d["optimizer_check"]["errors"] == ["optimizer.state[3].exp_avg: 1 NaN in 2 elements"]


def test_dcp_load_matches_the_saved_state(tmp_path: Path) -> None:
    from fastckpt._safe_load import load_dcp

    ckpt = adam_ckpt()
    dcp_save(ckpt, tmp_path / "c")
    got = load_dcp(str(tmp_path / "c")).obj
    assert got["epoch"] == 2
    assert set(got["model"]) == set(ckpt["model"])
    for k, v in ckpt["model"].items():
        assert torch.equal(got["model"][k], v)
    assert set(got["optimizer"]["state"]) == {0, 1, 2, 3}
    for i, entry in ckpt["optimizer"]["state"].items():
        for name, v in entry.items():
            assert torch.equal(got["optimizer"]["state"][i][name], v), (i, name)
    assert got["optimizer"]["param_groups"][0]["params"] == [0, 1, 2, 3]
    only = load_dcp(str(tmp_path / "c"), only_optimizer=True).obj
    assert set(only) == {"optimizer"}


def test_plain_folder_checks_the_file_with_optimizer_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = adam_ckpt()
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    torch.save(ckpt["model"], folder / "pytorch_model.bin")
    ckpt["optimizer"]["state"][0]["exp_avg_sq"][0, 0] = -1.0
    torch.save(ckpt["optimizer"], folder / "optimizer.pt")
    rc, out, _ = inspect(capsys, str(folder))
    assert rc == 1
    assert "optimizer.pt:" in out
    assert "error: state[0].exp_avg_sq: 1 negative values in 12 elements" in out
    rc, d = inspect_json(capsys, folder)
    assert rc == 1
    oc = d["optimizer_check"]
    assert oc["found"] is True and oc["errors"][0].startswith("optimizer.pt: state[0].exp_avg_sq")
    assert list(oc["summary"]["files"]) == ["optimizer.pt"]
    per_file = {os.path.basename(f["path"]): f["optimizer_check"] for f in d["files"]}
    assert per_file["pytorch_model.bin"]["found"] is False
    assert per_file["optimizer.pt"]["found"] is True
