"""fastckpt.testing: assert_resumable passes for correct round trips of every optimizer kind and
names the right entry for each kind of broken restore; the bitwise comparison agrees with numpy."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt.errors import UsageError
from fastckpt.testing import (
    TrainingObjects,
    assert_resumable,
    assert_state_equal,
    capture_rng_state,
    capture_training_state,
    restore_rng_state,
    restore_training_state,
    state_difference,
    tensor_difference,
)

# ---------------------------------------------------------------- fixtures


def model_fn() -> torch.nn.Module:
    # BatchNorm gives buffers (running stats, an int64 counter); Dropout makes training use the RNG.
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.25),
        torch.nn.Linear(8, 1),
    )


def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def make_batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    return [(torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)) for _ in range(n)]


OPTIMIZERS = {
    "sgd_momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
    "sgd_nesterov": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
    "adam_amsgrad": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, amsgrad=True),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
    "adamw_two_groups": lambda m: torch.optim.AdamW(
        [
            {"params": list(m[0].parameters()), "lr": 1e-2},
            {"params": list(m[1].parameters()) + list(m[4].parameters()), "lr": 3e-3, "weight_decay": 0.0},
        ]
    ),
}


def adam(m: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(m.parameters(), lr=1e-2)


def step_lr(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def check_fails(match: str, **kwargs: Any) -> str:
    args: dict[str, Any] = {"optimizer_fn": adam, "scheduler_fn": step_lr, "use_scaler": True}
    args.update(kwargs)
    with pytest.raises(AssertionError, match=match) as info:
        assert_resumable(model_fn, args.pop("optimizer_fn"), loss_fn, make_batches(), **args)
    return str(info.value)


# ---------------------------------------------------------------- correct round trips pass


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_correct_restore_passes(name: str) -> None:
    assert_resumable(model_fn, OPTIMIZERS[name], loss_fn, make_batches())


@pytest.mark.parametrize(
    "scheduler_fn",
    [
        step_lr,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=20),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=2),
                torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
            ],
            milestones=[2],
        ),
    ],
    ids=["step", "cosine", "onecycle", "sequential"],
)
def test_with_scheduler_passes(scheduler_fn: Any) -> None:
    assert_resumable(model_fn, OPTIMIZERS["sgd_momentum"], loss_fn, make_batches(), scheduler_fn=scheduler_fn)


def test_with_scaler_and_scheduler_passes() -> None:
    assert_resumable(
        model_fn, OPTIMIZERS["adamw"], loss_fn, make_batches(), scheduler_fn=step_lr, use_scaler=True, steps=3
    )


def test_single_batch_and_zero_steps() -> None:
    assert_resumable(model_fn, adam, loss_fn, make_batches(1), steps=0)
    assert_resumable(model_fn, adam, loss_fn, make_batches(1), steps=3)


def test_caller_rng_is_left_as_it_was() -> None:
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    before = capture_rng_state()
    assert_resumable(model_fn, adam, loss_fn, make_batches())
    assert state_difference(before, capture_rng_state()) is None


def test_needs_a_batch() -> None:
    with pytest.raises(UsageError, match="at least one batch"):
        assert_resumable(model_fn, adam, loss_fn, [])


# ---------------------------------------------------------------- broken restores are named


def test_optimizer_state_dropped() -> None:
    def drop(state: dict[str, Any], objs: TrainingObjects) -> None:
        state["optimizer"]["state"] = {}
        restore_training_state(state, objs)

    msg = check_fails(r"optimizer\.state\[0\]: missing after restore", restore_fn=drop)
    assert msg.startswith("after restore: ")
    assert "exp_avg" in msg


def test_optimizer_never_loaded() -> None:
    def skip(state: dict[str, Any], objs: TrainingObjects) -> None:
        del state["optimizer"]
        objs.model.load_state_dict(state["model"])
        objs.scheduler.load_state_dict(state["scheduler"])
        objs.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])

    check_fails(r"optimizer\.state\[0\]: missing after restore", restore_fn=skip)


def test_one_moment_perturbed() -> None:
    def perturb(state: dict[str, Any], objs: TrainingObjects) -> None:
        state["optimizer"]["state"][2]["exp_avg_sq"][3] += 1e-3
        restore_training_state(state, objs)

    msg = check_fails(
        r"optimizer\.state\[2\]\.exp_avg_sq differs: 1/8 elements, max abs diff", restore_fn=perturb
    )
    assert "0.001" in msg


def test_momentum_buffer_dropped() -> None:
    def drop(state: dict[str, Any], objs: TrainingObjects) -> None:
        for entry in state["optimizer"]["state"].values():
            entry.pop("momentum_buffer")
        restore_training_state(state, objs)

    check_fails(
        r"optimizer\.state\[0\]\.momentum_buffer: missing after restore",
        optimizer_fn=OPTIMIZERS["sgd_momentum"],
        restore_fn=drop,
    )


def test_step_counter_wrong() -> None:
    def reset(state: dict[str, Any], objs: TrainingObjects) -> None:
        for entry in state["optimizer"]["state"].values():
            entry["step"] = torch.zeros_like(entry["step"])
        restore_training_state(state, objs)

    check_fails(r"optimizer\.state\[0\]\.step differs: 1/1 elements, max abs diff 4", restore_fn=reset)


def test_scheduler_skipped() -> None:
    def skip(state: dict[str, Any], objs: TrainingObjects) -> None:
        state["scheduler"] = None
        restore_training_state(state, objs)

    check_fails(
        r"^after restore: scheduler\['last_epoch'\]: 4 \(original\) != 0 \(restored\)$", restore_fn=skip
    )


def test_scaler_skipped() -> None:
    def skip(state: dict[str, Any], objs: TrainingObjects) -> None:
        state["scaler"] = None
        restore_training_state(state, objs)

    check_fails(
        r"^after restore: scaler\['_growth_tracker'\]: 4 \(original\) != 0 \(restored\)$", restore_fn=skip
    )


@pytest.mark.parametrize("generator", ["torch", "numpy", "python"])
def test_rng_not_restored(generator: str) -> None:
    def skip_one(state: dict[str, Any], objs: TrainingObjects) -> None:
        rng = state["rng"]
        restore_training_state({**state, "rng": capture_rng_state()}, objs)
        partial = {k: v for k, v in rng.items() if k != generator}
        partial.update({generator: capture_rng_state()[generator]})
        restore_rng_state(partial)

    check_fails(
        rf"^after restore: rng\.{generator}: the global random generator state differs", restore_fn=skip_one
    )


def test_param_group_lr_altered() -> None:
    def alter(state: dict[str, Any], objs: TrainingObjects) -> None:
        restore_training_state(state, objs)
        objs.optimizer.param_groups[0]["lr"] = 0.001

    msg = check_fails(r"optimizer\.param_groups\[0\]\['lr'\]: ", restore_fn=alter, scheduler_fn=None)
    assert msg == "after restore: optimizer.param_groups[0]['lr']: 0.01 (original) != 0.001 (restored)"


def test_buffer_not_restored() -> None:
    def drop(state: dict[str, Any], objs: TrainingObjects) -> None:
        del state["model"]["1.running_mean"]
        objs.model.load_state_dict(state["model"], strict=False)
        objs.optimizer.load_state_dict(state["optimizer"])
        objs.scheduler.load_state_dict(state["scheduler"])
        objs.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])

    check_fails(
        r"^after restore: model\.1\.running_mean differs: 8/8 elements, max abs diff", restore_fn=drop
    )


def test_param_not_restored() -> None:
    def drop(state: dict[str, Any], objs: TrainingObjects) -> None:
        state["model"]["4.bias"] = torch.zeros(1)
        restore_training_state(state, objs)

    check_fails(r"^after restore: model\.4\.bias differs: 1/1 elements", restore_fn=drop)


def test_hidden_optimizer_state_caught_by_continuation() -> None:
    """State that never reaches state_dict passes the restore check; training on exposes it."""

    class WarmupSGD(torch.optim.SGD):
        def __init__(self, params: Any) -> None:
            super().__init__(params, lr=0.05, momentum=0.9)
            self.calls = 0  # not in state_dict: lost on every resume

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            self.calls += 1
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(min(1.0, self.calls / 8))
            return super().step(closure)

    with pytest.raises(AssertionError, match=r"^after 1 more training step: model\.0\.weight differs: "):
        assert_resumable(model_fn, lambda m: WarmupSGD(m.parameters()), loss_fn, make_batches())


class NotAllowlisted:
    """A picklable class that torch.load(weights_only=True) refuses."""


def test_state_not_loadable_with_weights_only() -> None:
    def save(objs: TrainingObjects) -> dict[str, Any]:
        return {**capture_training_state(objs), "extra": NotAllowlisted()}

    with pytest.raises(AssertionError, match=r"does not load with torch\.load\(weights_only=True\)"):
        assert_resumable(model_fn, adam, loss_fn, make_batches(), save_fn=save)


def test_custom_save_and_restore_pair() -> None:
    """A user's own checkpoint layout works through the hooks."""

    def save(objs: TrainingObjects) -> dict[str, Any]:
        return {
            "weights": objs.model.state_dict(),
            "optim": objs.optimizer.state_dict(),
            "rng": capture_rng_state(),
        }

    def restore(ckpt: dict[str, Any], objs: TrainingObjects) -> None:
        objs.model.load_state_dict(ckpt["weights"])
        objs.optimizer.load_state_dict(ckpt["optim"])
        restore_rng_state(ckpt["rng"])

    assert_resumable(model_fn, adam, loss_fn, make_batches(), save_fn=save, restore_fn=restore)


