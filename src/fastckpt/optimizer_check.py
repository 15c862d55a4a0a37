"""Validation of an optimizer state_dict without the model: `check_optimizer_state`.

This module owns the structural and numerical checks of optimizer state as it sits in a
checkpoint: state entries that belong to no parameter, moment tensors whose shapes disagree, step
counters that are negative or not finite, moments holding NaN/Inf or negative second moments. It
works on already-loaded Python objects (torch tensors, numpy arrays, or anything with `.shape` and
`.dtype`) and never imports torch itself.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

__all__ = ["OptimizerReport", "check_optimizer_state", "find_optimizer_states"]

# Keys under which checkpoints commonly keep the optimizer state_dict, tried first and in order.
PREFERRED_KEYS = ("optimizer", "optim", "optimizer_state_dict", "optimizer_state", "opt", "opt_state")
# Per-parameter state that has the parameter's shape in torch.optim (and most third-party optimizers).
FULL_SHAPE_STATE = frozenset(
    {
        "exp_avg",  # Adam, AdamW, NAdam, RAdam, Adamax, SparseAdam
        "exp_avg_sq",  # Adam, AdamW, NAdam, RAdam, SparseAdam
        "max_exp_avg_sq",  # Adam/AdamW with amsgrad
        "momentum_buffer",  # SGD, RMSprop
        "square_avg",  # RMSprop, Adadelta
        "grad_avg",  # RMSprop centered
        "acc_delta",  # Adadelta
        "sum",  # Adagrad
        "exp_inf",  # Adamax
        "ax",  # ASGD
        "prev",  # Rprop
        "step_size",  # Rprop (per element)
        "variance",  # Adafactor, tensors of fewer than 2 dims
    }
)
# State that estimates a second moment or a magnitude: it can never be negative.
NON_NEGATIVE_STATE = frozenset(
    {
        "exp_avg_sq",
        "max_exp_avg_sq",
        "square_avg",
        "acc_delta",
        "sum",
        "exp_inf",
        "variance",
        "row_var",
        "col_var",
    }
)
STEP_KEYS = ("step",)
_CHUNK = 1 << 24  # elements per pass, so a NaN scan of a huge moment never doubles memory


@dataclass
class OptimizerReport:
    """The outcome of `check_optimizer_state`. `ok` is False exactly when `errors` is non-empty;
    warnings (e.g. step counts that differ between parameters) never fail the check."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"ok", "errors", "warnings", "summary"}`` (non-finite floats in the
        summary are written as the strings "nan", "inf", "-inf")."""
        return {
            "ok": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "summary": self.summary,
        }

    def format_text(self) -> str:
        """A human-readable multi-line report ending in an OK/FAILED line."""
        lines: list[str] = []
        for opt in self.summary.get("optimizers", []):
            name = opt["path"] or "optimizer state_dict"
            kinds = ", ".join(opt["state_keys"]) or "none"
            lines.append(
                f"{name}: {len(opt['param_groups'])} param group(s), {opt['params']} params "
                f"({opt['params_with_state']} with state); per-param state: {kinds}"
            )
            for i, group in enumerate(opt["param_groups"]):
                hyper = ", ".join(f"{k}={_short(v)}" for k, v in group["hyperparameters"].items())
                lines.append(f"  group {i}: {group['params']} params; {hyper}")
            steps = opt["steps"]
            if steps is not None:
                span = (
                    f"{_short(steps['min'])}"
                    if steps["min"] == steps["max"]
                    else f"{_short(steps['min'])}..{_short(steps['max'])}"
                )
                lines.append(f"  step: {span} over {steps['params']} params")
            if opt["params_without_state"]:
                ids = ", ".join(str(p) for p in opt["params_without_state"][:8])
                more = "" if len(opt["params_without_state"]) <= 8 else ", ..."
                lines.append(f"  params without state: {ids}{more}")
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_optimizer_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and isinstance(obj.get("state"), Mapping)
        and isinstance(obj.get("param_groups"), (list, tuple))
    )


def find_optimizer_states(obj: Any, max_depth: int = 3) -> list[tuple[str, Mapping[str, Any]]]:
    """Every optimizer state_dict in `obj` as (dotted path, state_dict): `obj` itself (path ""),
    else values under the usual keys ('optimizer', 'optim', 'optimizer_state_dict', ...) first,
    then any other dict or list entry up to `max_depth` levels down (e.g. Lightning's
    'optimizer_states' list, or one optimizer per model in a GAN checkpoint)."""
    if _is_optimizer_state_dict(obj):
        return [("", obj)]
    found: list[tuple[str, Mapping[str, Any]]] = []

    def walk(node: Any, path: str, depth: int) -> None:
        if _is_optimizer_state_dict(node):
            found.append((path, node))
            return
        if depth >= max_depth:
            return
        if isinstance(node, Mapping):
            keys = [k for k in PREFERRED_KEYS if k in node] + [k for k in node if k not in PREFERRED_KEYS]
            for k in keys:
                walk(node[k], f"{path}.{k}" if path else str(k), depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}.{i}" if path else str(i), depth + 1)

    walk(obj, "", 0)
    return found


# ---------------------------------------------------------------- tensor-like access


def _is_tensor_like(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (int, float, str, bytes))


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _dtype_name(x: Any) -> str:
    return str(x.dtype).removeprefix("torch.")


def _numel(x: Any) -> int:
    return math.prod(_shape(x))


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass
class _Values:
    """What a scan of one tensor found; `checked` is False when its values were unreadable."""

    checked: bool = True
    nan: int = 0
    inf: int = 0
    negative: int = 0


def _scan(x: Any, want_negative: bool) -> _Values:
    if _torch_tensor(x):
        return _scan_torch(x, want_negative)
    try:
        import numpy as np

        arr = np.asarray(x)
    except Exception:
        return _Values(checked=False)
    if arr.dtype.kind not in "fc":
        return _Values() if arr.dtype.kind in "biu" else _Values(checked=False)
    flat = arr.reshape(-1)
    out = _Values()
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        out.nan += int(np.isnan(chunk).sum())
        out.inf += int(np.isinf(chunk).sum())
        if want_negative and arr.dtype.kind == "f":
            out.negative += int((chunk < 0).sum())
    return out


def _scan_torch(t: Any, want_negative: bool) -> _Values:
    import torch

    if t.device.type == "meta":
        return _Values(checked=False)
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        return _Values()
    flat = t.detach().reshape(-1)
    out = _Values()
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK]
        try:
            nan, inf = torch.isnan(chunk), torch.isinf(chunk)
        except (RuntimeError, NotImplementedError):  # float8 and other narrow types: widen first
            chunk = chunk.float()
            nan, inf = torch.isnan(chunk), torch.isinf(chunk)
        out.nan += int(nan.sum())
        out.inf += int(inf.sum())
        if want_negative and not t.dtype.is_complex:
            out.negative += int((chunk < 0).sum())
    return out


def _scalar(x: Any) -> float | None:
    """A step counter as a float, or None when it is not a single number."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if _is_tensor_like(x) and _numel(x) == 1:
        try:
            if _torch_tensor(x):
                return float(x.detach().reshape(-1)[0].item())
            import numpy as np

            return float(np.asarray(x).reshape(-1)[0])
        except Exception:
            return None
    return None


