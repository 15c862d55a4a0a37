"""A DCP `.metadata` and an HF `*.index.json` given as single files (formats "dcp-metadata" and
"hf-index"): read_layout recognises them, checks the files they name (exist, long enough, right
keys), and `inspect` / `verify` report that. Expected sizes and names come from the folder on disk
and from Python's json, not from fastckpt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastckpt.formats import detect_format, read_layout
from formats_helpers import write_dcp, write_hf_sharded

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastckpt", *args], capture_output=True, text=True, timeout=300
    )


def test_dcp_metadata_file_intact(tmp_path: Path) -> None:
    folder = tmp_path / "dcp"
    write_dcp(torch, str(folder))
    meta = folder / ".metadata"
    shards = sorted(f for f in os.listdir(folder) if f.endswith(".distcp"))
    assert detect_format(str(meta)) == "dcp-metadata"
    lay = read_layout(str(meta))
    size = meta.stat().st_size
    assert (
        lay.format == "dcp-metadata" and lay.problems == [] and lay.tensors == [] and lay.unsafe_globals == []
    )
    assert [(s.offset, s.length, s.kind, s.name) for s in lay.segments] == [
        (0, size, "metadata", ".metadata")
    ]
    assert lay.info["files"] == shards and lay.info["items"] == 4  # model.w, model.b, step, meta.tag
    r = cli("verify", str(meta))
    assert r.returncode == 0, r.stderr
    assert f"{meta}: OK ({size} bytes, dcp-metadata: structure checked)" in r.stdout
    out = json.loads(cli("verify", "--json", str(meta)).stdout)
    assert out["ok"] and out["format"] == "dcp-metadata" and not out["truncated"] and out["damaged"] == []
    r = cli("inspect", str(meta))
    assert r.returncode == 0 and r.stdout.startswith(f"{meta}: dcp-metadata, {size} bytes")
    assert f"references: 4 item(s) in {len(shards)} file(s)" in r.stdout


def test_dcp_metadata_file_missing_and_short_shards(tmp_path: Path) -> None:
    folder = tmp_path / "dcp"
    write_dcp(torch, str(folder))
    meta = folder / ".metadata"
    (shard,) = sorted(f for f in os.listdir(folder) if f.endswith(".distcp"))
    data = (folder / shard).read_bytes()
    (folder / shard).write_bytes(data[:-100])
    lay = read_layout(str(meta))
    (q,) = lay.problems
    assert q.kind == "shard-truncated" and q.offset is None  # the shard is short, not this file
    assert q.message.startswith(f"shard {shard!r} is {len(data) - 100} bytes, the metadata needs {len(data)}")
    out = json.loads(cli("verify", "--json", str(meta)).stdout)
    assert not out["ok"] and not out["truncated"] and out["problems"][0]["kind"] == "shard-truncated"
    (folder / shard).unlink()
    r = cli("verify", str(meta))
    assert r.returncode == 1
    assert f"missing-file: shard {shard!r} is missing (4 item(s), e.g. 'meta.tag')" in r.stdout


def test_dcp_metadata_file_damaged_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "dcp"
    write_dcp(torch, str(folder))
    meta = folder / ".metadata"
    meta.write_bytes(meta.read_bytes()[:50])
    lay = read_layout(str(meta))
    assert lay.format == "dcp-metadata"
    assert [(q.kind, q.message) for q in lay.problems] == [
        ("truncated", ".metadata: pickle data ends before the STOP opcode")
    ]
    r = cli("verify", str(meta))
    assert r.returncode == 1 and "DAMAGED" in r.stdout
    meta.write_bytes(b"")
    r = cli("verify", str(meta))
    assert (r.returncode, r.stdout) == (2, "")
    assert (
        r.stderr
        == f"fastckpt: error: {meta} at offset 0: expected a checkpoint, found an empty file (0 bytes)\n"
    )


def test_hf_index_file(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    shards = write_hf_sharded(torch, str(folder))
    idx = folder / "model.safetensors.index.json"
    size = idx.stat().st_size
    assert detect_format(str(idx)) == "hf-index"
    lay = read_layout(str(idx))
    assert lay.format == "hf-index" and lay.problems == [] and lay.tensors == []
    assert [(s.offset, s.length, s.kind, s.name) for s in lay.segments] == [(0, size, "metadata", idx.name)]
    assert lay.info == {"tensors": sum(len(t) for t in shards.values()), "files": sorted(shards)}
    r = cli("verify", str(idx))
    assert r.returncode == 0 and f"{idx}: OK ({size} bytes, hf-index: structure checked)" in r.stdout
    r = cli("inspect", str(idx))
    assert r.returncode == 0 and "references: 3 tensor(s) in 2 file(s)" in r.stdout

    # a short shard: its safetensors header says how long it must be
    second = folder / "model-00002-of-00002.safetensors"
    data = second.read_bytes()
    second.write_bytes(data[:-8])
    (q,) = read_layout(str(idx)).problems
    assert (q.kind, q.offset) == ("shard-truncated", None)
    assert (
        q.message
        == f"shard {second.name!r} is truncated: {len(data) - 8} bytes, its header needs {len(data)}"
    )
    out = json.loads(cli("verify", "--json", str(idx)).stdout)
    assert not out["ok"] and not out["truncated"]
    # a missing shard, and keys that do not match
    second.unlink()
    doc = json.loads(idx.read_text())
    doc["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    idx.write_text(json.dumps(doc))
    assert [(q.kind, q.message) for q in read_layout(str(idx)).problems] == [
        (
            "missing-key",
            "shard 'model-00001-of-00002.safetensors' lacks 1 tensor(s) its index lists, e.g. 'ghost'",
        ),
        ("missing-file", f"shard {second.name!r} is missing (1 tensor(s), e.g. 'b.weight')"),
    ]
    r = cli("verify", str(idx))
    assert r.returncode == 1 and "missing-file:" in r.stdout and "missing-key:" in r.stdout
    # not JSON: a problem at the character where parsing stopped
    idx.write_text('{"weight_map": ')
    (q,) = read_layout(str(idx)).problems
    assert q.kind == "bad-header" and q.offset == len('{"weight_map": ')
    assert cli("verify", str(idx)).returncode == 1


def test_metadata_files_can_be_protected_and_verified(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    write_hf_sharded(torch, str(folder))
    idx = folder / "model.safetensors.index.json"
    assert cli("protect", "--quiet", str(idx)).returncode == 0
    out = json.loads(cli("verify", "--json", str(idx)).stdout)
    assert out["ok"] and out["manifest"] and out["format"] == "hf-index"
    raw = bytearray(idx.read_bytes())
    raw[5] ^= 1
    idx.write_bytes(bytes(raw))
    out = json.loads(cli("verify", "--json", str(idx)).stdout)
    assert not out["ok"] and out["damaged"][0]["offset"] == 0
    assert out["damaged"][0]["segments"][0]["kind"] == "metadata"
