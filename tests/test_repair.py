"""`fastckpt repair` and the sidecar's PARITY section: parity bytes against the numpy oracle,
sources (`--from`), dry runs, backups, folders, sidecar restoration, clean failures."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastckpt import _parity_reference as ref
from fastckpt.cli import main
from fastckpt.parity import ParityParams, n_leaves_of
from fastckpt.protect import build_manifest, protect_dir, protect_file
from fastckpt.sidecar import SEC_PARITY, Section, encode_sidecar, read_sidecar
from fastckpt.sidecar_parity import (
    SEC_PARITY_STANDIN,
    decode_parity_section,
    load_parity,
    parity_section_of,
    rebuild_parity_leaves,
    sidecar_with_parity,
)

LEAF = 4096


def _blob(path: Path, n: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(n)
    path.write_bytes(data)
    return data


def _protect(path: Path | str, **kw: object) -> None:
    """Random test bytes can look like the start of some format; seal them regardless."""
    assert protect_file(path, force=True, **kw).written  # type: ignore[arg-type]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*argv: str, capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out if capsys is not None else ""
    return code, (json.loads(out) if out.strip().startswith("{") else {})


# ---------------------------------------------------------------------------------------------
# The PARITY section
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, LEAF - 1, LEAF, 5 * LEAF + 17, 300 * LEAF + 1])
def test_parity_bytes_match_reference(tmp_path: Path, size: int) -> None:
    data = _blob(tmp_path / "f.bin", size)
    _protect(tmp_path / "f.bin", leaf_size=LEAF, redundancy=5)
    sc = read_sidecar(str(tmp_path / "f.bin.fastckpt"))
    sec = parity_section_of(sc.manifest)
    assert sec is not None
    p = ParityParams.from_redundancy(5, n_leaves_of(size, LEAF))
    assert sec.params == p
    want = ref.encode(data, LEAF, p.k, p.m, p.groups)
    with load_parity(sc.path, sc.bulk_offset, sec) as loaded:
        assert bytes(loaded.data) == want
        assert loaded.damaged == []
    digests = [xxhash.xxh3_64_intdigest(want[i : i + LEAF]) for i in range(0, len(want), LEAF)]
    assert list(memoryview(sec.leaf_bytes).cast("Q")) == digests
    assert (sec.range_offset, sec.range_length, sec.leaf_size) == (0, size, LEAF)


def test_parity_section_layout(tmp_path: Path) -> None:
    """The payload as FORMAT.md 2.6 describes it, decoded with struct."""
    import struct

    _blob(tmp_path / "f.bin", 20 * LEAF + 5)
    _protect(tmp_path / "f.bin", leaf_size=LEAF, redundancy=10)
    sc = read_sidecar(str(tmp_path / "f.bin.fastckpt"))
    (raw,) = [s.payload for s in sc.manifest.extra if s.type == SEC_PARITY]
    (n,) = struct.unpack_from("<H", raw)
    assert (
        raw[2 : 2 + n] == b'{"version":1,"scheme":"rs-cauchy-gf256","polynomial":285,"k":21,"m":3,"groups":1}'
    )
    record = json.loads(raw[2 : 2 + n])
    assert record == {
        "version": 1,
        "scheme": "rs-cauchy-gf256",
        "polynomial": 285,
        "k": 21,
        "m": 3,
        "groups": 1,
    }
    r_off, r_len, leaf, p_off, p_len, count = struct.unpack_from("<6Q", raw, 2 + n)
    assert (r_off, r_len, leaf, p_off, p_len, count) == (0, 20 * LEAF + 5, LEAF, 0, 3 * LEAF, 3)
    assert len(raw) == 2 + n + 48 + 8 * count
    assert sc.bulk_length == 3 * LEAF
    assert decode_parity_section(raw).params.m == 3


def test_sidecar_with_parity_is_what_protect_writes(tmp_path: Path) -> None:
    data = _blob(tmp_path / "f.bin", 77 * LEAF + 3)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    written = (tmp_path / "f.bin.fastckpt").read_bytes()
    manifest, _ = build_manifest(str(tmp_path / "f.bin"), leaf_size=LEAF)
    assert sidecar_with_parity(manifest, str(tmp_path / "f.bin")) == written
    # The container around the parity is exactly sidecar.encode_sidecar's (manifest read back).
    sc = read_sidecar(str(tmp_path / "f.bin.fastckpt"))
    sec = parity_section_of(sc.manifest)
    assert sec is not None
    with load_parity(sc.path, sc.bulk_offset, sec) as loaded:
        assert encode_sidecar(sc.manifest, bulk=bytes(loaded.data)) == written
    assert sidecar_with_parity(manifest, data) == written  # a buffer instead of a path
    # An old stand-in section is replaced, and the input manifest is left alone.
    manifest.extra.append(Section(SEC_PARITY_STANDIN, 0, b"{}"))
    assert sidecar_with_parity(manifest, data) == written
    assert manifest.extra[-1].type == SEC_PARITY_STANDIN
    manifest.extra.pop()
    assert sidecar_with_parity(manifest, data, redundancy=0) == encode_sidecar(manifest)


def test_sidecar_with_parity_checks_size(tmp_path: Path) -> None:
    data = _blob(tmp_path / "f.bin", 3 * LEAF)
    manifest, _ = build_manifest(str(tmp_path / "f.bin"), leaf_size=LEAF)
    with pytest.raises(ValueError, match="bytes as described"):
        sidecar_with_parity(manifest, data[:-1])


@given(size=st.integers(1, 40 * 256), pct=st.sampled_from([1, 5, 25, 100]), seed=st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_rebuild_parity_leaves_matches_reference(size: int, pct: int, seed: int) -> None:
    L = 256
    data = random.Random(seed).randbytes(size)
    p = ParityParams.from_redundancy(pct, n_leaves_of(size, L))
    want = ref.encode(data, L, p.k, p.m, p.groups)
    from fastckpt.sidecar_parity import ParitySection

    sec = ParitySection(p, 0, size, L, 0, len(want), b"\0" * 8 * p.parity_leaves)
    leaves = random.Random(seed + 1).sample(range(p.parity_leaves), min(3, p.parity_leaves))
    got = rebuild_parity_leaves(data, size, sec, leaves)
    for j in leaves:
        assert got[j] == want[j * L : (j + 1) * L]


# ---------------------------------------------------------------------------------------------
# Repair
# ---------------------------------------------------------------------------------------------


def test_intact_file_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _blob(tmp_path / "f.bin", 10 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    before = _files(tmp_path)
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["ok"] and out["intact"] and not out["repaired"]
    assert _files(tmp_path) == before


def test_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blob(tmp_path / "f.bin", 64 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(5 * LEAF + 9)
        f.write(b"\xff\x00")
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0
    for key in (
        "ok",
        "path",
        "repaired",
        "damaged",
        "rebuilt_from_parity",
        "copied_from",
        "unrecoverable",
        "backup",
        "sidecar_restored",
    ):
        assert key in out
    assert out["repaired"] is True and out["rebuilt_from_parity"] == 1
    assert out["damaged"] == [
        {
            "offset": 5 * LEAF,
            "length": LEAF,
            "tensors": [],
            "elements": [],
            "segments": out["damaged"][0]["segments"],
        }
    ]
    assert out["backup"] == str(tmp_path / "f.bin") + ".damaged"
    assert (tmp_path / "f.bin").read_bytes() == data
    assert out["copied_from"] == [] and out["unrecoverable"] == [] and out["sidecar_restored"] is False


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _blob(tmp_path / "f.bin", 30 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    os.truncate(tmp_path / "f.bin", 29 * LEAF)
    with open(tmp_path / "f.bin.fastckpt", "r+b") as f:  # and one sidecar copy
        f.seek(200)
        f.write(b"!")
    before = _files(tmp_path)
    code, out = _run("repair", str(tmp_path / "f.bin"), "--dry-run", "--json", capsys=capsys)
    assert code == 0 and out["repairable"] and not out["repaired"] and out["rebuilt_from_parity"] == 1
    assert out["sidecar_damaged"] and not out["sidecar_restored"]
    assert _files(tmp_path) == before


def test_no_backup_and_backup_names(tmp_path: Path) -> None:
    data = _blob(tmp_path / "f.bin", 30 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    (tmp_path / "f.bin.damaged").write_bytes(b"an older backup")
    for expect in ("f.bin.damaged.1", None):
        with open(tmp_path / "f.bin", "r+b") as f:
            f.write(b"x")
        argv = ["repair", str(tmp_path / "f.bin"), "-q"] + ([] if expect else ["--no-backup"])
        assert main(argv) == 0
        assert (tmp_path / "f.bin").read_bytes() == data
    assert (tmp_path / "f.bin.damaged").read_bytes() == b"an older backup"
    assert (tmp_path / "f.bin.damaged.1").read_bytes()[:1] == b"x"
    assert not (tmp_path / "f.bin.damaged.2").exists()


def test_beyond_budget_reports_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    torch.save({"w": torch.arange(100_000, dtype=torch.float32), "b": torch.ones(10)}, path)
    _protect(path, leaf_size=LEAF, redundancy=1)
    with open(path, "r+b") as f:
        f.seek(20 * LEAF)
        f.write(bytes(8 * LEAF))  # 1%: one group, one parity leaf; 8 erased leaves are lost
    damaged = path.read_bytes()
    code, out = _run("repair", str(path), "--json", capsys=capsys)
    assert code == 1 and not out["ok"] and not out["repairable"] and out["backup"] is None
    assert path.read_bytes() == damaged
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "m.pt.fastckpt"]
    lost = out["unrecoverable"]
    assert lost and all(e["tensors"] == ["w"] for e in lost)
    el = lost[0]["elements"][0]
    assert el["tensor"] == "w" and el["stop"] > el["start"]
    # Text mode names the tensors too.
    assert main(["repair", str(path)]) == 1
    assert "NOT REPAIRABLE" in capsys.readouterr().out


def test_from_same_offset_and_shifted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without parity, leaves come from other files: at the same offset, or at any leaf-aligned one."""
    data = _blob(tmp_path / "f.bin", 40 * LEAF + 100)
    _protect(tmp_path / "f.bin", leaf_size=LEAF, redundancy=0)
    replica = tmp_path / "replica.bin"
    replica.write_bytes(data)
    shifted = tmp_path / "older.bin"  # same leaves, three leaves later, different tail
    shifted.write_bytes(os.urandom(3 * LEAF) + data[: 30 * LEAF] + os.urandom(999))
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(10 * LEAF)
        f.write(bytes(5 * LEAF))
    code, out = _run("repair", str(tmp_path / "f.bin"), "--from", str(shifted), "--json", capsys=capsys)
    assert code == 0 and out["copied_from"] == [{"path": str(shifted), "leaves": 5}]
    assert (tmp_path / "f.bin").read_bytes() == data
    # The short last leaf can only come from the same offset.
    os.truncate(tmp_path / "f.bin", 39 * LEAF)
    code, out = _run("repair", str(tmp_path / "f.bin"), "--from", str(shifted), "--json", capsys=capsys)
    assert code == 1 and out["unrecoverable"][0]["offset"] == 39 * LEAF
    code, out = _run(
        "repair",
        str(tmp_path / "f.bin"),
        "--from",
        str(shifted),
        "--from",
        str(replica),
        "--json",
        capsys=capsys,
    )
    assert code == 0 and (tmp_path / "f.bin").read_bytes() == data
    assert {c["path"]: c["leaves"] for c in out["copied_from"]} == {str(replica): 2}


