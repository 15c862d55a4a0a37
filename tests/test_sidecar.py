"""Sidecar manifest format v1 (docs/FORMAT.md section 2): layout, redundancy and damage handling.

The layout checks parse the bytes with `struct` straight from the spec, independently of
fastckpt.sidecar's reader.
"""

from __future__ import annotations

import os
import struct

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastckpt import hash_bytes
from fastckpt import sidecar as sc
from fastckpt.errors import InputError


def sample_manifest(size: int = 300_000, seed: int = 0) -> tuple[bytes, sc.FileManifest]:
    data = os.urandom(size) if seed < 0 else bytes((i * 7 + seed) % 251 for i in range(size))
    d = hash_bytes(data)
    m = sc.FileManifest(
        file_size=size,
        leaf_size=d.leaf_size,
        file_digest=d.value,
        leaf_bytes=d.leaf_bytes,
        format="torch-zip",
        name="model.pt",
        unsafe=["os.system"],
        tensors=[
            sc.TensorEntry(
                "a.weight", "float32", (2, 3), 100, 24, 4, "archive/data/0", 0x0123456789ABCDEF << 64 | 5
            ),
            sc.TensorEntry("a.view", "bfloat16", (4,), 124, 10, 2, None, 7, sc.TENSOR_RAW_RANGE),
        ],
        segments=[
            sc.SegmentEntry(0, 100, "zip-local-header", "archive/data/0"),
            sc.SegmentEntry(100, size - 100, "tensor-data", "archive/data/0"),
        ],
    )
    return data, m


def write(tmp_path, blob: bytes, name: str = "x.fastckpt") -> str:
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(blob)
    return p


def parse_by_spec(blob: bytes) -> dict:
    """An independent reader following FORMAT.md section 2 literally."""
    magic, ver, kind, hsize, a_off, a_len, b_off, b_len, bulk_len = struct.unpack_from("<8sHHIQQQQQ", blob, 0)
    assert (magic, ver, hsize) == (b"FCKPT-SC", 1, 64)
    assert struct.unpack_from("<Q", blob, 56)[0] == xxhash.xxh3_64_intdigest(blob[:56])
    trailer = blob[-64:]
    assert trailer[:8] == b"FCKPT-TR"
    assert trailer[8:56] == blob[8:56]
    assert struct.unpack_from("<Q", trailer, 56)[0] == xxhash.xxh3_64_intdigest(trailer[:56])
    copies = []
    for index, (off, n) in enumerate(((a_off, a_len), (b_off, b_len))):
        c = blob[off : off + n]
        cmagic, cver, ckind, cidx, r0, count, r1, body_len = struct.unpack_from("<8sHHHHIIQ", c, 0)
        assert (cmagic, cver, ckind, cidx, r0, r1) == (b"FCKPT-MF", 1, kind, index, 0, 0)
        assert n == 32 + body_len + 16
        assert int.from_bytes(c[32 + body_len :], "little") == xxhash.xxh3_128_intdigest(c[: 32 + body_len])
        sections = []
        pos = 32
        for _ in range(count):
            t, flags, length = struct.unpack_from("<IIQ", c, pos)
            sections.append((t, flags, c[pos + 16 : pos + 16 + length]))
            pos += 16 + (length + 7) // 8 * 8
        assert pos == 32 + body_len
        copies.append(sections)
    return {"kind": kind, "a": (a_off, a_len), "b": (b_off, b_len), "bulk": bulk_len, "copies": copies}


