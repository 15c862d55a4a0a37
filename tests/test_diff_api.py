"""fastckpt.diff on files and in-memory state_dicts: statuses, statistics against an independent
numpy/torch computation, bitwise semantics, nested checkpoints, cross-format equality, folders,
tolerances and hypothesis properties."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt import InputError, UsageError, diff

torch = pytest.importorskip("torch")


def sample_sd(seed: int = 0, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i in range(n):
        sd[f"layers.{i}.weight"] = torch.randn(33, 17, generator=g)
        sd[f"layers.{i}.bias"] = torch.randn(33, generator=g)
    sd["embed.weight"] = torch.randn(50, 8, generator=g).to(torch.bfloat16)
    sd["norm.weight"] = torch.rand(8, generator=g).to(torch.float16)
    sd["step_counts"] = torch.arange(7, dtype=torch.int64)
    sd["mask"] = torch.rand(9, generator=g) > 0.5
    return sd


def clone(sd):
    return {k: v.clone() for k, v in sd.items()}


def ref_stats(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Independent reference with numpy float64 over the finite, differing elements."""
    ia = a.reshape(-1).view(torch.uint8).reshape(a.numel(), -1).numpy()
    ib = b.reshape(-1).view(torch.uint8).reshape(b.numel(), -1).numpy()
    ne = (ia != ib).any(axis=1)
    fa = a.reshape(-1).to(torch.float64).numpy()
    fb = b.reshape(-1).to(torch.float64).numpy()
    fin = np.isfinite(fa) & np.isfinite(fb) & ne
    d = np.where(fin, np.abs(fb - fa), 0.0)
    norm_a = math.sqrt(float(np.sum(np.where(np.isfinite(fa), fa, 0.0) ** 2)))
    return {
        "n_different": int(ne.sum()),
        "first": int(np.argmax(ne)) if ne.any() else None,
        "max_abs": float(d.max()) if d.size else 0.0,
        "rel_change": math.sqrt(float(np.sum(d * d))) / norm_a if norm_a else math.inf,
        "introduced": int((np.isfinite(fa) & ~np.isfinite(fb)).sum()),
        "removed": int((~np.isfinite(fa) & np.isfinite(fb)).sum()),
    }


def test_identical_in_memory() -> None:
    sd = sample_sd()
    r = diff(sd, clone(sd))
    assert r.identical and r.ok and r.exit_code == 0
    assert {t.status for t in r.tensors} == {"equal"}
    assert [t.key for t in r.tensors] == list(sd)


def test_statuses_and_stats() -> None:
    a = sample_sd()
    b = clone(a)
    b["layers.0.weight"][3, 4] += 0.5
    b["layers.1.weight"] = b["layers.1.weight"] * 1.001
    b["layers.2.bias"][5] = float("nan")
    b["embed.weight"] = b["embed.weight"].float()
    b["norm.weight"] = torch.ones(9, dtype=torch.float16)
    del b["mask"]
    b["extra.weight"] = torch.zeros(3)
    b["step_counts"][2] = 100
    r = diff(a, b)
    status = {t.key: t.status for t in r.tensors}
    assert status["layers.0.weight"] == "different"
    assert status["layers.1.weight"] == "different"
    assert status["layers.2.bias"] == "different"
    assert status["embed.weight"] == "dtype_changed"
    assert status["norm.weight"] == "shape_changed"
    assert status["mask"] == "only_a"
    assert status["extra.weight"] == "only_b"
    assert status["step_counts"] == "different"
    assert status["layers.3.weight"] == "equal"
    assert not r.identical and r.exit_code == 1
    by_key = {t.key: t for t in r.tensors}
    for key in ("layers.0.weight", "layers.1.weight", "layers.2.bias", "step_counts"):
        t = by_key[key]
        ref = ref_stats(a[key], b[key])
        assert t.n_different == ref["n_different"], key
        assert t.first_diff_index == ref["first"], key
        assert t.numel == a[key].numel()
        if key == "step_counts":  # integers are compared bitwise: counts only
            assert t.max_abs_diff is None and t.nan_inf_introduced is None and t.rel_change is None
            continue
        assert t.max_abs_diff == pytest.approx(ref["max_abs"], rel=1e-12, abs=0), key
        assert t.nan_inf_introduced == ref["introduced"], key
        assert t.nan_inf_removed == ref["removed"], key
    assert by_key["layers.0.weight"].n_different == 1
    assert by_key["layers.0.weight"].first_diff_index == 3 * 17 + 4
    assert by_key["layers.1.weight"].rel_change == pytest.approx(
        ref_stats(a["layers.1.weight"], b["layers.1.weight"])["rel_change"], rel=1e-6
    )
    assert by_key["layers.2.bias"].nan_inf_introduced == 1
    assert by_key["layers.2.bias"].rel_change == math.inf  # ||B-A|| is not finite
    assert by_key["step_counts"].max_ulp is None  # integers: no ULP
    assert by_key["layers.0.weight"].max_ulp is not None and by_key["layers.0.weight"].max_ulp > 0


