"""Bad input for the readers and `inspect`: every case checks the exact problem text, and no
reader may raise anything but InputError, run code from a pickle, or read past the file."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fastckpt.errors import InputError
from fastckpt.formats import Problem, read_dir_layout, read_layout
from formats_helpers import write_dcp, write_hf_sharded

torch = pytest.importorskip("torch")


def inspect_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastckpt", "inspect", *args], capture_output=True, text=True, timeout=120
    )


def problems(path: str) -> list[tuple[int | None, str, str]]:
    return [(p.offset, p.kind, p.message) for p in read_layout(path).problems]


# ---- empty and unreadable ------------------------------------------------------------------------
def test_zero_byte_files(tmp_path: Path) -> None:
    for name, fmt, msg in (
        ("model.pt", "torch-zip", "empty file: expected a zip archive"),
        (
            "model.safetensors",
            "safetensors",
            "file is 0 bytes, shorter than the 8-byte safetensors header length",
        ),
        ("blob.dat", "opaque", "file is empty (0 bytes)"),
    ):
        p = tmp_path / name
        p.write_bytes(b"")
        layout = read_layout(str(p))
        assert layout.format == fmt
        assert layout.problems == [Problem(0, msg, "truncated")]
        assert layout.segments == []
        r = inspect_cli(str(p))
        assert r.returncode == 1
        assert f"truncated: offset 0: {msg}" in r.stdout


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_layout(str(tmp_path / "nope.pt"))
    assert str(e.value) == f"{tmp_path / 'nope.pt'}: no such file"
    with pytest.raises(InputError) as e:
        read_layout(str(tmp_path))
    assert (
        str(e.value)
        == f"{tmp_path}: expected a checkpoint file, found a directory (read it with read_dir_layout)"
    )
    r = inspect_cli(str(tmp_path / "nope.pt"))
    assert r.returncode == 2
    assert r.stderr == f"fastckpt: error: {tmp_path / 'nope.pt'}: no such file\n"
    assert "Traceback" not in r.stderr


# ---- truncated torch zip -------------------------------------------------------------------------
def _record_data_offset(data: bytes, info: zipfile.ZipInfo) -> int:
    n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + n + e


@pytest.fixture
def small_ckpt(tmp_path: Path) -> tuple[Path, bytes]:
    p = tmp_path / "ck.pt"
    torch.save({"a": torch.arange(100.0), "b": torch.ones(3)}, p)
    return p, p.read_bytes()


def test_truncated_inside_a_tensor_record(tmp_path: Path, small_ckpt: tuple[Path, bytes]) -> None:
    _, data = small_ckpt
    with zipfile.ZipFile(small_ckpt[0]) as zf:
        info = zf.getinfo("ck/data/0")
    start = _record_data_offset(data, info)
    cut = start + 10
    p = tmp_path / "cut.pt"
    p.write_bytes(data[:cut])
    layout = read_layout(str(p))
    assert layout.format == "torch-zip"
    assert layout.expected_size == start + 400
    assert [(q.offset, q.kind, q.message) for q in layout.problems] == [
        (cut, "truncated", f"failed finding central directory: no end of central directory record in the last {cut} bytes; the file is truncated or not a zip archive"),
        (cut, "truncated", f"the file ends inside record 'ck/data/0': its data needs bytes up to offset {start + 400}, the file has {cut}"),
        (cut, "truncated", "1 tensor(s) are stored after the end of the file, e.g. 'b'"),
    ]  # fmt: skip
    # the tensor that survives in part is still located, at the same place as in the intact file
    (a,) = layout.tensors
    assert (a.key, a.offset, a.nbytes) == ("a", start, 400)
    r = inspect_cli("--json", str(p))
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["ok"] is False and d["expected_size"] == start + 400 and d["size"] == cut


def test_zip_without_central_directory(tmp_path: Path, small_ckpt: tuple[Path, bytes]) -> None:
    _, data = small_ckpt
    with zipfile.ZipFile(small_ckpt[0]) as zf:
        cd = zf.start_dir
        n_records = len(zf.infolist())
    p = tmp_path / "nocd.pt"
    p.write_bytes(data[:cd])
    assert problems(str(p)) == [
        (cd, "truncated", f"failed finding central directory: no end of central directory record in the last {cd} bytes; the file is truncated or not a zip archive"),
        (cd, "truncated", f"the file ends after {n_records} complete records, before the central directory"),
    ]  # fmt: skip
    assert {t.key for t in read_layout(str(p)).tensors} == {"a", "b"}
    p.write_bytes(data[: cd + 10])
    assert problems(str(p))[1] == (cd + 10, "truncated", "the file ends inside the central directory")


def test_zip_tail_damage(tmp_path: Path, small_ckpt: tuple[Path, bytes]) -> None:
    _, data = small_ckpt
    with zipfile.ZipFile(small_ckpt[0]) as zf:
        cd = zf.start_dir
    # a central directory offset that points nowhere
    eocd = data.rfind(b"PK\x05\x06")
    bad = bytearray(data)
    bad[cd : cd + 4] = b"XXXX"
    p = tmp_path / "badcd.pt"
    p.write_bytes(bytes(bad))
    assert (
        cd,
        "bad-header",
        f"central directory ends after 0 of its {eocd - 76 - cd} bytes (expected another entry signature)",
    ) in problems(str(p))
    # bytes appended after the archive
    p.write_bytes(data + b"junk")
    assert problems(str(p)) == [
        (len(data), "bad-header", "4 unexpected bytes after the end of central directory record")
    ]


def test_local_header_disagrees_with_central_directory(
    tmp_path: Path, small_ckpt: tuple[Path, bytes]
) -> None:
    _, data = small_ckpt
    with zipfile.ZipFile(small_ckpt[0]) as zf:
        info = zf.getinfo("ck/data/1")
    bad = bytearray(data)
    name_at = info.header_offset + 30
    bad[name_at : name_at + len("ck/data/1")] = b"ck/data/X"
    p = tmp_path / "lh.pt"
    p.write_bytes(bytes(bad))
    assert (
        info.header_offset,
        "bad-header",
        "record 'ck/data/1': local header names 'ck/data/X'",
    ) in problems(str(p))


# ---- safetensors ---------------------------------------------------------------------------------
def st_bytes(header: object, buffer_len: int, *, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + bytes(buffer_len)


def st_problems(tmp_path: Path, data: bytes) -> list[tuple[int | None, str, str]]:
    p = tmp_path / "x.safetensors"
    p.write_bytes(data)
    return problems(str(p))


def F32(begin: int, end: int, n: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, end]}


def test_safetensors_header_length_past_end(tmp_path: Path) -> None:
    data = struct.pack("<Q", 1000) + b'{"a": 1}' + bytes(12)
    p = tmp_path / "x.safetensors"
    p.write_bytes(data)
    layout = read_layout(str(p))
    assert layout.format == "safetensors"
    assert layout.problems == [
        Problem(
            0,
            "header length 1000 runs past the end of the file: only 20 bytes follow the 8-byte length",
            "truncated",
        )
    ]
    assert layout.expected_size == 1008
    r = inspect_cli(str(p))
    assert r.returncode == 1 and "header length 1000 runs past the end of the file" in r.stdout


def test_safetensors_overlap_gap_range(tmp_path: Path) -> None:
    h = {"a": F32(0, 8, 2), "b": F32(4, 12, 2)}
    n = len(json.dumps(h))
    assert st_problems(tmp_path, st_bytes(h, 12)) == [
        (8 + n + 4, "bad-header", "tensor 'b' at buffer offsets [4, 12) overlaps tensor 'a', which ends at 8")
    ]
    h = {"a": F32(0, 4, 1), "b": F32(8, 12, 1)}
    n = len(json.dumps(h))
    assert st_problems(tmp_path, st_bytes(h, 12)) == [
        (
            8 + n + 4,
            "bad-header",
            "gap of 4 bytes in the byte buffer before tensor 'b' (buffer offsets [4, 8) belong to no tensor)",
        )
    ]
    h = {"a": F32(0, 8, 2)}
    n = len(json.dumps(h))
    assert st_problems(tmp_path, st_bytes(h, 4)) == [
        (8 + n, "truncated", "tensor 'a': data_offsets [0, 8] run past the end of the byte buffer (4 bytes)")
    ]
    h = {"a": F32(0, 4, 1), "b": F32(100, 104, 1)}
    n = len(json.dumps(h))
    got = st_problems(tmp_path, st_bytes(h, 4))
    assert (
        8 + n + 4,
        "bad-header",
        "tensor 'b': data_offsets [100, 104] run past the end of the byte buffer (4 bytes)",
    ) in got
    h = {"a": F32(0, 4, 1)}
    n = len(json.dumps(h))
    assert st_problems(tmp_path, st_bytes(h, 10)) == [
        (
            8 + n + 4,
            "bad-header",
            "6 bytes after the last tensor are not covered by any tensor (the buffer must be covered exactly)",
        )
    ]


def test_safetensors_header_content(tmp_path: Path) -> None:
    assert st_problems(tmp_path, st_bytes({"a": F32(0, 8, 3)}, 8)) == [
        (8 + 1, "size-mismatch", "tensor 'a': data_offsets [0, 8] hold 8 bytes, but F32 [3] needs 12")
    ]
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    assert st_problems(tmp_path, st_bytes(None, 4, raw_header=raw)) == [
        (8 + raw.rindex(b'"a"'), "bad-header", "header has the key 'a' twice")
    ]
    assert st_problems(tmp_path, st_bytes(None, 0, raw_header=b'{"a": [1,}')) == [
        (8 + 9, "bad-header", "header is not valid JSON: Expecting value")
    ]
    assert st_problems(tmp_path, st_bytes(None, 0, raw_header=b'{"\xff": 1}')) == [
        (10, "bad-header", "header is not valid UTF-8 (byte 0xff)")
    ]
    assert st_problems(tmp_path, st_bytes({"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, 4))[
        0
    ][1:] == ("bad-header", "tensor 'a': unknown dtype 'F33'")
    assert st_problems(tmp_path, st_bytes({"__metadata__": {"k": 1}}, 0)) == [
        (8, "bad-header", "__metadata__ must be an object of string to string")
    ]
    assert st_problems(tmp_path, st_bytes({"a": F32(8, 4, 1)}, 8))[0][1:] == (
        "bad-header",
        "tensor 'a': data_offsets [8, 4] end before they begin",
    )
    assert st_problems(tmp_path, st_bytes(None, 0, raw_header=b'{"a": NaN}')) == [
        (8, "bad-header", "header is not valid JSON: NaN is not valid JSON")
    ]


# ---- pickles that would run code -----------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str, how: str) -> None:
        self.marker = marker
        self.how = how

    def __reduce__(self) -> tuple[object, tuple[str]]:
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize(
    "how,glob", [("system", f"{os.system.__module__}.system"), ("eval", "builtins.eval")]
)
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_reported_not_run(tmp_path: Path, how: str, glob: str, legacy: bool) -> None:
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pt"
    torch.save(
        {"w": torch.ones(2), "payload": _Evil(str(marker), how)}, p, _use_new_zipfile_serialization=not legacy
    )
    layout = read_layout(str(p))
    assert layout.unsafe_globals == [glob]
    (q,) = [q for q in layout.problems if q.kind == "unsafe-pickle"]
    what = "pickle" if legacy else "data.pkl"
    assert q.message == (
        f"{what} imports {glob}, which is not on the allowlist of checkpoint globals; "
        "torch.load(weights_only=False) would import and call it (it was not executed)"
    )
    assert [t.key for t in layout.tensors] == ["w"]  # the rest of the checkpoint is still mapped
    arg = repr(f"touch {marker}" if how == "system" else f"open({str(marker)!r}, 'w').close()")
    assert layout.non_tensor_entries["payload"] == f"<{glob}({arg[:37]}...)>"  # the call, shown, not made
    r = inspect_cli(str(p))
    assert r.returncode == 1
    assert f"UNSAFE: the pickle names globals outside the allowlist (not executed):\n  {glob}\n" in r.stdout
    d = json.loads(inspect_cli("--json", str(p)).stdout)
    assert d["unsafe_globals"] == [glob] and d["ok"] is False
    assert not marker.exists()


def test_hand_built_reduce_chain(tmp_path: Path) -> None:
    """A data.pkl written by hand: GLOBAL builtins.exec / REDUCE, nested inside a tensor's args."""
    marker = tmp_path / "PWNED"
    payload = (
        b"\x80\x02}q\x00X\x01\x00\x00\x00xcbuiltins\nexec\nq\x01X"
        + struct.pack("<I", len(f"open({str(marker)!r},'w')"))
        + f"open({str(marker)!r},'w')".encode()
        + b"\x85R"  # TUPLE1, REDUCE
        + b"s."  # SETITEM, STOP
    )
    assert pickle.loads.__name__  # the payload is valid pickle; never loaded here
    p = tmp_path / "hand.pt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    layout = read_layout(str(p))
    assert layout.format == "torch-zip"
    assert layout.unsafe_globals == ["builtins.exec"]
    assert layout.problems[0].offset == p.read_bytes().index(b"cbuiltins")
    assert not marker.exists()


