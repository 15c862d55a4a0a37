"""Tensor and state_dict digests against the reference: every torch dtype, non-contiguous views,
0-dim and empty tensors, lazy conj/neg views, nested state_dicts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import fastckpt  # noqa: E402
from fastckpt import _reference  # noqa: E402
from fastckpt.digest import dtype_name  # noqa: E402


def all_dtypes() -> list[torch.dtype]:
    names = [
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "complex128",
        "complex64",
        "complex32",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    ]
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


def logical_bytes(t: torch.Tensor) -> bytes:
    """Independent of fastckpt._tensors: copy element by element order through clone()."""
    c = t.detach().resolve_conj().resolve_neg().clone(memory_format=torch.contiguous_format)
    return bytes(c.reshape(-1).view(torch.uint8).tolist()) if c.numel() else b""


def reference(t: torch.Tensor, leaf: int = 65536) -> int:
    return _reference.tensor_digest(logical_bytes(t), leaf, dtype_name(t.dtype), list(t.shape))


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    nbytes = (
        int(torch.tensor(shape).prod().item()) * torch.empty((), dtype=dtype).element_size()
        if shape
        else (torch.empty((), dtype=dtype).element_size())
    )
    # bool bytes other than 0/1 are not valid bools (copies may normalize them), so draw 0/1 there.
    high = 2 if dtype == torch.bool else 256
    raw = torch.randint(0, high, (nbytes,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", all_dtypes(), ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (7, 13), (3, 5, 1031)])
def test_every_dtype_matches_reference(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    t = random_tensor(dtype, shape)
    d = fastckpt.hash_tensor(t, leaf_size=1024)
    assert d.value == reference(t, 1024)
    assert (d.dtype, d.shape, d.nbytes) == (dtype_name(dtype), shape, t.numel() * t.element_size())


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.int8, torch.bool, torch.complex64], ids=str
)
def test_non_contiguous_hashes_like_contiguous_copy(dtype: torch.dtype) -> None:
    base = random_tensor(dtype, (64, 96, 5))
    views = [
        base.transpose(0, 1),
        base[:, ::3],
        base[1:, 2:50, 1:4],
        base.permute(2, 0, 1),
        base[5],
        base.expand(2, -1, -1, -1),
    ]
    for v in views:
        assert not v.is_contiguous() or v.storage_offset() != 0
        assert (
            fastckpt.hash_tensor(v, leaf_size=512).value
            == fastckpt.hash_tensor(v.contiguous(), leaf_size=512).value
        )
        assert fastckpt.hash_tensor(v, leaf_size=512).value == reference(v, 512)


def test_conj_and_neg_views_are_resolved() -> None:
    z = random_tensor(torch.complex64, (33,))
    assert z.conj().is_conj()
    assert fastckpt.hash_tensor(z.conj()).value == fastckpt.hash_tensor(z.conj().resolve_conj()).value
    assert fastckpt.hash_tensor(z.conj()).value != fastckpt.hash_tensor(z).value


def test_dtype_and_shape_enter_the_digest() -> None:
    t = random_tensor(torch.float32, (4, 6))
    same_bytes = [t.view(torch.int32), t.reshape(6, 4), t.reshape(24)]
    digests = {fastckpt.hash_tensor(x).value for x in [t, *same_bytes]}
    assert len(digests) == 4


def test_unaligned_storage_offsets() -> None:
    raw = random_tensor(torch.uint8, (70000,))
    for off in range(8):
        v = raw[off : off + 65537]
        assert v.data_ptr() % 8 == (raw.data_ptr() + off) % 8
        assert fastckpt.hash_tensor(v).value == reference(v)


def test_state_dict_nested_and_reference() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3}
    sd = fastckpt.hash_state_dict(ckpt, leaf_size=4096)
    assert "model.0.weight" in sd and "optimizer.state.0.exp_avg" in sd and "step" not in sd
    assert sd["model.0.weight"].value == reference(model.state_dict()["0.weight"], 4096)
    expect = _reference.state_dict_digest({k: d.value for k, d in sd.items()}, 4096)
    assert sd.value == expect
    # Order of insertion does not matter; content does.
    flipped = {"step": 3, "optimizer": ckpt["optimizer"], "model": ckpt["model"]}
    assert fastckpt.hash_state_dict(flipped, leaf_size=4096).hex() == sd.hex()
    ckpt["model"]["0.bias"] = ckpt["model"]["0.bias"].clone()
    ckpt["model"]["0.bias"][0] += 1
    assert fastckpt.hash_state_dict(ckpt, leaf_size=4096).hex() != sd.hex()


def test_negative_zero_and_nan_payloads_are_distinct() -> None:
    a = torch.tensor([0.0, float("nan")])
    b = torch.tensor([-0.0, float("nan")])
    c = a.clone()
    c.view(torch.int32)[1] ^= 1  # another NaN payload
    assert len({fastckpt.hash_tensor(x).value for x in (a, b, c)}) == 3


def test_rejected_layouts_have_clear_messages() -> None:
    with pytest.raises(fastckpt.UsageError, match="to_dense"):
        fastckpt.hash_tensor(torch.eye(3).to_sparse())
    with pytest.raises(fastckpt.UsageError, match="meta tensor"):
        fastckpt.hash_tensor(torch.empty(3, device="meta"))
    with pytest.raises(fastckpt.UsageError, match=r"expected a torch\.Tensor"):
        fastckpt.hash_tensor([1, 2, 3])  # type: ignore[arg-type]


def test_hash_bytes_equals_uint8_tensor() -> None:
    data = bytes(range(256)) * 300
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    assert fastckpt.hash_bytes(data).value == fastckpt.hash_tensor(t).value