def test_model_order_places_b_only_keys_after_their_neighbour() -> None:
    a = {"x.weight": torch.ones(2), "z.weight": torch.ones(2)}
    b = {"x.weight": torch.ones(2), "y.weight": torch.ones(2), "z.weight": torch.ones(2)}
    r = diff(a, b)
    assert [(t.key, t.status) for t in r.tensors] == [
        ("x.weight", "equal"),
        ("y.weight", "only_b"),
        ("z.weight", "equal"),
    ]


def test_bitwise_semantics_signed_zero_and_nan_payload() -> None:
    nan1 = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    nan2 = torch.tensor([0x7FC00002], dtype=torch.int32).view(torch.float32)
    a = {"z": torch.tensor([0.0, 1.0]), "n": nan1.clone(), "m": nan1.clone()}
    b = {"z": torch.tensor([-0.0, 1.0]), "n": nan1.clone(), "m": nan2.clone()}
    r = diff(a, b)
    by_key = {t.key: t for t in r.tensors}
    assert by_key["z"].status == "different" and by_key["z"].n_different == 1
    assert by_key["z"].max_abs_diff == 0.0  # numerically equal, bitwise different
    assert by_key["n"].status == "equal"  # same NaN payload
    assert by_key["m"].status == "different"  # different NaN payloads
    # Numerically equal differences are within any tolerance, but never "identical".
    r = diff(a, b, atol=0.0)
    assert not r.identical
    assert {t.key: t.within_tolerance for t in r.tensors}["z"] is True


def test_tolerances_classify() -> None:
    a = {"w": torch.full((100,), 2.0, dtype=torch.float64)}
    b = {"w": a["w"].clone()}
    b["w"][7] += 1e-3  # abs 1e-3, rel 5e-4
    assert diff(a, b).exit_code == 1
    assert diff(a, b, atol=1e-3).ok
    assert not diff(a, b, atol=0.9e-3).ok
    assert diff(a, b, rtol=5e-4).ok
    assert not diff(a, b, rtol=4.9e-4).ok
    assert diff(a, b, atol=1e-9, rtol=1e-3).ok  # either bound suffices
    r = diff(a, b, atol=1.0)
    assert not r.identical and r.ok and r.exit_code == 0
    assert r.summary()["within_tolerance"] == 1
    # NaN/Inf introduced is never within tolerance
    b["w"][0] = float("inf")
    assert not diff(a, b, atol=1e9).ok
    with pytest.raises(UsageError):
        diff(a, b, atol=-1.0)


def nested_ckpt(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    model = {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g)}
    optim = {
        "state": {
            0: {
                "step": torch.tensor(10.0),
                "exp_avg": torch.randn(4, 3, generator=g),
                "exp_avg_sq": torch.rand(4, 3, generator=g),
            },
            1: {
                "step": torch.tensor(10.0),
                "exp_avg": torch.randn(4, generator=g),
                "exp_avg_sq": torch.rand(4, generator=g),
            },
        },
        "param_groups": [
            {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0, 1]}
        ],
    }
    return {
        "model": model,
        "optimizer": optim,
        "scheduler": {"last_epoch": 10, "_last_lr": [0.001]},
        "step": 10,
    }