# ---- folders ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_missing_short_and_extra_shards(tmp_path: Path) -> None:
    folder = tmp_path / "dcp"
    write_dcp(torch, str(folder))
    (shard,) = sorted(f for f in os.listdir(folder) if f.endswith(".distcp"))
    data = (folder / shard).read_bytes()
    (folder / shard).write_bytes(data[:-100])
    d = read_dir_layout(str(folder))
    (q,) = d.problems
    assert q.kind == "truncated" and q.offset == len(data) - 100
    assert q.message.startswith(
        f"shard {shard!r} is {len(data) - 100} bytes, the metadata needs {len(data)}: 1 item(s) cut off, e.g. "
    )
    shard_layout = read_layout(str(folder / shard))
    assert shard_layout.expected_size == len(data)
    assert any(p.kind == "truncated" for p in shard_layout.problems)
    (folder / "__9_0.distcp").write_bytes(b"x")
    (folder / shard).unlink()
    d = read_dir_layout(str(folder))
    assert d.missing_files == [shard] and d.extra_files == ["__9_0.distcp"]
    assert [(q.kind, q.message) for q in d.problems] == [
        ("missing-file", f"shard {shard!r} is missing (4 item(s), e.g. 'meta.tag')"),
        ("extra-file", "storage file '__9_0.distcp' is not referenced by .metadata"),
    ]
    r = inspect_cli(str(folder))
    assert r.returncode == 1 and f"missing-file: shard {shard!r} is missing" in r.stdout
    # damaged metadata is a problem, not a crash
    meta = folder / ".metadata"
    meta.write_bytes(meta.read_bytes()[:50])
    d = read_dir_layout(str(folder))
    assert d.problems[0].kind == "truncated"
    assert d.problems[0].message == ".metadata: pickle data ends before the STOP opcode"


