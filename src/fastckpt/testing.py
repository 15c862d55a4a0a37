"""Test helpers for training code: `assert_resumable` checks that a save/restore round trip of the
full training state (model, optimizer, scheduler, GradScaler, global RNGs) is exact, bit for bit.

This module owns the training-state round trip and the bitwise comparison it reports with. It is
meant for pytest (failures are `AssertionError`s naming the first entry that diverges) and imports
torch only when a function is called.
"""

from __future__ import annotations

import copy
import io
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "TrainingObjects",
    "assert_resumable",
    "assert_state_equal",
    "capture_rng_state",
    "capture_training_state",
    "restore_rng_state",
    "restore_training_state",
    "state_difference",
    "tensor_difference",
]


@dataclass
class TrainingObjects:
    """The live objects of one training run. `scheduler` and `scaler` are None when unused."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scaler: Any = None


# ---------------------------------------------------------------- bitwise comparison


def _as_integer_elements(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes viewed as one integer per element (2-D for elements wider than 8 bytes),
    so that equality is bitwise: NaN equals the same NaN payload, -0.0 differs from 0.0."""
    import torch

    flat = t.detach().reshape(-1).contiguous()
    if flat.is_conj():
        flat = flat.resolve_conj()
    if flat.is_neg():
        flat = flat.resolve_neg()
    size = flat.element_size()
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if size in as_int:
        return flat.view(as_int[size])
    return flat.view(torch.int64).reshape(flat.numel(), size // 8)


def tensor_difference(expected: torch.Tensor, actual: torch.Tensor) -> str | None:
    """None when the two tensors have the same dtype, shape and bytes; else what differs, e.g.
    ``"1024/4096 elements, max abs diff 1.2e-03"`` or ``"dtype float32 != bfloat16"``.

    Unlike `torch.equal`, the comparison is bitwise: a NaN equals a NaN with the same bits, and
    -0.0 differs from 0.0. Tensors on different devices are compared on the host.
    """
    import torch

    if expected.dtype != actual.dtype:
        return f"dtype {_dtype(expected.dtype)} != {_dtype(actual.dtype)}"
    if tuple(expected.shape) != tuple(actual.shape):
        return f"shape {tuple(expected.shape)} != {tuple(actual.shape)}"
    if expected.device != actual.device:
        expected, actual = expected.cpu(), actual.cpu()
    a, b = _as_integer_elements(expected), _as_integer_elements(actual)
    if torch.equal(a, b):
        return None
    differs = a != b
    if differs.dim() == 2:
        differs = differs.any(dim=1)
    count = int(differs.sum())
    return f"{count}/{expected.numel()} elements" + _max_abs_diff(expected, actual, differs)


def _max_abs_diff(expected: torch.Tensor, actual: torch.Tensor, differs: torch.Tensor) -> str:
    import torch

    if expected.dtype == torch.bool:
        return ""
    try:
        wide = torch.complex128 if expected.dtype.is_complex else torch.float64
        x = expected.detach().reshape(-1)[differs].to(wide)
        y = actual.detach().reshape(-1)[differs].to(wide)
    except (RuntimeError, TypeError):  # dtypes without conversions (e.g. some float8 or bit types)
        return ""
    diff = (x - y).abs()
    finite = torch.isfinite(diff)
    notes = []
    if bool(finite.any()):
        notes.append(f", max abs diff {float(diff[finite].max()):.3g}")
    if not bool(finite.all()):
        notes.append(", NaN/Inf involved")
    if bool(finite.all()) and float(diff.max()) == 0.0:
        notes = [", equal in value (sign of zero or NaN payload differs)"]
    return "".join(notes)


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def state_difference(expected: Any, actual: Any, path: str = "state") -> str | None:
    """The first difference between two nested training states (dicts, lists, tuples, tensors,
    numbers, strings), as one line naming its path, or None when they are bitwise equal.

    Dict keys are visited in the expected object's order; floats are compared by their bits.
    """
    if _is_tensor(expected) or _is_tensor(actual):
        if not (_is_tensor(expected) and _is_tensor(actual)):
            return f"{path}: {type(expected).__name__} (original) != {type(actual).__name__} (restored)"
        diff = tensor_difference(expected, actual)
        return None if diff is None else f"{path} differs: {diff}"
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        for key in expected:
            sub = f"{path}[{key!r}]"
            if key not in actual:
                return f"{sub}: missing after restore"
            diff = state_difference(expected[key], actual[key], sub)
            if diff is not None:
                return diff
        extra = [k for k in actual if k not in expected]
        if extra:
            return f"{path}[{extra[0]!r}]: present after restore but not in the original"
        return None
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) != len(actual):
            return f"{path}: length {len(expected)} (original) != {len(actual)} (restored)"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diff = state_difference(e, a, f"{path}[{i}]")
            if diff is not None:
                return diff
        return None
    if isinstance(expected, float) and isinstance(actual, float):
        same = _float_bits(expected) == _float_bits(actual)
    elif type(expected) is not type(actual):
        return f"{path}: {_fmt(expected)} (original) != {_fmt(actual)} (restored) (type {type(expected).__name__} != {type(actual).__name__})"
    else:
        try:
            same = bool(expected == actual)
        except Exception:  # objects whose == raises or is ambiguous: fall back to identity of repr
            same = repr(expected) == repr(actual)
    if same:
        return None
    return f"{path}: {_fmt(expected)} (original) != {_fmt(actual)} (restored)"


