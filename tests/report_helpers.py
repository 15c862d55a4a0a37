"""Builders of small training runs (checkpoints written by torch.save, DCP and a safetensors writer
that follows the published format) and independent oracles for the report tests."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np
import xxhash

LEAF = 65536


def make_state(torch: Any, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(256, 256, generator=gen),  # 256 KiB: frozen in make_run
        "layers.0.weight": torch.randn(128, 128, generator=gen),
        "layers.0.bias": torch.randn(128, generator=gen),
        "layers.1.weight": torch.randn(192, 128, generator=gen).to(torch.bfloat16),
        "layers.1.norm": torch.ones(128, dtype=torch.float16),
        "head.weight": torch.randn(64, 128, generator=gen).to(torch.float64),
        "counts": torch.arange(50, dtype=torch.int64),
    }


def make_run(
    torch: Any,
    folder: str,
    steps: tuple[int, ...] = (100, 200, 300, 400),
    *,
    frozen: tuple[str, ...] = ("embed.weight", "counts"),
    seed: int = 0,
    name: str = "step_{step}.pt",
) -> list[dict[str, Any]]:
    """Writes one torch.save checkpoint per step; returns deep copies of the model states written."""
    os.makedirs(folder, exist_ok=True)
    sd = make_state(torch, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    states = []
    for i, step in enumerate(steps):
        if i:
            for k, t in sd.items():
                if k not in frozen:
                    noise = torch.randn(t.shape, generator=gen, dtype=torch.float64) * (1e-3 * (i + 1))
                    sd[k] = (t.double() + noise).to(t.dtype)
        states.append({k: v.clone() for k, v in sd.items()})
        torch.save({"model": sd, "step": step}, os.path.join(folder, name.format(step=step)))
    return states


def expected_change(torch: Any, a: Any, b: Any) -> float:
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    return float((b64 - a64).norm() / a64.norm())


def file_leaves(path: str, leaf: int = LEAF) -> list[tuple[int, int]]:
    """(XXH3-64 with the xxhash package, length) of every leaf of a file."""
    with open(path, "rb") as f:
        data = f.read()
    return [
        (xxhash.xxh3_64_intdigest(data[i : i + leaf]), len(data[i : i + leaf]))
        for i in range(0, len(data), leaf)
    ]


def shared_fraction_oracle(checkpoints: list[list[str]], leaf: int = LEAF) -> float:
    """Fraction of leaf bytes whose digest also occurs in another checkpoint (each checkpoint is a
    list of files)."""
    per = [[lv for p in files for lv in file_leaves(p, leaf)] for files in checkpoints]
    sets = [{d for d, _ in leaves} for leaves in per]
    total = shared = 0
    for i, leaves in enumerate(per):
        others = set().union(*(s for j, s in enumerate(sets) if j != i))
        for d, n in leaves:
            total += n
            if d in others:
                shared += n
    return shared / total if total else 0.0


_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file per the published format: u64 header length, JSON header, raw data."""
    header: dict[str, Any] = {}
    offset = 0
    blobs = []
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v).tobytes()
        header[k] = {
            "dtype": _ST_DTYPES[v.dtype],
            "shape": list(v.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