def test_state_not_picklable() -> None:
    def save(objs: TrainingObjects) -> dict[str, Any]:
        return {**capture_training_state(objs), "hook": lambda: None}

    with pytest.raises(AssertionError, match=r"cannot be saved with torch\.save"):
        assert_resumable(model_fn, adam, loss_fn, make_batches(), save_fn=save)


# ---------------------------------------------------------------- bitwise comparison


def numpy_differing(a: np.ndarray, b: np.ndarray) -> int:
    """Reference: the number of elements whose bytes differ."""
    width = a.dtype.itemsize
    ab = np.frombuffer(a.tobytes(), dtype=np.uint8).reshape(-1, width)
    bb = np.frombuffer(b.tobytes(), dtype=np.uint8).reshape(-1, width)
    return int((ab != bb).any(axis=1).sum())


SPECIALS = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.5]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(SPECIALS) | st.floats(width=32), min_size=1, max_size=40),
    st.data(),
    st.sampled_from(["float32", "float64", "float16"]),
)
def test_tensor_difference_counts_bytes_like_numpy(values: list[float], data: Any, dtype: str) -> None:
    with np.errstate(over="ignore"):  # float32 values overflow to inf in float16: still a valid input
        a = np.array(values, dtype=dtype)
        b = a.copy()
        for i in data.draw(st.lists(st.integers(0, len(values) - 1), max_size=5)):
            b[i] = data.draw(st.sampled_from(SPECIALS) | st.floats(width=16))
    expected = numpy_differing(a, b)
    got = tensor_difference(torch.from_numpy(a), torch.from_numpy(b))
    if expected == 0:
        assert got is None
    else:
        assert got is not None and got.startswith(f"{expected}/{len(values)} elements")