def test_layout_follows_the_spec(tmp_path) -> None:
    data, m = sample_manifest()
    blob = sc.encode_sidecar(m)
    spec = parse_by_spec(blob)
    assert spec["kind"] == 1 and spec["a"][0] == 64 and spec["bulk"] == 0
    a_end = spec["a"][0] + spec["a"][1]
    b_off = spec["b"][0]
    assert b_off % 4096 == 0 and b_off >= a_end + 4096  # never in the same 4 KiB block, >= 4 KiB apart
    assert len(blob) == b_off + spec["b"][1] + 64
    assert spec["copies"][0] == spec["copies"][1]
    sections = spec["copies"][0]
    assert [(t, f) for t, f, _ in sections] == [(1, 1), (2, 1), (3, 0), (4, 0)]
    info = sections[0][2]
    assert struct.unpack_from("<Q", info, 0)[0] == len(data)
    leaves = sections[1][2]
    leaf_size, count = struct.unpack_from("<QQ", leaves, 0)
    assert (leaf_size, count) == (65536, -(-len(data) // 65536))
    assert int.from_bytes(leaves[16:32], "little") == hash_bytes(data).value
    assert [int.from_bytes(leaves[32 + 8 * i : 40 + 8 * i], "little") for i in range(count)] == [
        xxhash.xxh3_64_intdigest(data[i * 65536 : (i + 1) * 65536]) for i in range(count)
    ]


def test_round_trip(tmp_path) -> None:
    _, m = sample_manifest()
    p = write(tmp_path, sc.encode_sidecar(m))
    r = sc.read_sidecar(p)
    assert not r.damaged and r.used_copy == "A" and r.problems() == []
    got = r.manifest
    assert isinstance(got, sc.FileManifest)
    assert (got.file_size, got.leaf_size, got.file_digest, got.leaf_bytes) == (
        m.file_size,
        m.leaf_size,
        m.file_digest,
        m.leaf_bytes,
    )
    assert (got.format, got.name, got.unsafe) == ("torch-zip", "model.pt", ["os.system"])
    assert got.tensor_entries() == m.tensors
    assert got.segment_entries() == m.segments


def test_directory_manifest_round_trip(tmp_path) -> None:
    m = sc.DirManifest(
        "dcp", 65536, [sc.DirEntry(".metadata", 10, 1), sc.DirEntry("sub/__0_0.distcp", 99, 2**127)]
    )
    p = write(tmp_path, sc.encode_sidecar(m))
    r = sc.read_sidecar(p, expect_kind=sc.KIND_DIRECTORY)
    assert r.manifest == m
    with pytest.raises(InputError, match="expected a file sidecar"):
        sc.read_sidecar(p, expect_kind=sc.KIND_FILE)


def test_empty_file_manifest(tmp_path) -> None:
    d = hash_bytes(b"")
    m = sc.FileManifest(0, 65536, d.value, b"")
    r = sc.read_sidecar(write(tmp_path, sc.encode_sidecar(m)))
    assert r.manifest.file_size == 0 and r.manifest.leaf_count == 0


@pytest.mark.parametrize("where", ["copy A", "copy B", "header", "trailer", "header+trailer", "A+trailer"])
def test_one_copy_survives(tmp_path, where: str) -> None:
    _, m = sample_manifest()
    blob = bytearray(sc.encode_sidecar(m))
    spec = parse_by_spec(bytes(blob))
    a_mid = spec["a"][0] + spec["a"][1] // 2
    b_mid = spec["b"][0] + spec["b"][1] // 2
    targets = {
        "copy A": [a_mid],
        "copy B": [b_mid],
        "header": [20],
        "trailer": [len(blob) - 30],
        "header+trailer": [20, len(blob) - 30],
        "A+trailer": [a_mid, len(blob) - 30],
    }[where]
    for off in targets:
        blob[off] ^= 0x40
    r = sc.read_sidecar(write(tmp_path, bytes(blob)))
    assert r.damaged
    assert r.used_copy == ("B" if "A" in where else "A")
    assert r.manifest.leaf_bytes == m.leaf_bytes
    assert r.manifest.tensor_entries() == m.tensors


def test_both_copies_damaged_message(tmp_path) -> None:
    _, m = sample_manifest()
    blob = bytearray(sc.encode_sidecar(m))
    spec = parse_by_spec(bytes(blob))
    blob[spec["a"][0] + 200] ^= 1
    blob[spec["b"][0] + 200] ^= 1
    p = write(tmp_path, bytes(blob))
    a_ck = spec["a"][0] + spec["a"][1] - 16
    b_ck = spec["b"][0] + spec["b"][1] - 16
    with pytest.raises(InputError) as e:
        sc.read_sidecar(p)
    assert str(e.value) == (
        f"{p} at offset 64: expected an intact manifest copy, but both copies are damaged "
        f"(copy A at offset {a_ck}: expected the copy's XXH3-128 checksum to match its contents; "
        f"copy B at offset {b_ck}: expected the copy's XXH3-128 checksum to match its contents); "
        "run 'fastckpt protect' again on a known-good copy of the checkpoint"
    )


def test_not_a_sidecar(tmp_path) -> None:
    p = write(tmp_path, b"hello world" * 10)
    with pytest.raises(InputError) as e:
        sc.read_sidecar(p)
    assert (
        str(e.value)
        == f"{p} at offset 0: expected a fastckpt sidecar starting with FCKPT-SC (this is not one)"
    )
    p = write(tmp_path, b"", "empty.fastckpt")
    with pytest.raises(InputError) as e:
        sc.read_sidecar(p)
    assert str(e.value) == f"{p} at offset 0: expected a fastckpt sidecar, found an empty file"


def _rewrite_copies(blob: bytes, mutate) -> bytes:  # type: ignore[no-untyped-def]
    """Applies `mutate(copy_bytes) -> copy_bytes` to both copies and fixes their checksums."""
    spec = parse_by_spec(blob)
    out = bytearray(blob)
    for off, n in (spec["a"], spec["b"]):
        c = bytearray(mutate(bytes(out[off : off + n - 16])))
        assert len(c) == n - 16
        out[off : off + n] = bytes(c) + xxhash.xxh3_128_intdigest(bytes(c)).to_bytes(16, "little")
    return bytes(out)


def test_newer_version_is_refused(tmp_path) -> None:
    _, m = sample_manifest()
    blob = _rewrite_copies(sc.encode_sidecar(m), lambda c: c[:8] + struct.pack("<H", 2) + c[10:])
    p = write(tmp_path, blob)
    with pytest.raises(InputError) as e:
        sc.read_sidecar(p)
    assert str(e.value) == f"{p} at offset 72: expected sidecar format version 1, found 2: upgrade fastckpt"


def test_unknown_optional_section_is_kept_and_required_one_refused(tmp_path) -> None:
    _, m = sample_manifest()
    m.extra.append(sc.Section(sc.SEC_PARITY, 0, b"future parity descriptor"))
    m.extra.append(sc.Section(0x1234, 0, b"x"))
    r = sc.read_sidecar(write(tmp_path, sc.encode_sidecar(m)))
    assert r.manifest.extra == m.extra and not r.damaged
    m.extra.append(sc.Section(0x4242, sc.FLAG_REQUIRED, b"must understand"))
    p = write(tmp_path, sc.encode_sidecar(m), "req.fastckpt")
    with pytest.raises(InputError, match="section type 16962 is required: upgrade fastckpt"):
        sc.read_sidecar(p)


def test_bulk_area_between_copies(tmp_path) -> None:
    _, m = sample_manifest()
    bulk = bytes(range(256)) * 40
    blob = sc.encode_sidecar(m, bulk=bulk)
    spec = parse_by_spec(blob)
    start = sc.bulk_offset(spec["a"][1])
    assert start % 4096 == 0 and start >= spec["a"][0] + spec["a"][1]
    assert blob[start : start + len(bulk)] == bulk
    assert spec["b"][0] >= start + len(bulk) and spec["bulk"] == len(bulk)
    r = sc.read_sidecar(write(tmp_path, blob))
    assert r.bulk_offset == start and r.bulk_length == len(bulk)


def test_copy_b_found_by_scanning_when_both_locators_are_gone(tmp_path) -> None:
    _, m = sample_manifest()
    blob = bytearray(sc.encode_sidecar(m))
    spec = parse_by_spec(bytes(blob))
    blob[0:64] = bytes(64)
    blob[-64:] = bytes(64)
    blob[spec["a"][0] + 100] ^= 1
    r = sc.read_sidecar(write(tmp_path, bytes(blob)))
    assert r.used_copy == "B" and r.manifest.leaf_bytes == m.leaf_bytes


_, _BURST_MANIFEST = sample_manifest(200_000, 3)
_BURST_BLOB = sc.encode_sidecar(_BURST_MANIFEST)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(_BURST_BLOB) - 1), st.integers(1, 4096), st.integers(0, 255))
def test_any_single_burst_of_up_to_4k_is_survived(tmp_path, start: int, length: int, fill: int) -> None:
    blob = bytearray(_BURST_BLOB)
    end = min(start + length, len(blob))
    blob[start:end] = bytes([fill]) * (end - start)
    r = sc.read_sidecar(write(tmp_path, bytes(blob)))
    assert r.manifest.leaf_bytes == _BURST_MANIFEST.leaf_bytes
    assert r.manifest.tensor_entries() == _BURST_MANIFEST.tensors