def test_hf_missing_shard_and_keys(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    write_hf_sharded(torch, str(folder))
    (folder / "model-00002-of-00002.safetensors").unlink()
    d = read_dir_layout(str(folder))
    assert d.missing_files == ["model-00002-of-00002.safetensors"]
    assert [(q.kind, q.message) for q in d.problems] == [
        ("missing-file", "shard 'model-00002-of-00002.safetensors' is missing (1 tensor(s), e.g. 'b.weight')")
    ]
    idx = folder / "model.safetensors.index.json"
    doc = json.loads(idx.read_text())
    doc["weight_map"] = {
        "a.weight": "model-00001-of-00002.safetensors",
        "ghost": "model-00001-of-00002.safetensors",
    }
    idx.write_text(json.dumps(doc))
    d = read_dir_layout(str(folder))
    assert [(q.kind, q.message) for q in d.problems] == [
        (
            "missing-key",
            "shard 'model-00001-of-00002.safetensors' lacks 1 tensor(s) its index lists, e.g. 'ghost'",
        ),
        (
            "extra-key",
            "shard 'model-00001-of-00002.safetensors' holds 1 tensor(s) no index lists, e.g. 'a.bias'",
        ),
    ]
    idx.write_text("{not json")
    assert [(q.kind, q.message) for q in read_dir_layout(str(folder)).problems] == [
        (
            "bad-header",
            "model.safetensors.index.json is not valid JSON: Expecting property name enclosed in double quotes",
        ),
        ("extra-file", "shard-like file 'model-00001-of-00002.safetensors' is not named by any index"),
    ]