def test_nested_checkpoint_paths_and_values() -> None:
    a = nested_ckpt()
    b = nested_ckpt()
    b["optimizer"]["state"][1]["exp_avg"][2] += 1.0
    b["optimizer"]["param_groups"][0]["lr"] = 0.0005
    b["optimizer"]["param_groups"][0]["betas"] = (0.9, 0.99)
    b["step"] = 11
    b["scheduler"]["new_field"] = "x"
    r = diff(a, b)
    changed = {t.key for t in r.tensors if t.status != "equal"}
    assert changed == {"optimizer.state.1.exp_avg"}
    values = {v.key: v for v in r.values}
    assert values["optimizer.param_groups.0.lr"].status == "different"
    assert (values["optimizer.param_groups.0.lr"].a, values["optimizer.param_groups.0.lr"].b) == (
        0.001,
        0.0005,
    )
    assert values["optimizer.param_groups.0.betas"].status == "different"
    assert values["optimizer.param_groups.0.eps"].status == "equal"
    assert values["optimizer.param_groups.0.params"].status == "equal"
    assert values["step"].status == "different"
    assert values["scheduler.new_field"].status == "only_b"
    assert r.changed_keys() == {
        "optimizer.state.1.exp_avg",
        "optimizer.param_groups.0.lr",
        "optimizer.param_groups.0.betas",
        "step",
        "scheduler.new_field",
    }
    # values within tolerance: lr 0.001 -> 0.0005 is within atol 1e-3; the string change is not
    assert not diff(a, b, atol=10.0).ok
    del b["scheduler"]["new_field"]
    assert diff(a, b, atol=10.0).ok


def test_value_float_bits() -> None:
    assert diff({"x": 0.0}, {"x": -0.0}).values[0].status == "different"
    assert diff({"x": float("nan")}, {"x": float("nan")}).values[0].status == "equal"
    assert diff({"x": 1}, {"x": 1.0}).values[0].status == "different"  # int vs float
    assert diff({"x": (1, 2)}, {"x": [1, 2]}).values[0].status == "different"


def save_pt(tmp_path, name: str, obj) -> str:
    p = str(tmp_path / name)
    torch.save(obj, p)
    return p


def test_file_vs_file_and_vs_memory(tmp_path) -> None:
    a = nested_ckpt()
    b = nested_ckpt()
    b["model"]["fc.weight"][0, 0] = 7.0
    b["step"] = 12
    pa, pb = save_pt(tmp_path, "a.pt", a), save_pt(tmp_path, "b.pt", b)
    for x, y in ((pa, pb), (pa, b), (a, pb)):
        r = diff(x, y)
        assert {t.key for t in r.tensors if t.status != "equal"} == {"model.fc.weight"}
        assert {v.key for v in r.values if v.status != "equal"} == {"step"}
        assert {v.key: v.b for v in r.values}["step"] == 12
        t = next(t for t in r.tensors if t.key == "model.fc.weight")
        assert t.n_different == 1 and t.first_diff_index == 0
        assert t.max_abs_diff == pytest.approx(abs(7.0 - float(a["model"]["fc.weight"][0, 0])), rel=1e-12)
    assert diff(pa, save_pt(tmp_path, "a2.pt", a)).identical
    assert diff(pa, a).identical


def test_rel_change_is_exact_and_the_same_from_files_and_memory(tmp_path) -> None:
    """||A|| comes from the CPU kernel's own pass for files and for in-memory CPU tensors alike, so
    rel_change is the same bits either way and equals the canonical-order reference exactly."""
    from fastckpt._diff_reference import reference_diff

    a = sample_sd(3)
    b = clone(a)
    for k in ("layers.0.weight", "embed.weight", "norm.weight"):
        b[k] = b[k] + 0.25  # every element differs
    b["layers.1.bias"][3] = float("nan")  # rel_change inf
    pa, pb = save_pt(tmp_path, "a.pt", a), save_pt(tmp_path, "b.pt", b)
    runs = [diff(x, y) for x, y in ((pa, pb), (a, b), (pa, b), (a, pb))]
    for k in ("layers.0.weight", "embed.weight", "norm.weight"):
        raw_a = a[k].reshape(-1).view(torch.uint8).numpy().tobytes()
        raw_b = b[k].reshape(-1).view(torch.uint8).numpy().tobytes()
        ref = reference_diff(raw_a, raw_b, str(a[k].dtype).removeprefix("torch."), norm_a=True)
        n = ref["n_elements"]
        want = (math.sqrt(ref["sum_sq_diff"] / n) * math.sqrt(n)) / math.sqrt(ref["sum_sq_a"])
        got = [next(t for t in r.tensors if t.key == k).rel_change for r in runs]
        assert got == [want] * 4, k
    assert all(next(t for t in r.tensors if t.key == "layers.1.bias").rel_change == math.inf for r in runs)