def assert_state_equal(expected: Any, actual: Any, path: str = "state") -> None:
    """Raises AssertionError naming the first entry where two nested states differ bitwise."""
    diff = state_difference(expected, actual, path)
    if diff is not None:
        raise AssertionError(diff)


# ---------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """The global random generator states as plain tensors, lists and numbers, so that the result
    loads with ``torch.load(weights_only=True)``: torch CPU, every CUDA device (when available),
    numpy's legacy global generator (when numpy is installed) and python's `random`."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        state["numpy"] = {
            "bit_generator": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        }
    version, internal, gauss_next = random.getstate()
    state["python"] = {"version": version, "state": list(internal), "gauss_next": gauss_next}
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Sets the global random generators from `capture_rng_state()`'s result (as loaded back)."""
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state(
            (
                s["bit_generator"],
                np.array(s["keys"], dtype=np.uint32),
                s["pos"],
                s["has_gauss"],
                s["cached_gaussian"],
            )
        )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def _scramble_rng() -> None:
    """Moves every global generator to an unrelated state, so that a restore that forgets the RNG
    is caught even when building the fresh objects consumes no random numbers."""
    import torch

    torch.manual_seed(0x5EED_F00D)
    random.seed(0x5EED_F00D)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(0x5EED_F00D % (1 << 32))


# ---------------------------------------------------------------- training state


def capture_training_state(objects: TrainingObjects) -> dict[str, Any]:
    """The full training state as a dict of copies (later training does not change it):
    ``{"model", "optimizer", "scheduler", "scaler", "rng"}``; absent parts are None."""
    return {
        "model": copy.deepcopy(objects.model.state_dict()),
        "optimizer": copy.deepcopy(objects.optimizer.state_dict()),
        "scheduler": None if objects.scheduler is None else copy.deepcopy(objects.scheduler.state_dict()),
        "scaler": None if objects.scaler is None else copy.deepcopy(objects.scaler.state_dict()),
        "rng": capture_rng_state(),
    }


def restore_training_state(state: Mapping[str, Any], objects: TrainingObjects) -> None:
    """Loads a `capture_training_state()` result into freshly built objects, RNG included."""
    objects.model.load_state_dict(state["model"])
    objects.optimizer.load_state_dict(state["optimizer"])
    if objects.scheduler is not None and state.get("scheduler") is not None:
        objects.scheduler.load_state_dict(state["scheduler"])
    if objects.scaler is not None and state.get("scaler") is not None:
        objects.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])


def _roundtrip(state: Any) -> Any:
    """torch.save to memory, then torch.load(weights_only=True): the way a careful resume reads."""
    import pickle

    import torch

    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise AssertionError(f"the training state cannot be saved with torch.save: {exc}") from exc
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AssertionError(
            "the saved training state does not load with torch.load(weights_only=True): "
            f"{first} (store only tensors, numbers, strings, lists, tuples and dicts)"
        ) from exc


def _device_of(model: torch.nn.Module) -> str:
    for p in model.parameters():
        return p.device.type
    return "cpu"


def _build(
    model_fn: Callable[[], torch.nn.Module],
    optimizer_fn: Callable[[torch.nn.Module], torch.optim.Optimizer],
    scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None,
    use_scaler: bool,
) -> TrainingObjects:
    import torch

    model = model_fn()
    model.train()
    optimizer = optimizer_fn(model)
    scheduler = None if scheduler_fn is None else scheduler_fn(optimizer)
    scaler = torch.amp.GradScaler(_device_of(model)) if use_scaler else None
    return TrainingObjects(model, optimizer, scheduler, scaler)


def _train_step(
    objects: TrainingObjects, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], batch: Any
) -> torch.Tensor:
    opt, scaler = objects.optimizer, objects.scaler
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(objects.model, batch)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    if objects.scheduler is not None:
        objects.scheduler.step()
    return loss.detach().clone()


