"""fastckpt.check_optimizer_state on real optimizer state_dicts (every torch.optim optimizer) and
on corrupted ones: each corruption is reported at its entry, correct state passes."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt import optimizer_check
from fastckpt.errors import UsageError


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def trained_state(make_opt: Any, steps: int = 3) -> dict[str, Any]:
    model = tiny_model()
    opt = make_opt(model.parameters())
    x = torch.randn(5, 3)
    for _ in range(steps):

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss

        opt.step(closure)
    return opt.state_dict()


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "adadelta": lambda p: torch.optim.Adadelta(p),
    "adamax": lambda p: torch.optim.Adamax(p),
    "asgd": lambda p: torch.optim.ASGD(p),
    "nadam": lambda p: torch.optim.NAdam(p),
    "radam": lambda p: torch.optim.RAdam(p),
    "rmsprop_centered": lambda p: torch.optim.RMSprop(p, momentum=0.5, centered=True),
    "rprop": lambda p: torch.optim.Rprop(p),
    "adafactor": lambda p: torch.optim.Adafactor(p),
    "lbfgs": lambda p: torch.optim.LBFGS(p, max_iter=3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_real_optimizer_state_passes(name: str) -> None:
    sd = trained_state(OPTIMIZERS[name])
    report = fastckpt.check_optimizer_state(sd)
    assert report.ok, report.errors
    assert report.warnings == []
    summary = report.summary["optimizers"][0]
    assert summary["params"] == 4
    assert summary["path"] == ""
    json.dumps(report.to_json(), allow_nan=False)


def test_summary_contents() -> None:
    sd = trained_state(OPTIMIZERS["adamw"], steps=5)
    opt = fastckpt.check_optimizer_state(sd).summary["optimizers"][0]
    assert opt["params_with_state"] == 4
    assert opt["params_without_state"] == []
    assert opt["state_keys"] == {"step": 4, "exp_avg": 4, "exp_avg_sq": 4}
    assert opt["steps"] == {"min": 5.0, "max": 5.0, "params": 4}
    hyper = opt["param_groups"][0]["hyperparameters"]
    assert hyper["lr"] == 1e-3 and hyper["betas"] == [0.9, 0.999] and hyper["weight_decay"] == 0.01
    assert opt["tensors"] == 8


def test_survives_weights_only_round_trip() -> None:
    buf = io.BytesIO()
    torch.save({"model": tiny_model().state_dict(), "optimizer": trained_state(OPTIMIZERS["adam"])}, buf)
    buf.seek(0)
    report = fastckpt.check_optimizer_state(torch.load(buf, weights_only=True))
    assert report.ok
    assert report.summary["optimizers"][0]["path"] == "optimizer"


def test_frozen_params_without_state_are_fine() -> None:
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    report = fastckpt.check_optimizer_state(opt.state_dict())
    assert report.ok and report.warnings == []
    assert report.summary["optimizers"][0]["params_without_state"] == [0]


def test_lagging_param_is_a_warning_not_an_error() -> None:
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters())
    for i in range(4):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(2, 3)).sum().backward()
        if i % 2:
            model[2].bias.grad = None  # no gradient on this step: Adam skips the param
        opt.step()
    report = fastckpt.check_optimizer_state(opt.state_dict())
    assert report.ok
    assert len(report.warnings) == 1
    assert "step counts differ across params (2.0 to 4.0; behind the maximum: 3)" in report.warnings[0]
    assert report.summary["optimizers"][0]["steps"] == {"min": 2.0, "max": 4.0, "params": 4}


# ---------------------------------------------------------------- corruptions


def adam_state() -> dict[str, Any]:
    return trained_state(OPTIMIZERS["adam"])


def only_error(sd: Any) -> str:
    report = fastckpt.check_optimizer_state(sd)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def test_state_for_unlisted_param() -> None:
    sd = adam_state()
    sd["state"][7] = copy.deepcopy(sd["state"][0])
    assert only_error(sd) == "state[7]: belongs to no param listed in param_groups"


def test_param_in_two_groups() -> None:
    sd = adam_state()
    sd["param_groups"].append({**sd["param_groups"][0], "params": [2]})
    assert only_error(sd) == "param_groups[1]: param 2 is also listed in param_groups[0]"


def test_moment_shapes_disagree() -> None:
    sd = adam_state()
    sd["state"][1]["exp_avg_sq"] = torch.zeros(5)
    assert only_error(sd) == "state[1]: moment shapes disagree: exp_avg [4], exp_avg_sq [5]"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (torch.tensor(-1.0), "state[0].step: -1.0 is not a finite non-negative step count"),
        (torch.tensor(float("nan")), "state[0].step: nan is not a finite non-negative step count"),
        (float("inf"), "state[0].step: inf is not a finite non-negative step count"),
        (-3, "state[0].step: -3.0 is not a finite non-negative step count"),
        (torch.tensor([1.0, 2.0]), "state[0].step: expected a single number, got Tensor float32[2]"),
    ],
)
def test_bad_step(step: Any, expected: str) -> None:
    sd = adam_state()
    sd["state"][0]["step"] = step
    assert only_error(sd) == expected


def test_fractional_step_is_a_warning() -> None:
    sd = adam_state()
    for entry in sd["state"].values():
        entry["step"] = torch.tensor(2.5)
    report = fastckpt.check_optimizer_state(sd)
    assert report.ok
    assert report.warnings[0] == "state[0].step: 2.5 is not a whole number of steps"


def test_nan_and_inf_in_moments() -> None:
    sd = adam_state()
    sd["state"][2]["exp_avg"].view(-1)[[0, 3]] = float("nan")
    sd["state"][2]["exp_avg"].view(-1)[5] = float("-inf")
    assert only_error(sd) == "state[2].exp_avg: 2 NaN and 1 Inf in 8 elements"


def test_nan_in_momentum_buffer() -> None:
    sd = trained_state(OPTIMIZERS["sgd_momentum"])
    sd["state"][3]["momentum_buffer"][1] = float("nan")
    assert only_error(sd) == "state[3].momentum_buffer: 1 NaN in 2 elements"


def test_negative_second_moment() -> None:
    sd = adam_state()
    sd["state"][0]["exp_avg_sq"][0, :2] = -1.0
    assert only_error(sd) == (
        "state[0].exp_avg_sq: 2 negative values in 12 elements (a second-moment estimate is never negative)"
    )


def test_bad_learning_rate() -> None:
    sd = adam_state()
    sd["param_groups"][0]["lr"] = float("nan")
    assert only_error(sd) == "param_groups[0]['lr']: nan is not a finite non-negative learning rate"
    assert (
        fastckpt.check_optimizer_state(sd).to_json()["summary"]["optimizers"][0]["param_groups"][0][
            "hyperparameters"
        ]["lr"]
        == "nan"
    )


def test_malformed_entries() -> None:
    sd = adam_state()
    sd["state"][1] = [1, 2]
    sd["param_groups"][0] = {**sd["param_groups"][0]}
    del sd["param_groups"][0]["params"]
    report = fastckpt.check_optimizer_state(sd)
    assert report.errors[0] == "param_groups[0]: has no 'params' list"
    assert "state[1]: expected a dict of per-param state, got list" in report.errors


def test_errors_are_prefixed_with_the_checkpoint_path() -> None:
    sd = adam_state()
    sd["state"][0]["exp_avg"][0, 0] = float("inf")
    assert only_error({"epoch": 3, "optim": sd}) == "optim.state[0].exp_avg: 1 Inf in 12 elements"


def test_string_keyed_state() -> None:
    """torch.distributed.checkpoint's get_optimizer_state_dict keys state by parameter name."""
    sd = adam_state()
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = {
        "state": {names[i]: v for i, v in sd["state"].items()},
        "param_groups": [{**sd["param_groups"][0], "params": names}],
    }
    assert fastckpt.check_optimizer_state(named).ok
    named["state"]["1.weight"] = named["state"].pop("0.weight")
    assert only_error(named) == "state['1.weight']: belongs to no param listed in param_groups"


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("key", ["optimizer", "optim", "optimizer_state_dict", "opt"])
def test_detects_common_keys(key: str) -> None:
    report = fastckpt.check_optimizer_state({"model": {"w": torch.zeros(2)}, key: adam_state(), "epoch": 1})
    assert [o["path"] for o in report.summary["optimizers"]] == [key]