def test_pt_vs_safetensors_conversion_identical(tmp_path) -> None:
    st_torch = pytest.importorskip("safetensors.torch")
    sd = sample_sd()
    pa = save_pt(tmp_path, "m.pt", sd)
    pb = str(tmp_path / "m.safetensors")
    st_torch.save_file(sd, pb, metadata={"format": "pt"})
    r = diff(pa, pb)
    assert r.identical, r.format_text()
    assert (r.format_a, r.format_b) == ("torch-zip", "safetensors")
    sd2 = clone(sd)
    sd2["layers.2.weight"][0] += 1
    st_torch.save_file(sd2, pb)
    r = diff(pa, pb)
    assert {t.key for t in r.tensors if t.status != "equal"} == {"layers.2.weight"}


def test_hf_sharded_folder_vs_single_file(tmp_path) -> None:
    st_torch = pytest.importorskip("safetensors.torch")
    sd = sample_sd()
    keys = list(sd)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for name, ks in shards.items():
        st_torch.save_file({k: sd[k] for k in ks}, str(folder / name))
        weight_map.update(dict.fromkeys(ks, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    single = save_pt(tmp_path, "single.pt", sd)
    r = diff(str(folder), single)
    assert r.identical, r.format_text()
    assert r.format_a == "hf-sharded"


def test_non_contiguous_saved_views(tmp_path) -> None:
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    a = {"t": base.t(), "s": base[:, 2:5], "whole": base}
    b = {"t": base.t().contiguous(), "s": base[:, 2:5].contiguous(), "whole": base.clone()}
    pa = save_pt(tmp_path, "views.pt", a)
    assert diff(pa, b).identical
    b["t"] = b["t"].clone()
    b["t"][1, 0] = -1.0  # element (1, 0) of the transposed view is base[0, 1]
    r = diff(pa, b)
    t = next(t for t in r.tensors if t.key == "t")
    assert t.status == "different" and t.first_diff_index == 1 * 6 + 0


def test_renames_in_files_and_compat_mapping(tmp_path) -> None:
    sd = sample_sd()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    ddp["module.layers.0.weight"] = ddp["module.layers.0.weight"] + 1  # renamed and changed
    r = diff(save_pt(tmp_path, "plain.pt", sd), save_pt(tmp_path, "ddp.pt", ddp))
    assert r.renames == ["add prefix 'module.'"]
    renamed = {t.key: t for t in r.tensors if t.status == "renamed"}
    assert set(renamed) == set(sd)
    assert renamed["layers.0.weight"].key_b == "module.layers.0.weight"
    assert renamed["layers.0.weight"].content_equal is False
    assert renamed["layers.0.weight"].n_different == sd["layers.0.weight"].numel()
    assert renamed["layers.1.weight"].content_equal is True
    compat = r.compat
    assert compat["mapping"] == {f"module.{k}": k for k in sd}
    assert compat["missing"] == [] and compat["unexpected"] == [] and compat["loads_strict"]
    assert r.exit_code == 1


def test_damaged_file_is_an_input_error(tmp_path) -> None:
    p = save_pt(tmp_path, "a.pt", sample_sd())
    with open(p, "rb") as f:
        data = f.read()
    short = tmp_path / "short.pt"
    short.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        diff(p, str(short))
    with pytest.raises(InputError):
        diff(p, str(tmp_path / "missing.pt"))
    with pytest.raises(UsageError):
        diff(p, 42)


def test_json_roundtrip_is_valid_json() -> None:
    a = {"w": torch.zeros(3)}
    b = {"w": torch.tensor([0.0, 1.0, float("inf")])}
    out = diff(a, b).to_json()
    text = json.dumps(out, allow_nan=False)  # no bare NaN/Infinity in the contract
    t = json.loads(text)["tensors"][0]
    assert t["rel_change"] == "inf" and t["max_rel_diff"] == "inf"
    assert t["nan_inf_introduced"] == 1


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import fastckpt, sys; assert callable(fastckpt.diff); assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def same_report(x: list[dict], y: list[dict]) -> bool:
    """Kernel statistics must match bit for bit; ||A|| is a torch reduction whose rounding may
    differ between devices, so rel_change is compared to 1e-12."""

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "rel_change"} for row in rows]

    rel = [(p["rel_change"], q["rel_change"]) for p, q in zip(x, y, strict=True)]
    return strip(x) == strip(y) and all(
        p == q or (isinstance(p, float) and isinstance(q, float) and math.isclose(p, q, rel_tol=1e-12))
        for p, q in rel
    )