def _compare_objects(original: TrainingObjects, restored: TrainingObjects) -> str | None:
    """The first difference between two live training states, in a fixed order: model,
    optimizer per-param state, optimizer param_groups, scheduler, scaler."""
    diff = _model_difference(original.model.state_dict(), restored.model.state_dict())
    if diff is not None:
        return diff
    o_opt, r_opt = original.optimizer.state_dict(), restored.optimizer.state_dict()
    o_state, r_state = o_opt.get("state", {}), r_opt.get("state", {})
    for idx in o_state:
        if idx not in r_state:
            names = ", ".join(str(k) for k in o_state[idx])
            return f"optimizer.state[{idx}]: missing after restore (the original has {names})"
        for name, value in o_state[idx].items():
            path = f"optimizer.state[{idx}].{name}"
            if name not in r_state[idx]:
                return f"{path}: missing after restore"
            diff = state_difference(value, r_state[idx][name], path)
            if diff is not None:
                return diff
        extra = [k for k in r_state[idx] if k not in o_state[idx]]
        if extra:
            return f"optimizer.state[{idx}].{extra[0]}: present after restore but not in the original"
    extra_idx = [i for i in r_state if i not in o_state]
    if extra_idx:
        return f"optimizer.state[{extra_idx[0]}]: present after restore but not in the original"
    diff = state_difference(o_opt.get("param_groups"), r_opt.get("param_groups"), "optimizer.param_groups")
    if diff is not None:
        return diff
    if original.scheduler is not None:
        diff = state_difference(original.scheduler.state_dict(), restored.scheduler.state_dict(), "scheduler")
        if diff is not None:
            return diff
    if original.scaler is not None:
        diff = state_difference(original.scaler.state_dict(), restored.scaler.state_dict(), "scaler")
        if diff is not None:
            return diff
    return None


def _model_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    for key, value in expected.items():
        if key not in actual:
            return f"model.{key}: missing after restore"
        diff = state_difference(value, actual[key], f"model.{key}")
        if diff is not None:
            return diff
    extra = [k for k in actual if k not in expected]
    if extra:
        return f"model.{extra[0]}: present after restore but not in the original"
    return None


def _rng_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    for name in expected:
        if name not in actual or state_difference(expected[name], actual[name]) is not None:
            return f"rng.{name}: the global random generator state differs from the saved one (not restored?)"
    return None


def _numbered(seq: Sequence[Any], i: int) -> Any:
    return seq[i % len(seq)]


def assert_resumable(
    model_fn: Callable[[], torch.nn.Module],
    optimizer_fn: Callable[[torch.nn.Module], torch.optim.Optimizer],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batches: Sequence[Any],
    scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None = None,
    use_scaler: bool = False,
    steps: int = 2,
    *,
    save_fn: Callable[[TrainingObjects], Any] = capture_training_state,
    restore_fn: Callable[[Any, TrainingObjects], None] = restore_training_state,
) -> None:
    """Asserts that the training state survives a save and restore exactly, and that training
    continues identically afterwards.

    It builds ``model = model_fn()``, ``optimizer = optimizer_fn(model)``, ``scheduler =
    scheduler_fn(optimizer)`` and, with `use_scaler`, a ``torch.amp.GradScaler`` for the model's
    device, then trains one step per batch in `batches` (``loss_fn(model, batch)`` returns the
    loss; the scheduler steps without arguments after each optimizer step). It then:

    1. saves the state with ``save_fn(objects)``, writes it with ``torch.save`` to memory and reads
       it back with ``torch.load(weights_only=True)``;
    2. moves the global RNGs away, builds fresh objects the same way, and calls
       ``restore_fn(loaded, fresh_objects)``;
    3. checks, bit for bit, the model's parameters and buffers, every per-parameter optimizer
       tensor and step counter, the optimizer's param_groups, the scheduler's and GradScaler's
       state and the global RNG states (torch CPU, CUDA when available, numpy, python random);
    4. trains `steps` more steps on the original and on the restored objects (batches continue
       cyclically) and checks the losses and the full state after each step.

    `save_fn` and `restore_fn` default to `capture_training_state` / `restore_training_state`;
    pass your own to test your checkpointing code. A failure raises AssertionError naming the
    first entry that diverges, e.g. ``after restore: optimizer.state[3].exp_avg differs:
    1024/4096 elements, max abs diff 0.0012``. The caller's global RNG states are restored on exit.
    """
    if len(batches) == 0:
        raise UsageError("assert_resumable needs at least one batch to train on before saving")
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    caller_rng = capture_rng_state()
    try:
        original = _build(model_fn, optimizer_fn, scheduler_fn, use_scaler)
        for batch in batches:
            _train_step(original, loss_fn, batch)
        saved_rng = capture_rng_state()
        loaded = _roundtrip(save_fn(original))

        _scramble_rng()
        restored = _build(model_fn, optimizer_fn, scheduler_fn, use_scaler)
        restore_fn(loaded, restored)
        diff = _compare_objects(original, restored) or _rng_difference(saved_rng, capture_rng_state())
        if diff is not None:
            raise AssertionError(f"after restore: {diff}")

        # Interleave the two runs, handing each its own RNG stream, and compare after every step.
        rng_restored = rng_original = saved_rng
        for i in range(steps):
            batch = _numbered(batches, len(batches) + i)
            restore_rng_state(rng_restored)
            loss_r = _train_step(restored, loss_fn, batch)
            rng_restored = capture_rng_state()
            restore_rng_state(rng_original)
            loss_o = _train_step(original, loss_fn, batch)
            rng_original = capture_rng_state()
            where = f"after {i + 1} more training step{'s' if i else ''}"
            diff = (
                state_difference(loss_o, loss_r, "loss")
                or _compare_objects(original, restored)
                or _rng_difference(rng_original, rng_restored)
            )
            if diff is not None:
                raise AssertionError(f"{where}: {diff}")
    finally:
        restore_rng_state(caller_rng)