def test_tensor_difference_is_bitwise() -> None:
    nan = torch.tensor([float("nan")])
    assert tensor_difference(nan, nan.clone()) is None  # torch.equal says False here
    other_nan = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    assert tensor_difference(nan, other_nan) == "1/1 elements, NaN/Inf involved"
    assert tensor_difference(torch.tensor([0.0]), torch.tensor([-0.0])) == (
        "1/1 elements, equal in value (sign of zero or NaN payload differs)"
    )


@pytest.mark.parametrize(
    "dtype",
    [torch.bfloat16, torch.float16, torch.complex64, torch.complex128, torch.bool, torch.int8, torch.int64],
)
def test_tensor_difference_dtypes(dtype: torch.dtype) -> None:
    a = torch.zeros(5, 3, dtype=dtype)
    b = a.clone()
    assert tensor_difference(a, b) is None
    b[2, 1] = 1
    assert tensor_difference(a, b).startswith("1/15 elements")  # type: ignore[union-attr]


def test_tensor_difference_zero_dim_and_views() -> None:
    assert tensor_difference(torch.tensor(3.0), torch.tensor(3.0)) is None
    assert tensor_difference(torch.tensor(3.0), torch.tensor(4.0)) == "1/1 elements, max abs diff 1"
    base = torch.arange(12.0).reshape(3, 4)
    assert tensor_difference(base.t(), base.t().contiguous()) is None


def test_tensor_difference_dtype_and_shape() -> None:
    assert (
        tensor_difference(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) == "dtype float32 != float64"
    )
    assert tensor_difference(torch.zeros(2, 3), torch.zeros(3, 2)) == "shape (2, 3) != (3, 2)"


def test_state_difference_paths_and_floats() -> None:
    a = {"groups": [{"lr": 0.1, "betas": (0.9, 0.999)}], "t": torch.ones(2)}
    assert state_difference(a, {"groups": [{"lr": 0.1, "betas": (0.9, 0.999)}], "t": torch.ones(2)}) is None
    assert (
        state_difference(a, {"groups": [{"lr": 0.1, "betas": (0.9, 0.99)}], "t": torch.ones(2)}, "s")
        == "s['groups'][0]['betas'][1]: 0.999 (original) != 0.99 (restored)"
    )
    assert state_difference({"x": 0.0}, {"x": -0.0}) == "state['x']: 0.0 (original) != -0.0 (restored)"
    assert state_difference({"x": float("nan")}, {"x": float("nan")}) is None
    assert state_difference({"x": 1}, {"x": True}) is not None
    assert state_difference({"x": 1}, {}) == "state['x']: missing after restore"
    assert state_difference({}, {"y": 1}) == "state['y']: present after restore but not in the original"
    with pytest.raises(AssertionError, match=r"state\['t'\] differs: 1/2 elements"):
        assert_state_equal({"t": torch.ones(2)}, {"t": torch.tensor([1.0, 2.0])})


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Any) -> None:
    torch.manual_seed(3)
    state = capture_rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(torch.load(path, weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
