"""Builders of small real checkpoints (written by torch, safetensors and DCP themselves) and an
independent way to list what torch.load(weights_only=True) sees, for the reader tests."""

from __future__ import annotations

import os
import warnings
from typing import Any


def training_state(torch: Any, *, legacy: bool = False) -> dict[str, Any]:
    """A model + optimizer + step checkpoint with shared storages, views and odd dtypes.

    `legacy`: leave out the dtypes the legacy format cannot load back (they have no typed storage)."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    for p in model.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    model(torch.randn(2, 5, generator=gen)).sum().backward()
    opt.step()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 1234,
        "epoch": 3,
        "name": "run-a",
        "shared": {"base": base, "rows": base[1:3], "cols": base[:, ::2], "again": base},
        "param": torch.nn.Parameter(torch.randn(3, generator=gen)),
        "dtypes": {
            "bf16": torch.randn(7, generator=gen).to(torch.bfloat16),
            "f16": torch.randn(2, 3, generator=gen).half(),
            "i64": torch.arange(5),
            "u8": torch.arange(9, dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
            "f8": torch.randn(4, generator=gen).to(torch.float8_e4m3fn),
            "u16": torch.arange(6, dtype=torch.int32).to(torch.uint16),
            "c64": torch.randn(3, dtype=torch.complex64, generator=gen),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 4),
        },
        "nested": [torch.ones(2), (torch.zeros(1), {"deep": torch.full((2, 2), 7.0)})],
    }
    if legacy:
        del state["dtypes"]["f8"], state["dtypes"]["u16"]  # type: ignore[attr-defined]
    return state


def flatten_tensors(torch: Any, obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> tensor, the same naming the readers use (dict keys, list indices)."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_tensors(torch, v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_tensors(torch, v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def storage_bytes(torch: Any, t: Any) -> bytes:
    """The bytes a tensor's view spans in its storage (first to last element)."""
    isz = t.element_size()
    if t.numel() == 0:
        return b""
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True))
    storage = t.untyped_storage()
    u8 = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
    start = t.storage_offset() * isz
    return bytes(u8.numpy()[start : start + span * isz].tobytes())


def write_dcp(torch: Any, folder: str) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    gen = torch.Generator().manual_seed(1)
    sd = {
        "model": {
            "w": torch.randn(3, 4, generator=gen),
            "b": torch.randn(4, generator=gen).to(torch.bfloat16),
        },
        "step": 42,
        "meta": {"tag": "x"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(sd, checkpoint_id=folder)
    return sd


def write_hf_sharded(torch: Any, folder: str) -> dict[str, Any]:
    import json

    os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(2)
    shards = {
        "model-00001-of-00002.safetensors": {
            "a.weight": torch.randn(4, 4, generator=gen),
            "a.bias": torch.randn(4, generator=gen),
        },
        "model-00002-of-00002.safetensors": {"b.weight": torch.randn(2, 4, generator=gen)},
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_safetensors(torch, tensors, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("{}")
    return shards


_ST_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "complex64": "C64",
}  # fmt: skip


def save_safetensors(
    torch: Any, tensors: dict[str, Any], path: str, metadata: dict[str, str] | None = None
) -> None:
    """safetensors.torch.save_file when the library is installed, else the same format by hand
    (8-byte header length, JSON header, tensors in sorted-key order, header padded to 8 bytes)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        import json
        import struct

        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        blobs = []
        pos = 0
        for k in sorted(tensors):
            t = tensors[k].contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            header[k] = {
                "dtype": _ST_NAMES[str(t.dtype).removeprefix("torch.")],
                "shape": list(t.shape),
                "data_offsets": [pos, pos + len(raw)],
            }
            blobs.append(raw)
            pos += len(raw)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
        return
    save_file(tensors, path, metadata=metadata)
