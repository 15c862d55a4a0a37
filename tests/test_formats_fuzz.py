"""Fuzzing the readers: random truncations and byte mutations of valid checkpoints never raise
anything but InputError, never hang, and always produce a segment map that tiles the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastckpt.errors import InputError
from fastckpt.formats import Layout, read_dir_layout, read_layout, tensors_hit
from formats_helpers import save_safetensors, training_state, write_dcp

torch = pytest.importorskip("torch")

_SEEDS: dict[str, bytes] = {}
_DIR: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def seeds(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("fuzz-seeds")
    small = {
        "model": {"w": torch.randn(3, 2), "b": torch.ones(2, dtype=torch.bfloat16)},
        "step": 3,
        "v": torch.arange(6.0)[::2],
    }
    torch.save(small, base / "z.pt")
    torch.save(small, base / "l.pt", _use_new_zipfile_serialization=False)
    torch.save(training_state(torch), base / "big.pt", pickle_protocol=4)
    save_safetensors(
        torch,
        {"a": torch.randn(4), "b": torch.zeros(2, 3, dtype=torch.float16)},
        str(base / "s.safetensors"),
        {"k": "v"},
    )
    for name in ("z.pt", "l.pt", "big.pt", "s.safetensors"):
        _SEEDS[name] = (base / name).read_bytes()
    write_dcp(torch, str(base / "dcp"))
    _DIR["dcp"] = base / "dcp"
    _DIR["work"] = tmp_path_factory.mktemp("fuzz-work")


def _check(layout: Layout) -> None:
    pos = 0
    for s in layout.segments:
        assert s.offset == pos and s.length > 0
        pos += s.length
    assert pos == layout.size
    for t in layout.tensors:
        assert t.nbytes >= 0 and t.itemsize >= 1
    tensors_hit(layout, 0, max(layout.size, 1))


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("flip"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
)


def _mutate(data: bytes, muts: list[tuple[str, float, bytes]]) -> bytes:
    b = bytearray(data)
    for op, where, blob in muts:
        i = min(int(where * len(b)), len(b))
        if op == "truncate":
            del b[i:]
        elif op == "flip":
            for j, x in enumerate(blob):
                if i + j < len(b):
                    b[i + j] ^= x or 1
        elif op == "insert":
            b[i:i] = blob
        else:
            b[i : i + len(blob)] = bytes(len(blob))[: len(b) - i] if i < len(b) else b""
    return bytes(b)


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["z.pt", "l.pt", "big.pt", "s.safetensors"]),
    muts=st.lists(mutation, min_size=1, max_size=3),
)
def test_mutated_files(seed: str, muts: list[tuple[str, float, bytes]]) -> None:
    p = _DIR["work"] / seed
    p.write_bytes(_mutate(_SEEDS[seed], muts))
    try:
        layout = read_layout(str(p))
    except InputError:
        return
    _check(layout)


@settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from([".metadata", "shard"]), muts=st.lists(mutation, min_size=1, max_size=2))
def test_mutated_dcp(target: str, muts: list[tuple[str, float, bytes]]) -> None:
    work = _DIR["work"] / "dcp"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(_DIR["dcp"], work)
    name = target if target == ".metadata" else next(f for f in os.listdir(work) if f.endswith(".distcp"))
    (work / name).write_bytes(_mutate((work / name).read_bytes(), muts))
    d = read_dir_layout(str(work))
    assert d.format == "dcp"
    for f in d.files:
        if f.endswith(".distcp"):
            _check(read_layout(str(work / f)))


@settings(max_examples=200, deadline=5000)
@given(data=st.binary(max_size=300), ext=st.sampled_from([".pt", ".safetensors", ".bin", ".dat"]))
def test_random_bytes(data: bytes, ext: str) -> None:
    p = _DIR["work"] / f"random{ext}"
    for blob in (
        data,
        b"PK\x03\x04" + data,
        b"\x80\x02" + data,
        len(data).to_bytes(8, "little") + b"{" + data,
    ):
        p.write_bytes(blob)
        _check(read_layout(str(p)))