@pytest.mark.cuda
def test_gpu_state_dicts_match_cpu_result() -> None:
    a = nested_ckpt()
    b = nested_ckpt()
    b["model"]["fc.weight"][1] *= 1.5
    b["optimizer"]["state"][0]["exp_avg"][0, 0] = float("nan")

    def to(x, dev):
        if isinstance(x, torch.Tensor):
            return x.to(dev)
        if isinstance(x, dict):
            return {k: to(v, dev) for k, v in x.items()}
        if isinstance(x, list):
            return [to(v, dev) for v in x]
        return x

    cpu = diff(a, b).to_json()
    gpu = diff(to(a, "cuda"), to(b, "cuda")).to_json()
    assert same_report(gpu["tensors"], cpu["tensors"])
    for key in ("values", "identical"):
        assert gpu[key] == cpu[key]


@pytest.mark.cuda
def test_file_against_gpu_state_dict(tmp_path) -> None:
    a = sample_sd()
    b = {k: v.cuda() for k, v in clone(a).items()}
    b["layers.0.weight"][0, 0] += 1
    r = diff(save_pt(tmp_path, "a.pt", a), b)
    assert [t.key for t in r.tensors if t.status != "equal"] == ["layers.0.weight"]
    cpu = diff(a, {k: v.cpu() for k, v in b.items()})
    assert same_report([t.to_json() for t in r.tensors], [t.to_json() for t in cpu.tensors])


# ---- properties -----------------------------------------------------------------------------------

dtypes = st.sampled_from(
    [
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
        torch.int32, torch.uint8, torch.bool, torch.complex64,
    ]
)  # fmt: skip


@st.composite
def state_dicts(draw):
    n = draw(st.integers(1, 6))
    sd = {}
    for i in range(n):
        dt = draw(dtypes)
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        t = (
            torch.randint(0, 255, shape, generator=g, dtype=torch.int64)
            if shape
            else torch.tensor(draw(st.integers(0, 255)))
        )
        sd[f"m{i}.p"] = t.to(dt)
    return sd


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sd=state_dicts())
def test_diff_with_itself_is_identical(sd) -> None:
    r = diff(sd, sd)
    assert r.identical and r.exit_code == 0
    assert [t.key for t in r.tensors] == list(sd)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sd=state_dicts(), data=st.data())
def test_diff_reports_exactly_the_changed_keys(sd, data) -> None:
    b = clone(sd)
    changed: set[str] = set()
    for key in list(sd):
        action = data.draw(st.sampled_from(["keep", "flip", "drop", "dtype"]))
        t = b[key]
        if action == "flip" and t.numel():
            flat = t.reshape(-1).view(torch.uint8).clone()
            i = data.draw(st.integers(0, flat.numel() - 1))
            flat[i] ^= 1 << data.draw(st.integers(0, 7))
            b[key] = flat.view(t.dtype).reshape(t.shape)
            changed.add(key)
        elif action == "drop":
            del b[key]
            changed.add(key)
        elif action == "dtype":
            b[key] = (t.real if t.is_complex() else t).to(
                torch.float64 if t.dtype != torch.float64 else torch.float32
            )
            changed.add(key)
    if data.draw(st.booleans()):
        b["added.key"] = torch.tensor([123456.0, -1.0])
        changed.add("added.key")
    r = diff(sd, b)
    assert r.changed_keys() == changed
    assert r.identical == (not changed)
    assert r.exit_code == (1 if changed else 0)


def test_fastckpt_namespace() -> None:
    assert fastckpt.diff is diff
    assert os.path.basename(fastckpt.diff.__module__.replace(".", "/")) == "diff"