def test_from_with_stale_sidecar_is_checked(tmp_path: Path) -> None:
    """An OTHER whose own sidecar lies about its leaves: claims are checked against the bytes."""
    data = _blob(tmp_path / "f.bin", 20 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF, redundancy=0)
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(LEAF) + data[: 19 * LEAF])
    _protect(other, leaf_size=LEAF, redundancy=0)
    other.write_bytes(os.urandom(20 * LEAF))  # changed after it was protected
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(4 * LEAF)
        f.write(b"zz")
    before = (tmp_path / "f.bin").read_bytes()
    assert main(["repair", str(tmp_path / "f.bin"), "--from", str(other), "-q"]) == 1
    assert (tmp_path / "f.bin").read_bytes() == before
    other.write_bytes(os.urandom(LEAF) + data[: 19 * LEAF])
    os.utime(other)
    assert main(["repair", str(tmp_path / "f.bin"), "--from", str(other), "-q"]) == 0
    assert (tmp_path / "f.bin").read_bytes() == data


def test_parity_and_sources_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither the parity nor the other file alone can restore the damage; together they can."""
    data = _blob(tmp_path / "f.bin", 100 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF, redundancy=1)  # k=100, m=1, one group
    other = tmp_path / "other.bin"
    other.write_bytes(data[: 50 * LEAF] + os.urandom(50 * LEAF))
    with open(tmp_path / "f.bin", "r+b") as f:
        for leaf in (3, 70):
            f.seek(leaf * LEAF)
            f.write(b"\0\1\2")
    before = (tmp_path / "f.bin").read_bytes()
    assert main(["repair", str(tmp_path / "f.bin"), "-q"]) == 1
    assert main(["repair", str(tmp_path / "f.bin"), "-q", "--from", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert (tmp_path / "f.bin").read_bytes() == before
    code, out = _run("repair", str(tmp_path / "f.bin"), "--from", str(other), "--json", capsys=capsys)
    assert code == 0 and out["rebuilt_from_parity"] == 1 and out["copied_from"][0]["leaves"] == 1
    assert (tmp_path / "f.bin").read_bytes() == data


def test_missing_file_from_other(tmp_path: Path) -> None:
    data = _blob(tmp_path / "f.bin", 12 * LEAF + 5)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    shutil.copy(tmp_path / "f.bin", tmp_path / "copy.bin")
    os.unlink(tmp_path / "f.bin")
    assert main(["repair", str(tmp_path / "f.bin"), "-q"]) == 1
    assert not (tmp_path / "f.bin").exists()
    assert main(["repair", str(tmp_path / "f.bin"), "--from", str(tmp_path / "copy.bin"), "-q"]) == 0
    assert (tmp_path / "f.bin").read_bytes() == data
    assert not (tmp_path / "f.bin.damaged").exists()


def test_no_sidecar_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _blob(tmp_path / "f.bin", 100)
    assert main(["repair", str(tmp_path / "f.bin")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastckpt: error: ") and "protect" in err and err.count("\n") == 1


def test_failure_midway_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastckpt.repair as rp

    _blob(tmp_path / "f.bin", 50 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(7 * LEAF)
        f.write(b"bad")
    before = _files(tmp_path)

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rp, "reconstruct_leaves", boom)
    assert main(["repair", str(tmp_path / "f.bin"), "-q"]) == 2
    assert _files(tmp_path) == before


def test_sidecar_copies_and_truncated_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _blob(tmp_path / "f.bin", 200 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    sc_path = tmp_path / "f.bin.fastckpt"
    pristine = sc_path.read_bytes()
    b_off = int.from_bytes(pristine[32:40], "little")
    # Both copies, different places: spliced back, byte-identical.
    raw = bytearray(pristine)
    raw[64 + 100] ^= 1
    raw[b_off + 500] ^= 4
    sc_path.write_bytes(raw)
    assert main(["verify", str(tmp_path / "f.bin"), "-q"]) == 2
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["intact"] and out["sidecar_restored"] and sc_path.read_bytes() == pristine
    # Both copies at the same relative place: not recoverable, nothing written.
    raw = bytearray(pristine)
    raw[64 + 100] ^= 1
    raw[b_off + 100] ^= 1
    sc_path.write_bytes(raw)
    assert main(["repair", str(tmp_path / "f.bin"), "-q"]) == 2
    assert sc_path.read_bytes() == raw
    # A cut-off sidecar: copy B, the trailer and part of the parity are gone; repair rebuilds them
    # from copy A and the file.
    sc_path.write_bytes(pristine[: b_off - 3 * LEAF])
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["sidecar_restored"] and out["parity"]["damaged_leaves"] >= 3
    assert sc_path.read_bytes() == pristine


def test_damaged_parity_is_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blob(tmp_path / "f.bin", 120 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)  # 5%: k=60, m=3, 2 groups
    sc_path = tmp_path / "f.bin.fastckpt"
    pristine = sc_path.read_bytes()
    sc = read_sidecar(str(sc_path))
    raw = bytearray(pristine)
    raw[sc.bulk_offset + 10] ^= 0xFF  # parity leaf 0: group 0, row 0
    sc_path.write_bytes(raw)
    code, out = _run("verify", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["sidecar_damaged"] and "parity" in " ".join(out["sidecar_problems"])
    with open(tmp_path / "f.bin", "r+b") as f:  # 3 leaves of group 0: needs all 3 parity rows
        for leaf in (0, 2, 4):
            f.seek(leaf * LEAF)
            f.write(b"\xee")
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 1 and out["parity"]["damaged_leaves"] == 1 and out["lost_groups"] == 1
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(4 * LEAF)
        f.write(data[4 * LEAF : 4 * LEAF + 1])
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["rebuilt_from_parity"] == 2 and out["sidecar_restored"]
    assert (tmp_path / "f.bin").read_bytes() == data and sc_path.read_bytes() == pristine


def test_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ckpt"
    (root / "sub").mkdir(parents=True)
    a = _blob(root / "a.bin", 30 * LEAF, 1)
    b = _blob(root / "sub" / "b.bin", 30 * LEAF, 2)
    assert protect_dir(root, leaf_size=LEAF, force=True).written
    replica = tmp_path / "replica"
    shutil.copytree(root, replica)
    manifest = (root / ".fastckpt-dir").read_bytes()
    with open(root / "a.bin", "r+b") as f:
        f.seek(3 * LEAF)
        f.write(b"x")
    (root / "sub" / "b.bin").write_bytes(b[: 10 * LEAF])  # beyond parity, but the replica has it
    raw = bytearray(manifest)
    raw[70] ^= 1
    (root / ".fastckpt-dir").write_bytes(raw)
    code, out = _run("repair", str(root), "--json", capsys=capsys)
    assert code == 1 and not out["ok"]
    assert [f["file"] for f in out["files"] if not f["ok"]] == ["sub/b.bin"]
    assert (root / "a.bin").read_bytes() == a and (root / ".fastckpt-dir").read_bytes() == manifest
    code, out = _run("repair", str(root), "--from", str(replica), "--json", capsys=capsys)
    assert code == 0 and out["repaired"] and (root / "sub" / "b.bin").read_bytes() == b
    assert out["copied_from"] == [{"path": str(replica / "sub" / "b.bin"), "leaves": 20}]
    assert main(["verify", str(root), "-q"]) == 0


def test_dcp_folder(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from fastckpt import faults

    path = faults.write_sample("dcp", str(tmp_path), nbytes=200_000)
    protect_dir(path, leaf_size=LEAF)
    shard = next(p for p in Path(path).iterdir() if p.suffix == ".distcp")
    data = shard.read_bytes()
    with open(shard, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(b"\0" * 100)
    assert main(["repair", path, "-q"]) == 0
    assert shard.read_bytes() == data
    del torch


@given(
    leaves=st.sets(st.integers(0, 63), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 64 * 256 - 1)),
    pct=st.sampled_from([2, 5, 20]),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_exact_or_untouched(tmp_path: Path, leaves: set[int], cut: int | None, pct: int) -> None:
    """Any set of damaged leaves and any cut: the result is the original, or the input unchanged."""
    L = 256
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "f.bin"
    data = random.Random(7).randbytes(64 * L - 3)
    path.write_bytes(data)
    _protect(path, leaf_size=L, redundancy=pct)
    damaged = bytearray(data)
    for i in leaves:
        damaged[min(i * L + 5, len(data) - 1)] ^= 0x5A
    if cut is not None:
        damaged = damaged[:cut]
    path.write_bytes(bytes(damaged))
    sc = read_sidecar(str(path) + ".fastckpt")
    sec = parity_section_of(sc.manifest)
    assert sec is not None
    lost = [i for i in range(64) if i in leaves or min((i + 1) * L, len(data)) > len(damaged)]
    groups: dict[int, int] = {}
    for i in lost:
        groups[i % sec.params.groups] = groups.get(i % sec.params.groups, 0) + 1
    expect_ok = not groups or max(groups.values()) <= sec.params.m
    code = main(["repair", str(path), "-q", "--no-backup"])
    assert code == (0 if expect_ok else 1)
    assert path.read_bytes() == (data if expect_ok else bytes(damaged))
    assert sorted(os.listdir(folder)) == ["f.bin", "f.bin.fastckpt"]


def test_repair_never_imports_torch(tmp_path: Path) -> None:
    _blob(tmp_path / "f.bin", 20 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    with open(tmp_path / "f.bin", "r+b") as f:
        f.write(b"q")
    code = (
        "import sys; from fastckpt.cli import main; rc = main(['repair', sys.argv[1], '-q']); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.bin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_protect_redundancy_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _blob(tmp_path / "f.bin", 1000 * LEAF)
    code, out = _run("protect", str(tmp_path / "f.bin"), "--leaf-size", str(LEAF), "--json", capsys=capsys)
    assert code == 0 and out["redundancy"] == 5 and out["parity"]["m"] == 3 and out["parity"]["k"] == 59
    code, out = _run("protect", str(tmp_path / "f.bin"), "--redundancy", "0", "--json", capsys=capsys)
    assert code == 0 and out["parity"] is None
    assert parity_section_of(read_sidecar(str(tmp_path / "f.bin.fastckpt")).manifest) is None
    assert main(["protect", str(tmp_path / "f.bin"), "--redundancy", "0.1"]) == 2
    assert "redundancy" in capsys.readouterr().err


def test_symlink_target_is_repaired(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    data = _blob(tmp_path / "store" / "f.bin", 20 * LEAF)
    os.symlink(tmp_path / "store" / "f.bin", tmp_path / "link.bin")
    _protect(tmp_path / "link.bin", leaf_size=LEAF)
    with open(tmp_path / "store" / "f.bin", "r+b") as f:
        f.write(b"!")
    assert main(["repair", str(tmp_path / "link.bin"), "-q"]) == 0
    assert os.path.islink(tmp_path / "link.bin")
    assert (tmp_path / "store" / "f.bin").read_bytes() == data
    assert (tmp_path / "store" / "f.bin.damaged").exists()


# ---------------------------------------------------------------------------------------------
# Reflink clones: trusted through the original's identity, patched leaves still read back
# ---------------------------------------------------------------------------------------------


def _emulated_clone(tamper: bool = False):  # type: ignore[no-untyped-def]
    """Stands in for FICLONE on filesystems without reflinks: the same bytes, made by a copy."""

    def clone(src_fd: int, dst_fd: int) -> bool:
        size = os.fstat(src_fd).st_size
        if size:
            os.pwrite(dst_fd, os.pread(src_fd, size, 0), 0)
        if tamper:  # another process writes to the original after it was hashed
            with open(os.readlink(f"/proc/self/fd/{src_fd}"), "r+b") as other:
                other.write(b"X")
        return True

    return clone


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_clone_is_used_and_repair_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    import fastckpt.repair as rp

    data = _blob(tmp_path / "f.bin", 40 * LEAF + 123)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    if damage == "flip":
        with open(tmp_path / "f.bin", "r+b") as f:
            f.seek(11 * LEAF + 7)
            f.write(b"\x00\x01")
    elif damage == "truncate":
        os.truncate(tmp_path / "f.bin", 39 * LEAF + 5)
    else:
        with open(tmp_path / "f.bin", "ab") as f:
            f.write(b"garbage" * 100)
    damaged = (tmp_path / "f.bin").read_bytes()
    reads: list[int] = []
    native = rp._native
    real = native.leaf_digests

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

    spy = Spy()
    spy.leaf_digests = lambda view, *a: (reads.append(len(view)), real(view, *a))[1]  # type: ignore[attr-defined]
    monkeypatch.setattr(rp, "_clone", _emulated_clone())
    monkeypatch.setattr(rp, "_native", spy)
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["repaired"] and out["copy"] == "clone"
    assert (tmp_path / "f.bin").read_bytes() == data
    assert (tmp_path / "f.bin.damaged").read_bytes() == damaged
    # The clone's unchanged leaves are not read back (only the patched leaves are, by xxh3_64).
    assert sum(reads) < len(data) + len(damaged) + 8 * LEAF
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.startswith(".")]


def test_clone_of_a_file_changed_after_hashing_replaces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fastckpt.repair as rp

    _blob(tmp_path / "f.bin", 30 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(3 * LEAF)
        f.write(b"rot")
    monkeypatch.setattr(rp, "_clone", _emulated_clone(tamper=True))
    code = main(["repair", str(tmp_path / "f.bin"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "changed while it was being repaired" in err and "Traceback" not in err
    after = _files(tmp_path)
    # Only the other writer's byte changed: no backup, no temporary file, the sidecar as it was.
    assert sorted(after) == ["f.bin", "f.bin.fastckpt"]
    assert after["f.bin"][:1] == b"X" and after["f.bin"][3 * LEAF : 3 * LEAF + 3] == b"rot"


def test_copy_is_reported_where_there_are_no_reflinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fastckpt.repair as rp

    data = _blob(tmp_path / "f.bin", 20 * LEAF)
    _protect(tmp_path / "f.bin", leaf_size=LEAF)
    with open(tmp_path / "f.bin", "r+b") as f:
        f.seek(2 * LEAF)
        f.write(b"rot")
    with open(tmp_path / "probe", "wb") as a, open(tmp_path / "probe2", "wb") as b:
        a.write(b"x")
        a.flush()
        reflinks = rp._clone(a.fileno(), b.fileno())
    os.unlink(tmp_path / "probe")
    os.unlink(tmp_path / "probe2")
    code, out = _run("repair", str(tmp_path / "f.bin"), "--json", capsys=capsys)
    assert code == 0 and out["copy"] == ("clone" if reflinks else "copy")
    assert (tmp_path / "f.bin").read_bytes() == data


@pytest.mark.skipif(
    not os.environ.get("FASTCKPT_TEST_REFLINK_DIR"),
    reason="set FASTCKPT_TEST_REFLINK_DIR to a folder on XFS/btrfs to test real FICLONE clones",
)
def test_real_reflink_filesystem(capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path(tempfile.mkdtemp(dir=os.environ["FASTCKPT_TEST_REFLINK_DIR"]))
    try:
        data = _blob(folder / "f.bin", 64 * LEAF + 1)
        _protect(folder / "f.bin", leaf_size=LEAF)
        with open(folder / "f.bin", "r+b") as f:
            f.seek(17 * LEAF + 100)
            f.write(b"\xde\xad")
        code, out = _run("repair", str(folder / "f.bin"), "--json", capsys=capsys)
        assert code == 0 and out["copy"] == "clone" and out["rebuilt_from_parity"] == 1
        assert (folder / "f.bin").read_bytes() == data
    finally:
        shutil.rmtree(folder)
