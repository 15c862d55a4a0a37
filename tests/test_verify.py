"""protect + verify end to end: damage location, truncation, sidecar redundancy, directories,
structural checks without a sidecar, exact error lines, and that verify never imports torch.

Expected offsets and element ranges are computed independently of fastckpt: record offsets come
from Python's zipfile, tensor bytes from torch.load, safetensors offsets from its JSON header.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt import sidecar as sc
from fastckpt.protect import protect_dir, protect_file
from fastckpt.verify import damaged_leaves, merge_runs, verify_path

torch = pytest.importorskip("torch")

LEAF = 65536


def save_model(path: str, seed: int = 0, big: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = 700 if big else 300
    sd = {
        "model": {
            "embed.weight": torch.randn(n, 256, generator=g),
            "layers.0.weight": torch.randn(n, 128, generator=g).to(torch.bfloat16),
            "layers.0.bias": torch.randn(n, generator=g),
            "head.weight": torch.randint(0, 100, (n, 64), generator=g, dtype=torch.int64),
        },
        "step": 7,
    }
    torch.save(sd, path)
    return sd


def record_offsets(path: str) -> dict[bytes, tuple[int, int]]:
    """Maps each stored record's bytes to (data offset, size), using only the zipfile module."""
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = struct.unpack_from("<HH", local, 26)
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            out[f.read(info.file_size)] = (start, info.file_size)
    return out


def tensor_offset(path: str, t) -> int:  # type: ignore[no-untyped-def]
    raw = t.contiguous().view(torch.uint8).numpy().tobytes()
    found = record_offsets(path).get(raw)
    assert found is not None, "tensor bytes not found in any zip record"
    return found[0]


def opaque_bytes(n: int) -> bytes:
    """Random bytes that no reader mistakes for a format (a random byte 8 of '{' looks like safetensors)."""
    return bytes(16) + os.urandom(n - 16)


def flip(path: str, offset: int, mask: int = 0x10) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def run_json(cli, *args: str):  # type: ignore[no-untyped-def]
    r = cli(["verify", "--json", *args])
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


# ---------------------------------------------------------------------------------------------


def test_damaged_leaves_and_runs() -> None:
    a = struct.pack("<6Q", 1, 2, 3, 4, 5, 6)
    b = struct.pack("<6Q", 1, 9, 9, 4, 5, 9)
    assert damaged_leaves(a, b) == [1, 2, 5]
    assert damaged_leaves(a[:32], b) == [1, 2, 4, 5]
    assert merge_runs([1, 2, 5], 100, 550) == [(100, 200), (500, 50)]
    big = bytes(8 * 10000)
    other = bytearray(big)
    other[8 * 9999] = 1
    other[8 * 4096] = 1
    assert damaged_leaves(big, bytes(other)) == [4096, 9999]