def test_sidecar_digests_skip_reading_equal_tensors(tmp_path, monkeypatch) -> None:
    protect = pytest.importorskip("fastckpt.protect")
    from fastckpt import _diffkernel

    a = sample_sd()
    b = clone(a)
    b["layers.1.bias"][0] += 1
    pa, pb = save_pt(tmp_path, "a.pt", a), save_pt(tmp_path, "b.pt", b)
    full = diff(pa, pb)
    for p in (pa, pb):
        protect.protect_file(p)
    compared: list[str] = []
    real = _diffkernel.compare_buffers

    def spy(x, y, dtype, shape, threads=0):
        compared.append(dtype)
        return real(x, y, dtype, shape, threads)

    monkeypatch.setattr(_diffkernel, "compare_buffers", spy)
    r = diff(pa, pb)
    assert sorted(r.sidecars) == sorted([pa, pb])
    assert [t.key for t in r.tensors if t.status != "equal"] == ["layers.1.bias"]
    assert len(compared) == 1  # only the pair whose digests differ was read
    assert r.bytes_read < full.bytes_read
    assert [t.to_json() for t in r.tensors] == [t.to_json() for t in full.tensors]
    # --no-sidecar / sidecars=False reads everything
    compared.clear()
    assert not diff(pa, pb, sidecars=False).sidecars
    assert len(compared) == len(a)
    # a file newer than its sidecar is not trusted
    os.utime(pb, (os.path.getmtime(pb) + 100, os.path.getmtime(pb) + 100))
    compared.clear()
    r = diff(pa, pb)
    assert r.sidecars == [pa] and len(compared) == len(a)


def test_two_files_are_compared_without_torch(tmp_path) -> None:
    import subprocess
    import sys

    a = sample_sd()
    b = clone(a)
    b["layers.0.weight"] *= 2
    pa, pb = (
        save_pt(tmp_path, "a.pt", {"model": a, "step": 1}),
        save_pt(tmp_path, "b.pt", {"model": b, "step": 1}),
    )
    code = (
        "import sys; from fastckpt import diff; r = diff(sys.argv[1], sys.argv[2]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "print(sorted(t.key for t in r.tensors if t.status != 'equal'))"
    )
    r = subprocess.run([sys.executable, "-c", code, pa, pb], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['model.layers.0.weight']"


@pytest.mark.parametrize(
    "dtype", ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
)
def test_buffer_norm_matches_float64_reference(dtype) -> None:
    """||A|| of a differing file pair comes from the diff kernel's own pass (norm_a): it matches an
    independent float64 norm of A's finite elements, and the exact canonical-order reference."""
    from fastckpt._diff_reference import reference_sum_sq_a
    from fastckpt._diffkernel import compare_buffers

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(30001, generator=g, dtype=torch.float64) * 7).to(getattr(torch, dtype))
    if dtype != "float8_e4m3fn":  # e4m3fn has no infinity
        x[5] = float("inf")
    x[7] = float("nan")
    y = x.clone()
    y[20000] = 0.5
    ref = x.to(torch.float64)
    ref = torch.where(torch.isfinite(ref), ref, 0.0)
    expected = float(torch.linalg.vector_norm(ref))
    raw_a, raw_b = x.view(torch.uint8).numpy().tobytes(), y.view(torch.uint8).numpy().tobytes()
    got = compare_buffers(raw_a, raw_b, dtype, (30001,)).norm_a
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == math.sqrt(reference_sum_sq_a(raw_a, dtype))
    assert compare_buffers(raw_a, raw_a, dtype, (30001,)).norm_a is None  # equal: not computed
    ints = b"\x00" * 8, b"\x01" + b"\x00" * 7
    assert compare_buffers(*ints, "int64", (1,)).norm_a is None


def test_renamed_and_converted_is_paired_by_rule() -> None:
    sd = sample_sd()
    b = {f"module.{k}": v for k, v in sd.items()}
    b["module.layers.0.weight"] = b["module.layers.0.weight"].half()
    b["module.layers.1.weight"] = torch.zeros(5)
    r = diff(sd, b)
    by_key = {t.key: t for t in r.tensors}
    t = by_key["layers.0.weight"]
    assert (t.status, t.key_b, t.dtype, t.dtype_b) == (
        "renamed",
        "module.layers.0.weight",
        "float32",
        "float16",
    )
    assert t.content_equal is False and t.n_different is None
    assert by_key["layers.1.weight"].shape_b == (5,)
    assert r.compat["mismatched"] == ["layers.0.weight", "layers.1.weight"]
    assert r.compat["loads_strict"] is False  # the shape change would not load
    assert r.renames == ["add prefix 'module.'"]


def test_a_file_against_itself_is_not_read(tmp_path, monkeypatch) -> None:
    from fastckpt import _diffkernel

    p = save_pt(tmp_path, "a.pt", sample_sd())
    monkeypatch.setattr(_diffkernel, "compare_buffers", lambda *a, **k: pytest.fail("read"))
    r = diff(p, p)
    assert r.identical and r.bytes_read == 0