def _json_value(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if _is_tensor_like(v):
        s = _scalar(v)
        if s is not None:
            return _json_value(s)
        return {"shape": list(_shape(v)), "dtype": _dtype_name(v)}
    return repr(v)


def _iter_tensors(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Tensors nested in one state entry (LBFGS keeps lists of tensors)."""
    if _is_tensor_like(value):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _iter_tensors(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _iter_tensors(v, f"{path}[{i}]")


# ---------------------------------------------------------------- the checks


def _fmt_id(pid: Any) -> str:
    return repr(pid) if isinstance(pid, str) else str(pid)


def _check_one(path: str, sd: Mapping[str, Any], report: OptimizerReport) -> dict[str, Any]:
    where = f"{path}." if path else ""
    errors, warnings = report.errors, report.warnings

    listed: dict[Any, int] = {}
    groups_summary = []
    for gi, group in enumerate(sd["param_groups"]):
        gpath = f"{where}param_groups[{gi}]"
        if not isinstance(group, Mapping):
            errors.append(f"{gpath}: expected a dict of hyperparameters, got {type(group).__name__}")
            continue
        params = group.get("params")
        if not isinstance(params, (list, tuple)):
            errors.append(f"{gpath}: has no 'params' list")
            params = []
        for pid in params:
            if pid in listed:
                errors.append(
                    f"{gpath}: param {_fmt_id(pid)} is also listed in param_groups[{listed[pid]}]"
                    if listed[pid] != gi
                    else f"{gpath}: param {_fmt_id(pid)} is listed twice"
                )
            else:
                listed[pid] = gi
        hyper = {str(k): _json_value(v) for k, v in group.items() if k != "params"}
        if "lr" in group:
            lr = _scalar(group["lr"])
            if lr is None or not math.isfinite(lr) or lr < 0:
                errors.append(
                    f"{gpath}['lr']: {_short(group['lr'])} is not a finite non-negative learning rate"
                )
        groups_summary.append({"params": len(params), "hyperparameters": hyper})

    state = sd["state"]
    steps: dict[Any, float] = {}
    state_keys: dict[str, int] = {}
    tensors = 0
    for pid, entry in state.items():
        spath = f"{where}state[{_fmt_id(pid)}]"
        if pid not in listed:
            errors.append(f"{spath}: belongs to no param listed in param_groups")
        if not isinstance(entry, Mapping):
            errors.append(f"{spath}: expected a dict of per-param state, got {type(entry).__name__}")
            continue
        full_shapes: dict[str, tuple[int, ...]] = {}
        for name, value in entry.items():
            name = str(name)
            state_keys[name] = state_keys.get(name, 0) + 1
            if name in STEP_KEYS:
                step = _scalar(value)
                if step is None:
                    errors.append(f"{spath}.{name}: expected a single number, got {_describe(value)}")
                elif not math.isfinite(step) or step < 0:
                    errors.append(f"{spath}.{name}: {step!r} is not a finite non-negative step count")
                else:
                    if step != int(step):
                        warnings.append(f"{spath}.{name}: {step!r} is not a whole number of steps")
                    steps[pid] = step
                continue
            if _is_tensor_like(value) and name in FULL_SHAPE_STATE:
                full_shapes[name] = _shape(value)
            for tpath, t in _iter_tensors(value, f"{spath}.{name}"):
                tensors += 1
                found = _scan(t, want_negative=name in NON_NEGATIVE_STATE)
                if not found.checked:
                    warnings.append(f"{tpath}: values not checked ({_describe(t)} cannot be read)")
                    continue
                bad = [f"{n} {what}" for n, what in ((found.nan, "NaN"), (found.inf, "Inf")) if n]
                if bad:
                    errors.append(f"{tpath}: {' and '.join(bad)} in {_numel(t)} elements")
                if found.negative:
                    errors.append(
                        f"{tpath}: {found.negative} negative values in {_numel(t)} elements "
                        "(a second-moment estimate is never negative)"
                    )
        if len(set(full_shapes.values())) > 1:
            shapes = ", ".join(f"{k} {list(v)}" for k, v in full_shapes.items())
            errors.append(f"{spath}: moment shapes disagree: {shapes}")

    steps_summary = None
    if steps:
        lo, hi = min(steps.values()), max(steps.values())
        steps_summary = {"min": _json_value(lo), "max": _json_value(hi), "params": len(steps)}
        if lo != hi:
            laggards = [_fmt_id(p) for p, s in steps.items() if s < hi]
            shown = ", ".join(laggards[:6]) + (", ..." if len(laggards) > 6 else "")
            warnings.append(
                f"{where}state: step counts differ across params ({_short(lo)} to {_short(hi)}; "
                f"behind the maximum: {shown}); params that got no gradient on some steps lag legitimately"
            )
    without = [_json_value(p) for p in listed if p not in state]
    return {
        "path": path,
        "param_groups": groups_summary,
        "params": len(listed),
        "params_with_state": sum(1 for p in state if p in listed),
        "params_without_state": without,
        "state_keys": state_keys,
        "steps": steps_summary,
        "tensors": tensors,
    }


def _describe(x: Any) -> str:
    if _is_tensor_like(x):
        return f"{type(x).__name__} {_dtype_name(x)}{list(_shape(x))}"
    return f"{type(x).__name__} {_short(repr(x))}"


def check_optimizer_state(obj: Any, *, key: str | None = None) -> OptimizerReport:
    """Validates optimizer state without the model.

    `obj` is an optimizer ``state_dict()`` (``{"state": {...}, "param_groups": [...]}``) or a
    checkpoint holding one or more (found by `find_optimizer_states`; `key` names one top-level
    entry to use instead). Tensors may be torch tensors, numpy arrays or anything with `.shape`
    and `.dtype` that numpy can read. Errors: a state entry whose param is in no param group, a
    param listed twice, moment tensors of one param with different shapes, a step count that is
    negative or not finite, NaN/Inf in any state tensor, negative values in a second-moment
    estimate, a learning rate that is not finite and non-negative. Warnings: step counts that
    differ across params, fractional steps, values that could not be read.

    Raises UsageError when `obj` holds no optimizer state_dict.
    """
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise UsageError(f"no entry {key!r} in the checkpoint")
        if not _is_optimizer_state_dict(obj[key]):
            raise UsageError(
                f"entry {key!r} is not an optimizer state_dict (a dict with 'state' and 'param_groups')"
            )
        found: list[tuple[str, Mapping[str, Any]]] = [(key, obj[key])]
    else:
        found = find_optimizer_states(obj)
    if not found:
        keys = ", ".join(repr(k) for k in list(obj)[:10]) if isinstance(obj, Mapping) else type(obj).__name__
        raise UsageError(
            "no optimizer state_dict found: expected a dict with 'state' and 'param_groups', or a "
            f"checkpoint holding one (e.g. under 'optimizer'); top-level entries: {keys or 'none'}"
        )
    report = OptimizerReport()
    report.summary = {"optimizers": [_check_one(path, sd, report) for path, sd in found]}
    return report