def test_intact_json_contract(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    r = cli(["protect", p])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(
        f"protected {p} -> {p}.fastckpt (torch-zip, {os.path.getsize(p)} bytes, 4 tensors"
    )
    r, out = run_json(cli, p)
    assert r.returncode == 0, r.stderr
    assert out["ok"] is True and out["manifest"] is True and out["path"] == p
    assert out["size"] == out["expected_size"] == os.path.getsize(p)
    assert out["truncated"] is False and out["sidecar_damaged"] is False
    assert out["unsafe"] == [] and out["damaged"] == []
    assert out["leaves_checked"] == -(-os.path.getsize(p) // LEAF)
    r = cli(["verify", p])
    assert r.returncode == 0 and r.stdout.startswith(f"{p}: OK (")
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


def test_tensor_digests_match_hash_tensor(tmp_path) -> None:
    from fastckpt import hash_tensor

    p = str(tmp_path / "m.pt")
    sd = save_model(p)
    protect_file(p)
    m = sc.read_sidecar(p + ".fastckpt").manifest
    entries = {t.key: t for t in m.tensor_entries()}
    assert set(entries) == {f"model.{k}" for k in sd["model"]}
    for k, t in sd["model"].items():
        e = entries[f"model.{k}"]
        assert e.digest == hash_tensor(t).value
        assert e.offset == tensor_offset(p, t) and e.nbytes == t.numel() * t.element_size()
        assert (e.dtype, e.shape, e.itemsize) == (
            str(t.dtype).removeprefix("torch."),
            tuple(t.shape),
            t.element_size(),
        )


@pytest.mark.parametrize(
    "key,element", [("embed.weight", 12345), ("layers.0.weight", 40000), ("head.weight", 0)]
)
def test_damage_is_located(tmp_path, cli, key: str, element: int) -> None:
    p = str(tmp_path / "m.pt")
    sd = save_model(p, big=True)
    t = sd["model"][key]
    assert cli(["protect", p]).returncode == 0
    offsets = {k: tensor_offset(p, other) for k, other in sd["model"].items()}
    bad = offsets[key] + element * t.element_size() + 1
    flip(p, bad)
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["ok"] is False
    assert len(out["damaged"]) == 1
    region = out["damaged"][0]
    lo = bad // LEAF * LEAF
    hi = min(lo + LEAF, os.path.getsize(p))
    assert (region["offset"], region["length"]) == (lo, hi - lo)
    # Every tensor whose bytes overlap the leaf, with the overlapping element range.
    expected = []
    for k, other in sd["model"].items():
        off = offsets[k]
        end = off + other.numel() * other.element_size()
        if off < hi and end > lo:
            size = other.element_size()
            expected.append(
                {
                    "tensor": f"model.{k}",
                    "start": (max(lo, off) - off) // size,
                    "stop": -(-(min(hi, end) - off) // size),
                }
            )
    assert sorted(region["elements"], key=lambda e: e["tensor"]) == sorted(
        expected, key=lambda e: e["tensor"]
    )
    assert f"model.{key}" in region["tensors"]
    hit = next(e for e in region["elements"] if e["tensor"] == f"model.{key}")
    assert hit["start"] <= element < hit["stop"]
    assert any(s["kind"] == "tensor-data" for s in region["segments"])
    text = cli(["verify", p])
    assert f"damaged bytes [{lo}, {hi}) ({hi - lo} bytes): elements " in text.stdout
    assert f"model.{key}[{hit['start']}:{hit['stop']}]" in text.stdout


def test_two_regions_are_merged_separately(tmp_path) -> None:
    p = str(tmp_path / "blob.bin")
    with open(p, "wb") as f:
        f.write(opaque_bytes(10 * LEAF + 5))
    protect_file(p)
    for off in (LEAF + 3, 2 * LEAF + 9, 7 * LEAF, 10 * LEAF + 4):
        flip(p, off)
    out = verify_path(p)
    assert [(d["offset"], d["length"]) for d in out["damaged"]] == [
        (LEAF, 2 * LEAF),
        (7 * LEAF, LEAF),
        (10 * LEAF, 5),
    ]


def test_truncated_and_appended(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 1000)
    r, out = run_json(cli, p)
    assert r.returncode == 1
    assert out["truncated"] is True and out["size"] == size - 1000 and out["expected_size"] == size
    assert out["problems"][0] == {
        "offset": size - 1000,
        "kind": "truncated",
        "message": f"file is {size - 1000} bytes, expected {size}: truncated, the last 1000 bytes are missing",
    }
    last = out["damaged"][-1]
    assert last["offset"] + last["length"] == size
    with open(p, "r+b") as f:
        f.truncate(0)
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["truncated"] and out["size"] == 0
    assert out["damaged"] == [dict(out["damaged"][0], offset=0, length=size)]
    # Appended bytes: a restored file plus garbage.
    save_model(p)
    with open(p, "ab") as f:
        f.write(b"junk")
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["truncated"] is False
    assert out["problems"][0]["kind"] == "size-mismatch"
    assert (
        out["problems"][0]["message"] == f"file is {size + 4} bytes, expected {size}: 4 bytes were appended"
    )


def test_one_sidecar_copy_damaged_still_verifies(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    s = p + ".fastckpt"
    flip(s, 200)  # inside copy A
    r, out = run_json(cli, p)
    assert r.returncode == 0 and out["ok"] is True and out["sidecar_damaged"] is True
    assert r.stderr.startswith(f"fastckpt: warning: {s}: sidecar is damaged (copy A: at offset ")
    assert r.stderr.rstrip().endswith("used copy B")
    flip(p, 5000)  # damage in the checkpoint is still found
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["damaged"][0]["offset"] == 0


def test_both_sidecar_copies_damaged_exit_2(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    s = p + ".fastckpt"
    with open(s, "rb") as f:
        blob = f.read()
    a_off, a_len, b_off, b_len = struct.unpack_from("<QQQQ", blob, 16)
    flip(s, a_off + 100)
    flip(s, b_off + 100)
    r = cli(["verify", p])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        f"fastckpt: error: {s} at offset 64: expected an intact manifest copy, but both copies are damaged "
        f"(copy A at offset {a_off + a_len - 16}: expected the copy's XXH3-128 checksum to match its contents; "
        f"copy B at offset {b_off + b_len - 16}: expected the copy's XXH3-128 checksum to match its contents); "
        "run 'fastckpt protect' again on a known-good copy of the checkpoint\n"
    )


def _imported_modules(stderr: str) -> set[str]:
    mods = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods


def test_verify_with_sidecar_never_imports_torch(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    flip(p, os.path.getsize(p) // 2)  # the damage path (tensor mapping) must not need torch either
    for args in (["verify", p], ["verify", "--json", p]):
        r = _run_python(["-X", "importtime", "-m", "fastckpt", *args])
        assert r.returncode == 1, r.stderr[-2000:]
        mods = _imported_modules(r.stderr)
        assert "fastckpt.verify" in mods and "fastckpt.sidecar" in mods
        assert not {m for m in mods if m == "torch" or m.startswith("torch.")}
        assert "numpy" not in mods
        # Only the sidecar and the file are read: no format reader is even imported.
        assert not {m for m in mods if m.startswith("fastckpt.formats")}


def _run_python(args: list[str]):  # type: ignore[no-untyped-def]
    import subprocess

    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_structural_check_without_sidecar(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    sd = save_model(p)
    r = cli(["verify", p])
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "no manifest: structural check only"
    t = sd["model"]["embed.weight"]
    off = tensor_offset(p, t)
    flip(p, off + 4 * 100)
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["manifest"] is False and out["check"] == "structural"
    assert [q["kind"] for q in out["problems"]] == ["bad-crc"]
    region = out["damaged"][0]
    assert (region["offset"], region["length"]) == (off, t.numel() * 4)
    assert region["tensors"] == ["model.embed.weight"]


def test_unknown_format_without_sidecar(tmp_path, cli) -> None:
    p = str(tmp_path / "blob.bin")
    with open(p, "wb") as f:
        f.write(opaque_bytes(1000))
    r = cli(["verify", p])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"fastckpt: error: {p}: unknown format: protect it to verify it\n"
    assert cli(["protect", p]).returncode == 0
    assert cli(["verify", p]).returncode == 0


def test_bad_inputs_one_line_errors(tmp_path, cli) -> None:
    empty = str(tmp_path / "empty.pt")
    open(empty, "wb").close()
    r = cli(["verify", empty])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {empty} at offset 0: expected a checkpoint, found an empty file (0 bytes)\n",
    )
    missing = str(tmp_path / "nope.pt")
    r = cli(["verify", missing])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {missing}: expected a file or directory to verify, but it does not exist\n",
    )
    # A sidecar whose checkpoint is gone.
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    os.unlink(p)
    r = cli(["verify", p])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {p}: expected the file described by {p}.fastckpt, but it does not exist\n",
    )
    # A file given as --sidecar that is not one.
    save_model(p)
    r = cli(["verify", p, "--sidecar", p])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {p} at offset 0: expected a fastckpt sidecar starting with FCKPT-SC (this is not one)\n",
    )
    assert "Traceback" not in r.stderr


def test_unsafe_pickle_is_reported_with_and_without_sidecar(tmp_path, cli) -> None:
    import pickle

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    p = str(tmp_path / "evil.pt")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": Evil()}, protocol=2))
        z.writestr("archive/version", "3\n")
    for stage in ("structural", "manifest"):
        if stage == "manifest":
            assert cli(["protect", p]).returncode == 0
        r, out = run_json(cli, p)
        assert r.returncode == 1 and out["check"] == stage
        assert out["unsafe"] == [f"{os.system.__module__}.system"]
        assert "pwned" not in r.stdout + r.stderr


def _safetensors(path: str, tensors: dict[str, tuple[str, list[int], bytes]]) -> dict[str, tuple[int, int]]:
    header = {}
    pos = 0
    for k, (dtype, shape, raw) in tensors.items():
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(raw)]}
        pos += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(raw for _, _, raw in tensors.values()))
    return {
        k: (8 + len(h) + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
        for k, v in header.items()
    }


def test_safetensors_damage_is_located(tmp_path) -> None:
    p = str(tmp_path / "m.safetensors")
    spans = _safetensors(
        p, {"a": ("F32", [300, 300], os.urandom(360000)), "b": ("F16", [1000], os.urandom(2000))}
    )
    res = protect_file(p)
    assert res.format == "safetensors" and res.tensors == 2
    off, _ = spans["b"]
    flip(p, off + 2 * 999)
    out = verify_path(p)
    assert not out["ok"]
    region = out["damaged"][0]
    lo = (off + 2 * 999) // LEAF * LEAF
    a_off, a_len = spans["a"]
    assert region["offset"] == lo
    expected = [{"tensor": "b", "start": 0, "stop": 1000}]
    if a_off + a_len > lo:
        expected.insert(0, {"tensor": "a", "start": (lo - a_off) // 4, "stop": 90000})
    assert region["elements"] == expected


def make_dir(root) -> list[str]:  # type: ignore[no-untyped-def]
    os.makedirs(root / "sub")
    names = ["a.bin", "sub/b.bin", ".hidden"]
    for i, n in enumerate(names):
        with open(root / n, "wb") as f:
            f.write(opaque_bytes(100000 + i))
    return names


def test_directory_protect_and_verify(tmp_path, cli) -> None:
    root = tmp_path / "ckpt"
    names = make_dir(root)
    r = cli(["protect", str(root)])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(root / ".fastckpt-dir")
    assert all(os.path.exists(str(root / n) + ".fastckpt") for n in names)
    dm = sc.read_sidecar(str(root / ".fastckpt-dir"), expect_kind=sc.KIND_DIRECTORY).manifest
    assert sorted(e.path for e in dm.entries) == sorted(names)
    r, out = run_json(cli, str(root))
    assert r.returncode == 0 and out["ok"] and out["manifest"]
    assert sorted(f["file"] for f in out["files"]) == sorted(names)
    assert out["size"] == out["expected_size"] == sum(os.path.getsize(root / n) for n in names)
    # Missing, short and extra files.
    os.unlink(root / "sub/b.bin")
    with open(root / "a.bin", "r+b") as f:
        f.truncate(50000)
    with open(root / "new.bin", "wb") as f:
        f.write(b"x")
    r, out = run_json(cli, str(root))
    assert r.returncode == 1 and not out["ok"]
    assert out["missing"] == ["sub/b.bin"] and out["extra"] == ["new.bin"] and out["truncated"] is True
    files = {f["file"]: f for f in out["files"]}
    assert files["sub/b.bin"]["missing"] is True and files["a.bin"]["truncated"] is True
    assert files[".hidden"]["ok"] is True
    assert {d["file"] for d in out["damaged"]} == {"a.bin"}
    assert f"{root / 'new.bin'}: not listed in .fastckpt-dir (extra file)" in r.stderr
    text = cli(["verify", str(root)])
    assert "  missing: sub/b.bin" in text.stdout and text.returncode == 1


def test_directory_file_without_its_sidecar_uses_the_directory_digest(tmp_path) -> None:
    root = tmp_path / "ckpt"
    make_dir(root)
    res = protect_dir(str(root))
    assert res.written
    os.unlink(str(root / "a.bin") + ".fastckpt")
    out = verify_path(str(root))
    files = {f["file"]: f for f in out["files"]}
    assert out["ok"] and files["a.bin"]["check"] == "directory-digest"
    flip(str(root / "a.bin"), 10)
    out = verify_path(str(root))
    assert not out["ok"] and not files["a.bin"]["damaged"]
    assert {f["file"]: f for f in out["files"]}["a.bin"]["damaged"][0]["offset"] == 0


def test_protect_refuses_structurally_damaged_file(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    sd = save_model(p)
    flip(p, tensor_offset(p, sd["model"]["layers.0.bias"]))
    r = cli(["protect", p])
    assert r.returncode == 1 and not os.path.exists(p + ".fastckpt")
    assert r.stdout.startswith(
        f"{p}: NOT protected: structural problems found (use --force to seal it anyway)"
    )
    r = cli(["protect", "--force", "--json", p])
    assert os.path.exists(p + ".fastckpt") and json.loads(r.stdout)["written"] is True


def _dcp_folder(path: str) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    g = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(
            {"w": torch.randn(300, 100, generator=g), "b": torch.randn(100, generator=g)}, checkpoint_id=path
        )


def test_dcp_folder_structural_and_protected(tmp_path, cli) -> None:
    root = str(tmp_path / "dcp")
    _dcp_folder(root)
    shards = sorted(f for f in os.listdir(root) if f.endswith(".distcp"))
    r, out = run_json(cli, root)
    assert r.returncode == 0 and out["ok"] and out["check"] == "structural" and out["format"] == "dcp"
    assert sorted(f["file"] for f in out["files"]) == sorted([".metadata", *shards])
    r = cli(["protect", root])
    assert r.returncode == 0, r.stdout + r.stderr
    r, out = run_json(cli, root)
    assert r.returncode == 0 and out["check"] == "manifest"
    # A damaged shard names the DCP item keys.
    shard = os.path.join(root, shards[0])
    flip(shard, os.path.getsize(shard) // 2)
    r, out = run_json(cli, root)
    assert r.returncode == 1 and out["damaged"][0]["file"] == shards[0]
    assert set(out["damaged"][0]["tensors"]) <= {"w", "b"} and out["damaged"][0]["tensors"]
    # A missing shard, with and without the directory manifest.
    os.unlink(shard)
    r, out = run_json(cli, root)
    assert r.returncode == 1 and out["missing"] == [shards[0]]
    os.unlink(os.path.join(root, ".fastckpt-dir"))
    r, out = run_json(cli, root)
    assert r.returncode == 1 and out["missing"] == [shards[0]]
    assert any(p["kind"] == "missing-file" for p in out["problems"])


def test_hf_sharded_folder(tmp_path, cli) -> None:
    root = tmp_path / "hf"
    root.mkdir()
    weight_map = {}
    for i, name in enumerate(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]):
        _safetensors(str(root / name), {f"layer{i}.w": ("F32", [1000], opaque_bytes(4000))})
        weight_map[f"layer{i}.w"] = name
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text("{}")
    r, out = run_json(cli, str(root))
    assert r.returncode == 0 and out["format"] == "hf-sharded", r.stderr
    checked = {f["file"] for f in out["files"]}
    assert "model.safetensors.index.json" in checked and "config.json" not in checked
    assert cli(["protect", str(root)]).returncode == 0
    r, out = run_json(cli, str(root))
    assert r.returncode == 0 and "config.json" in {f["file"] for f in out["files"]}
    os.unlink(root / "model-00002-of-00002.safetensors")
    r, out = run_json(cli, str(root))
    assert r.returncode == 1 and out["missing"] == ["model-00002-of-00002.safetensors"]


def test_demo_shows_the_damaged_tensor(cli) -> None:
    r = cli(["demo", "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["sidecar"].endswith(".fastckpt")
    assert out["verify"]["ok"] is False and out["damaged_tensors"]
    assert out["damaged_tensors"] == sorted({k for d in out["verify"]["damaged"] for k in d["tensors"]})
    text = cli(["demo"])
    assert text.returncode == 0 and "5. verify: DAMAGED bytes [" in text.stdout


def test_sidecar_given_as_the_checkpoint(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    save_model(p)
    protect_file(p)
    r = cli(["verify", p + ".fastckpt"])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {p}.fastckpt: expected a checkpoint, found a fastckpt sidecar: verify {p}\n",
    )
    r = cli(["protect", p + ".fastckpt"])
    assert (r.returncode, r.stderr) == (
        2,
        f"fastckpt: error: {p}.fastckpt: expected a checkpoint, found a fastckpt sidecar (it protects itself)\n",
    )


def test_structural_truncation_names_the_lost_elements(tmp_path, cli) -> None:
    p = str(tmp_path / "m.pt")
    sd = save_model(p)
    t = sd["model"]["embed.weight"]
    off = tensor_offset(p, t)
    cut = off + 4 * 1000 + 2  # inside element 1000 of embed.weight
    with open(p, "r+b") as f:
        f.truncate(cut)
    r, out = run_json(cli, p)
    assert r.returncode == 1 and out["check"] == "structural" and out["truncated"] is True
    first = out["damaged"][0]
    assert first["offset"] == cut
    hit = {e["tensor"]: e for e in first["elements"]}
    assert hit["model.embed.weight"] == {"tensor": "model.embed.weight", "start": 1000, "stop": t.numel()}


_PROP_SIZE = 5 * 4096 + 123


@pytest.fixture(scope="module")
def protected_blob(tmp_path_factory):  # type: ignore[no-untyped-def]
    from fastckpt.protect import build_manifest
    from fastckpt.sidecar import write_sidecar

    folder = tmp_path_factory.mktemp("prop")
    p = str(folder / "blob.bin")
    data = opaque_bytes(_PROP_SIZE)
    with open(p, "wb") as f:
        f.write(data)
    m, _ = build_manifest(p, leaf_size=4096)
    write_sidecar(p + ".fastckpt", m)
    return p, data


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, _PROP_SIZE - 1), min_size=0, max_size=6), st.integers(0, 600))
def test_damaged_runs_are_exactly_the_changed_leaves(protected_blob, flips: set[int], cut: int) -> None:
    p, data = protected_blob
    new = bytearray(data)
    for off in flips:
        new[off] ^= 0xFF
    new = new[: len(new) - cut] if cut else new
    with open(p, "wb") as f:
        f.write(new)
    try:
        out = verify_path(p)
    finally:
        with open(p, "wb") as f:
            f.write(data)
    leaf = 4096
    n = max(len(data), len(new))
    changed = sorted(
        {o // leaf for o in flips if o < len(new)}
        | {
            i
            for i in range(-(-n // leaf))
            if data[i * leaf : (i + 1) * leaf] != bytes(new[i * leaf : (i + 1) * leaf])
        }
    )
    expected = merge_runs(changed, leaf, n)
    assert [(d["offset"], d["length"]) for d in out["damaged"]] == expected
    assert out["ok"] == (not expected)
    assert out["truncated"] == (cut > 0)


def test_directory_with_an_unusable_sidecar_exits_2(tmp_path, cli) -> None:
    root = tmp_path / "ckpt"
    make_dir(root)
    protect_dir(str(root))
    s = str(root / "a.bin") + ".fastckpt"
    with open(s, "rb") as f:
        blob = f.read()
    a_off, _, b_off, _ = struct.unpack_from("<QQQQ", blob, 16)
    flip(s, a_off + 50)
    flip(s, b_off + 50)
    r, out = run_json(cli, str(root))
    assert r.returncode == 2 and out["unreadable"] == ["a.bin"] and not out["ok"]
    bad = next(f for f in out["files"] if f["file"] == "a.bin")
    assert bad["error"].startswith(
        f"{s} at offset 64: expected an intact manifest copy, but both copies are damaged"
    )
    r = cli(["verify", str(root)])
    assert r.returncode == 2 and f"{root / 'a.bin'}: UNREADABLE: {s} at offset 64" in r.stdout


class _Terminal:
    """A stand-in stderr that says it is a terminal and records what is written."""

    def __init__(self, tty: bool = True) -> None:
        self.parts: list[str] = []
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush(self) -> None:
        pass


def _plain_zip(path: str) -> None:
    rnd = __import__("random").Random(5)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(4):
            z.writestr(f"archive/data/{i}", rnd.randbytes(200_000 + i))


def test_structural_crc_pass_progress_bar(tmp_path, monkeypatch) -> None:
    from fastckpt import verify as V

    p = str(tmp_path / "plain.zip")
    _plain_zip(p)
    expected = V.verify_structural(p)
    assert expected["ok"] and expected["check"] == "structural" and expected["format"] == "zip"
    monkeypatch.setattr(V, "PROGRESS_MIN_BYTES", 0)  # a bar even for this small file
    updates: list[int] = []
    from fastckpt import _progress

    real_update = _progress.Progress.update
    monkeypatch.setattr(
        _progress.Progress, "update", lambda self, n: (updates.append(n), real_update(self, n))
    )

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert V.verify_file(p, progress=True) == expected  # same report with the bar
    out = "".join(term.parts)
    assert f"\rverify {p} (CRC-32) [" in out and "GB/s" in out
    assert out.endswith("\r" + " " * 80 + "\r")  # the bar is cleared at the end
    with zipfile.ZipFile(p) as z:
        assert sorted(updates) == sorted(i.compress_size for i in z.infolist())  # one update per record

    for quiet_term, progress in ((_Terminal(tty=False), True), (_Terminal(), False)):
        monkeypatch.setattr(sys, "stderr", quiet_term)
        assert V.verify_file(p, progress=progress) == expected
        assert quiet_term.parts == []  # not a terminal, or --quiet: nothing on stderr
