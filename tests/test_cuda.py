"""The GPU engine on a real GPU: leaf/tensor digests and diffs of CUDA tensors must equal the CPU
kernels (themselves checked against xxhash and the numpy reference), for every dtype, odd sizes,
views, unaligned addresses, side streams and 1000-tensor batches (one launch per device).

Every test here carries the `cuda` marker and is skipped where `backends()["cuda"]["usable"]` is
false (no GPU, or FASTCKPT_FORCE_CPU=1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fastckpt
from fastckpt import _native, _reference
from fastckpt._diff_reference import FLOAT_FORMATS, reference_diff

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.cuda

HASH_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64,
    torch.uint64, torch.complex64, torch.complex128,
]  # fmt: skip
ODD_BYTE_SIZES = [
    0,
    1,
    7,
    16,
    17,
    240,
    241,
    1023,
    1024,
    1025,
    8191,
    8193,
    65535,
    65536,
    65537,
    200_003,
    1_000_037,
]


def random_tensor(nbytes: int, dtype: Any, device: str = "cuda", seed: int = 0) -> Any:
    size = torch.empty((), dtype=dtype).element_size()
    n = nbytes // size * size
    g = torch.Generator(device=device).manual_seed(seed)
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, device=device, generator=g)
    if dtype == torch.bool:
        raw &= 1  # copies of a bool tensor canonicalize other bytes to 0/1
    return raw.view(dtype)


def cpu_digest(t: Any, leaf_size: int = 65536) -> fastckpt.Digest:
    return fastckpt.hash_tensor(t.cpu(), leaf_size=leaf_size)


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(_native, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_native, name, spy)
    return calls


def stream_of(t: Any) -> int:
    return int(torch.cuda.current_stream(t.device).cuda_stream)


# ---- hashing ----


@pytest.mark.parametrize("dtype", HASH_DTYPES, ids=str)
def test_digests_equal_cpu_every_dtype_and_odd_size(dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_calls(monkeypatch, "cuda_leaf_digests")
    for i, nbytes in enumerate(ODD_BYTE_SIZES):
        t = random_tensor(nbytes, dtype, seed=i)
        assert fastckpt.hash_tensor(t) == cpu_digest(t), nbytes
    assert calls, "the GPU path was not taken"


@pytest.mark.parametrize("leaf_size", [64, 128, 256, 1024, 4096, 65536, 1 << 20, 1 << 24])
def test_leaf_sizes(leaf_size: int) -> None:
    t = random_tensor(3 * (1 << 20) + 4097, torch.uint8, seed=leaf_size)
    assert fastckpt.hash_tensor(t, leaf_size=leaf_size) == cpu_digest(t, leaf_size)


def test_digest_equals_pure_python_reference() -> None:
    t = random_tensor(100_003, torch.uint8, seed=5)
    data = t.cpu().numpy().tobytes()
    assert fastckpt.hash_tensor(t, leaf_size=4096).value == _reference.tensor_digest(
        data, 4096, "uint8", [len(data)]
    )


@pytest.mark.parametrize("offset", range(1, 16))
def test_unaligned_addresses_in_the_kernel(offset: int) -> None:
    base = random_tensor(70_000 + 16, torch.uint8, seed=offset)
    view = base[offset : offset + 70_000]
    assert view.data_ptr() % 16 != 0
    # Straight to the kernel (the Python layer would copy to an aligned buffer first).
    got = _native.cuda_leaf_digests(
        [(view.data_ptr(), 70_000)], 4096, view.device.index or 0, stream_of(view)
    )
    want = _native.leaf_digests(view.cpu().numpy(), 4096)
    assert got == [want]
    assert fastckpt.hash_tensor(view) == cpu_digest(view)


def test_non_contiguous_views() -> None:
    t = torch.randn(300, 301, device="cuda")
    for v in (t.t(), t[::2, 1::3], t.unsqueeze(0).expand(2, 300, 301)):
        assert fastckpt.hash_tensor(v) == cpu_digest(v.contiguous())


def test_state_dict_of_1000_small_tensors_in_one_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    sd = {f"layer{i}.w": torch.randn(int(rng.integers(0, 5000)), device="cuda") for i in range(1000)}
    calls = count_calls(monkeypatch, "cuda_leaf_digests")
    gpu = fastckpt.hash_state_dict(sd)
    assert len(calls) == 1
    cpu = fastckpt.hash_state_dict({k: v.cpu() for k, v in sd.items()})
    assert gpu.hex() == cpu.hex()
    assert dict(gpu) == dict(cpu)


def test_side_stream_ordering() -> None:
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        t = torch.empty(1 << 22, dtype=torch.float32, device="cuda")
        t.fill_(1.5)
        t.mul_(3.0)  # still queued on s when the hash is enqueued on s
        d = fastckpt.hash_tensor(t)
    torch.cuda.synchronize()
    assert d == cpu_digest(t)


def test_large_tensor() -> None:
    t = random_tensor((256 << 20) + 13, torch.uint8, seed=9)
    assert fastckpt.hash_tensor(t) == cpu_digest(t)


def test_force_cpu_takes_the_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    t = random_tensor(100_000, torch.float32, seed=3)
    monkeypatch.setenv("FASTCKPT_FORCE_CPU", "1")
    calls = count_calls(monkeypatch, "cuda_leaf_digests")
    assert fastckpt.hash_tensor(t) == cpu_digest(t)
    assert not calls


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_two_devices() -> None:
    sd = {"a": torch.randn(1000, device="cuda:0"), "b": torch.randn(1000, device="cuda:1")}
    assert (
        fastckpt.hash_state_dict(sd).hex()
        == fastckpt.hash_state_dict({k: v.cpu() for k, v in sd.items()}).hex()
    )


def test_bad_device_index_is_a_value_error() -> None:
    t = random_tensor(4096, torch.uint8)
    with pytest.raises(ValueError, match="out of range"):
        _native.cuda_leaf_digests([(t.data_ptr(), 4096)], 65536, 1000, 0)


# ---- diff ----

DIFF_DTYPES = HASH_DTYPES


def torch_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def mutated(t: Any, every: int, seed: int) -> Any:
    b = t.clone()
    raw = b.view(-1).view(torch.uint8)
    if raw.numel():
        g = torch.Generator(device="cuda").manual_seed(seed)
        idx = torch.arange(0, raw.numel(), every, device="cuda")
        flip = (
            1
            if t.dtype == torch.bool
            else torch.randint(1, 256, (idx.numel(),), dtype=torch.uint8, device="cuda", generator=g)
        )
        raw[idx] ^= flip
    return b


@pytest.mark.parametrize("dtype", DIFF_DTYPES, ids=str)
def test_diff_equals_cpu_and_reference_every_dtype(dtype: Any) -> None:
    name = torch_name(dtype)
    for i, nbytes in enumerate(ODD_BYTE_SIZES):
        a = random_tensor(nbytes, dtype, seed=i)
        for every in (1, 3, 1001):
            b = mutated(a, every, seed=i)
            gpu = fastckpt.compare_tensors(a, b)
            cpu = fastckpt.compare_tensors(a.cpu(), b.cpu())
            assert gpu == cpu, (nbytes, every)
            if nbytes <= 65537:
                ref = reference_diff(
                    a.cpu().view(torch.uint8).numpy(), b.cpu().view(torch.uint8).numpy(), name
                )
                assert gpu == fastckpt.TensorDiff.from_stats(ref, name, tuple(a.shape))
        assert fastckpt.compare_tensors(a, a.clone()).equal


@pytest.mark.parametrize("name", sorted(FLOAT_FORMATS))
def test_diff_special_values_on_gpu(name: str) -> None:
    width, e_bits, m_bits = FLOAT_FORMATS[name]
    sign = 1 << (width - 1)
    exp_all = ((1 << e_bits) - 1) << m_bits
    one = ((1 << (e_bits - 1)) - 1) << m_bits
    pats = [
        0,
        1,
        (1 << m_bits) - 1,
        1 << m_bits,
        one,
        exp_all - 1,
        exp_all,
        exp_all | 1,
        exp_all | ((1 << m_bits) - 1),
    ]
    pats = sorted({p & ((1 << width) - 1) for p in pats + [p | sign for p in pats]})
    np_u = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    a = np.array([x for x in pats for _ in pats], dtype=np_u)
    b = np.array([y for _ in pats for y in pats], dtype=np_u)
    dt = getattr(torch, name)
    ta = torch.from_numpy(a.view(np.uint8).copy()).cuda().view(dt)
    tb = torch.from_numpy(b.view(np.uint8).copy()).cuda().view(dt)
    ref = reference_diff(a.tobytes(), b.tobytes(), name)
    assert fastckpt.compare_tensors(ta, tb) == fastckpt.TensorDiff.from_stats(ref, name, (a.size,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_diff_realistic_update(dtype: Any) -> None:
    a = torch.randn(3_000_017, device="cuda").to(dtype)
    b = (a.float() + 1e-3 * torch.randn_like(a.float())).to(dtype)
    b[::11] = a[::11]
    b[12345] = float("nan")
    assert fastckpt.compare_tensors(a, b) == fastckpt.compare_tensors(a.cpu(), b.cpu())


@pytest.mark.parametrize("offset", [1, 2, 4, 8, 12])
def test_diff_unaligned_addresses_in_the_kernel(offset: int) -> None:
    a = random_tensor(100_000 + 16, torch.uint8, seed=offset)
    b = mutated(a, 7, seed=offset)
    va, vb = a[offset : offset + 100_000], b[offset : offset + 100_000]
    got = _native.cuda_diff([(va.data_ptr(), vb.data_ptr(), 100_000, "bfloat16")], 0, stream_of(va))[0]
    want = _native.diff_buffers(va.cpu().numpy(), vb.cpu().numpy(), "bfloat16")
    assert got == want


def test_diff_non_contiguous() -> None:
    a = torch.randn(500, 301, device="cuda")
    b = a.clone()
    b[7, 300] = 0
    d = fastckpt.compare_tensors(a.t(), b.t())
    assert d.first_diff_index == 300 * 500 + 7
    assert d == fastckpt.compare_tensors(a.t().cpu(), b.t().cpu())


def test_compare_many_1000_pairs_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(1000):
        a = torch.randn(int(rng.integers(0, 3000)), device="cuda").to(
            torch.bfloat16 if i % 2 else torch.float32
        )
        b = a.clone()
        if a.numel() and i % 3 == 0:
            b[int(rng.integers(0, a.numel()))] += 1
        pairs.append((a, b))
    calls = count_calls(monkeypatch, "cuda_diff")
    gpu = fastckpt.compare_many(pairs)
    assert len(calls) == 1
    assert gpu == fastckpt.compare_many([(a.cpu(), b.cpu()) for a, b in pairs])


def test_diff_large_tensors() -> None:
    a = torch.randn(64 << 20, device="cuda")  # 256 MiB
    b = a.clone()
    b[::4097] += 1e-3
    assert fastckpt.compare_tensors(a, b) == fastckpt.compare_tensors(a.cpu(), b.cpu())


def test_diff_force_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(10_000, device="cuda")
    b = a.clone()
    b[5] = 0
    gpu = fastckpt.compare_tensors(a, b)
    monkeypatch.setenv("FASTCKPT_FORCE_CPU", "1")
    calls = count_calls(monkeypatch, "cuda_diff")
    assert fastckpt.compare_tensors(a, b) == gpu
    assert not calls