def test_truncated_sidecar_still_has_copy_a(tmp_path) -> None:
    _, m = sample_manifest()
    blob = sc.encode_sidecar(m)
    spec = parse_by_spec(blob)
    r = sc.read_sidecar(write(tmp_path, blob[: spec["b"][0] + 10]))
    assert r.used_copy == "A" and r.damaged


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path) -> None:
    p = str(tmp_path / "f.fastckpt")
    sc.atomic_write(p, b"old")
    sc.atomic_write(p, b"new contents")
    with open(p, "rb") as f:
        assert f.read() == b"new contents"
    assert sorted(os.listdir(tmp_path)) == ["f.fastckpt"]


def test_string_too_long_is_refused() -> None:
    _, m = sample_manifest()
    m.name = "x" * 70000
    with pytest.raises(ValueError, match="does not fit a sidecar string"):
        sc.encode_sidecar(m)


def test_directory_paths_must_stay_inside(tmp_path) -> None:
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a"):
        m = sc.DirManifest("dir", 65536, [sc.DirEntry(bad, 1, 0)])
        p = write(tmp_path, sc.encode_sidecar(m), "d.fastckpt")
        with pytest.raises(InputError, match="expected a relative '/'-separated path"):
            sc.read_sidecar(p)


def _format_md_section() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "docs", "FORMAT.md"), encoding="utf-8") as f:
        text = f.read()
    return text[text.index("### 2.5 Worked example") : text.index("### 2.6")]


def test_format_md_example() -> None:
    data = bytes(i % 251 for i in range(100))
    d = hash_bytes(data, leaf_size=64)
    m = sc.FileManifest(100, 64, d.value, d.leaf_bytes, "opaque", "example.bin", [],
                        segments=[sc.SegmentEntry(0, 100, "other", None)])  # fmt: skip
    blob = sc.encode_sidecar(m)
    doc = _format_md_section()
    blocks = doc.split("```")
    dump, trailer = blocks[1], blocks[3]
    copy_a = b""
    for line in dump.strip().splitlines():
        fields = line.split()
        offset = int(fields[0])
        assert offset == 64 + len(copy_a)
        hexbytes = [f for f in fields[1:17] if len(f) == 2 and all(c in "0123456789abcdef" for c in f)]
        copy_a += bytes.fromhex("".join(hexbytes))
    a_len = struct.unpack_from("<Q", blob, 24)[0]
    assert copy_a == blob[64 : 64 + a_len]
    assert bytes.fromhex("".join(trailer.split())) == blob[-64:]
    assert f"The sidecar is {len(blob)} bytes" in doc
    assert f"its file digest is `{d.hex()}`" in doc
    assert all(f"`{leaf:016x}`" in doc for leaf in d.leaves)