def test_detects_lightning_list_and_several_optimizers() -> None:
    lightning = {"state_dict": {}, "optimizer_states": [adam_state()], "lr_schedulers": []}
    report = fastckpt.check_optimizer_state(lightning)
    assert [o["path"] for o in report.summary["optimizers"]] == ["optimizer_states.0"]
    gan = {"opt_g": adam_state(), "opt_d": trained_state(OPTIMIZERS["sgd_momentum"])}
    assert [o["path"] for o in fastckpt.check_optimizer_state(gan).summary["optimizers"]] == [
        "opt_g",
        "opt_d",
    ]
    assert [o["path"] for o in fastckpt.check_optimizer_state(gan, key="opt_d").summary["optimizers"]] == [
        "opt_d"
    ]


def test_no_optimizer_state() -> None:
    with pytest.raises(UsageError, match=r"no optimizer state_dict found.*'model', 'epoch'"):
        fastckpt.check_optimizer_state({"model": {"w": torch.zeros(2)}, "epoch": 1})
    with pytest.raises(UsageError, match="not an optimizer state_dict"):
        fastckpt.check_optimizer_state({"optimizer": {"lr": 1}}, key="optimizer")


# ---------------------------------------------------------------- tensor kinds


def test_numpy_and_opaque_tensors() -> None:
    sd = adam_state()
    as_numpy = {
        "state": {p: {k: v.numpy() for k, v in e.items()} for p, e in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    assert fastckpt.check_optimizer_state(as_numpy).ok
    as_numpy["state"][0]["exp_avg"][1, 1] = np.nan
    assert only_error(as_numpy) == "state[0].exp_avg: 1 NaN in 12 elements"

    class Opaque:  # a lazily-read tensor from some reader: shape and dtype only
        shape = (4, 3)
        dtype = "float32"

        def __array__(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("not loaded")

    sd["state"][0]["exp_avg"] = Opaque()
    report = fastckpt.check_optimizer_state(sd)
    assert report.ok
    assert report.warnings == ["state[0].exp_avg: values not checked (Opaque float32[4, 3] cannot be read)"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.float8_e5m2])
def test_low_precision_moments(dtype: torch.dtype) -> None:
    sd = adam_state()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].to(dtype)
    assert fastckpt.check_optimizer_state(sd).ok
    sd["state"][0]["exp_avg"][2, 1] = float("inf")
    assert only_error(sd) == "state[0].exp_avg: 1 Inf in 12 elements"


def test_meta_tensors_are_not_read() -> None:
    sd = adam_state()
    sd["state"][0]["exp_avg"] = torch.empty(4, 3, device="meta")
    report = fastckpt.check_optimizer_state(sd)
    assert report.ok and "state[0].exp_avg: values not checked" in report.warnings[0]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from([0.0, 1.5, -2.0, float("nan"), float("inf"), -float("inf")]), min_size=1, max_size=50
    )
)
def test_counts_match_numpy_across_chunks(values: list[float]) -> None:
    arr = np.array(values, dtype=np.float32)
    expected = (int(np.isnan(arr).sum()), int(np.isinf(arr).sum()), int((arr < 0).sum()))
    old = optimizer_check._CHUNK
    optimizer_check._CHUNK = 7  # several chunks, with a ragged tail
    try:
        for x in (torch.from_numpy(arr), arr):
            found = optimizer_check._scan(x, want_negative=True)
            assert (found.nan, found.inf, found.negative) == expected
    finally:
        optimizer_check._CHUNK = old


def test_format_text() -> None:
    sd = adam_state()
    ok_text = fastckpt.check_optimizer_state({"optimizer": sd}).format_text()
    assert ok_text.startswith(
        "optimizer: 1 param group(s), 4 params (4 with state); per-param state: step, exp_avg"
    )
    assert "  group 0: 4 params; lr=0.001" in ok_text
    assert ok_text.endswith("OK: 0 error(s), 0 warning(s)")
    sd["state"][0]["step"] = torch.tensor(-1.0)
    bad = fastckpt.check_optimizer_state(sd).format_text()
    assert "error: state[0].step: -1.0 is not a finite non-negative step count" in bad
    assert bad.endswith("FAILED: 1 error(s), 0 warning(s)")


def test_audit_modules_import_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fastckpt, fastckpt.testing, fastckpt.distributed, fastckpt.optimizer_check;"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
