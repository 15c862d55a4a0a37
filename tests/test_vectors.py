"""Checked-in digest v1 vectors (tests/vectors/digest_v1.json): the native implementation, the
reference, and the generator must all agree with the file."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

import fastckpt
from fastckpt import _native, _reference

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "digest_v1.json").read_text())


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@pytest.mark.parametrize("case", VECTORS["bytes"], ids=lambda c: f"n{c['input_len']}-L{c['leaf_size']}")
def test_bytes_vectors(case: dict) -> None:
    data = pattern(case["input_len"])
    d = fastckpt.hash_bytes(data, leaf_size=case["leaf_size"])
    assert d.hex() == case["digest"]
    assert [f"{v:016x}" for v in d.leaves] == case["leaves"]
    for isa in _native.available_isas():
        leaves = memoryview(_native.leaf_digests(data, case["leaf_size"], 1, isa)).cast("Q").tolist()
        assert [f"{v:016x}" for v in leaves] == case["leaves"], isa


@pytest.mark.parametrize("case", VECTORS["tensors"], ids=lambda c: c["dtype"])
def test_tensor_vectors(case: dict) -> None:
    torch = pytest.importorskip("torch")
    data = pattern(case["input_len"])
    if case["dtype"] == "bool":
        data = bytes(b & 1 for b in data)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    t = raw.view(getattr(torch, case["dtype"])).reshape(case["shape"])
    assert fastckpt.hash_tensor(t, leaf_size=case["leaf_size"]).hex() == case["digest"]


def test_state_dict_vector() -> None:
    sd = VECTORS["state_dict"]
    entries = {k: int(v, 16) for k, v in sd["entries"].items()}
    assert f"{_reference.state_dict_digest(entries, sd['leaf_size']):032x}" == sd["digest"]


def test_generator_reproduces_checked_in_file() -> None:
    gen = pathlib.Path(__file__).parent / "vectors" / "gen_vectors.py"
    assert subprocess.run([sys.executable, str(gen), "--check"]).returncode == 0


def test_format_md_examples() -> None:
    """The worked examples in docs/FORMAT.md are true."""
    doc = (pathlib.Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
    section = doc[doc.index("### 1.6 Worked examples") : doc.index("### 1.7")]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "`" in r]
    assert len(rows) >= 5
    torch = None
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        digest = cells[3].strip("`")
        if cells[0].startswith("tensor"):
            torch = torch or pytest.importorskip("torch")
            dtype = cells[0].split()[1].split("[")[0]
            case = next(c for c in VECTORS["tensors"] if c["dtype"] == dtype)
            assert case["digest"] == digest
            continue
        n, leaf = int(cells[0]), int(cells[1])
        d = fastckpt.hash_bytes(pattern(n), leaf_size=leaf)
        assert d.hex() == digest
        expect_leaves = [] if cells[2] == "(none)" else [x.strip() for x in cells[2].split(",")]
        assert [f"{v:016x}" for v in d.leaves] == expect_leaves
