"""The readers on real checkpoints written by other projects (fetched by
tests/fetch_real_checkpoints.py; skipped when the cache is empty), cross-checked against
torch.load(weights_only=True) and safetensors."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fastckpt.formats import read_layout, tensors_hit
from formats_helpers import flatten_tensors, storage_bytes

pytestmark = pytest.mark.realckpt


def _cache() -> str:
    return os.environ.get("FASTCKPT_REAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastckpt-real"
    )


def _manifest() -> list[dict[str, Any]]:
    p = os.path.join(_cache(), "manifest.json")
    if not os.path.isfile(p):
        return []
    with open(p) as f:
        return list(json.load(f))


ENTRIES = _manifest()


@pytest.mark.skipif(not ENTRIES, reason="no real checkpoints cached: run tests/fetch_real_checkpoints.py")
@pytest.mark.parametrize(
    "entry",
    ENTRIES,
    ids=[e["member"].rsplit("/", 2)[-2] + "/" + e["member"].rsplit("/", 1)[-1] for e in ENTRIES],
)
def test_real_checkpoint(entry: dict[str, Any]) -> None:
    path = os.path.join(_cache(), entry["path"])
    data = Path(path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], "cached file changed: fetch again"
    layout = read_layout(path)
    assert layout.format == entry["format"]
    assert layout.problems == [] and layout.unsafe_globals == []
    pos = 0
    for s in layout.segments:
        assert s.offset == pos and s.length > 0
        pos += s.length
    assert pos == len(data)
    if entry["format"] in ("torch-zip", "torch-legacy"):
        torch = pytest.importorskip("torch")
        want = flatten_tensors(torch, torch.load(path, weights_only=True, map_location="cpu"))
        got = {t.key: t for t in layout.tensors}
        assert set(got) == set(want)
        for key, t in want.items():
            span = got[key]
            assert (span.dtype, span.shape) == (str(t.dtype).removeprefix("torch."), tuple(t.shape)), key
            assert data[span.offset : span.offset + span.nbytes] == storage_bytes(torch, t), key
    elif entry["format"] == "safetensors":
        torch = pytest.importorskip("torch")
        safetensors = pytest.importorskip("safetensors")
        got = {t.key: t for t in layout.tensors}
        with safetensors.safe_open(path, "pt") as f:
            assert set(f.keys()) == set(got)
            for k in got:
                t = f.get_tensor(k)
                assert got[k].shape == tuple(t.shape)
                assert (
                    data[got[k].offset : got[k].offset + got[k].nbytes]
                    == t.reshape(-1).view(torch.uint8).numpy().tobytes()
                )
    else:  # TorchScript and other zips: every record located and its CRC verified
        with zipfile.ZipFile(path) as zf:
            names = {i.filename for i in zf.infolist() if i.file_size}
        assert names <= {s.name for s in layout.segments}
    # a flipped byte inside the largest tensor is found by its CRC (zip) and mapped to that tensor
    if layout.tensors:
        big = max(layout.tensors, key=lambda t: t.nbytes)
        hit = tensors_hit(layout, big.offset + big.nbytes // 2, 1)
        assert big.key in [k for k, _, _ in hit]
