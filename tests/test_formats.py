"""The readers on checkpoints written by torch, safetensors and DCP, cross-checked against those
libraries' own loaders (keys, dtypes, shapes, and the bytes each TensorSpan points at)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt.formats import (
    Layout,
    Segment,
    TensorSpan,
    detect_format,
    read_dir_layout,
    read_layout,
    tensors_hit,
)
from formats_helpers import (
    flatten_tensors,
    save_safetensors,
    storage_bytes,
    training_state,
    write_dcp,
    write_hf_sharded,
)

torch = pytest.importorskip("torch")


def assert_tiles(layout: Layout) -> None:
    pos = 0
    for s in layout.segments:
        assert s.offset == pos and s.length > 0, s
        pos += s.length
    assert pos == layout.size


def dtype_name(t: object) -> str:
    return str(t.dtype).removeprefix("torch.")  # type: ignore[attr-defined]


def check_against_torch(
    path: str, layout: Layout, *, raw: bytes | None = None, trusted: bool = False
) -> None:
    # weights_only cannot read pickle protocol 4+ (FRAME); `trusted` is only for files this test wrote.
    loaded = torch.load(path, weights_only=not trusted, map_location="cpu")
    want = flatten_tensors(torch, loaded)
    got = {t.key: t for t in layout.tensors}
    assert set(got) == set(want)
    data = raw if raw is not None else Path(path).read_bytes()
    for key, t in want.items():
        span = got[key]
        assert span.dtype == dtype_name(t), key
        assert span.shape == tuple(t.shape), key
        assert span.itemsize == t.element_size(), key
        assert data[span.offset : span.offset + span.nbytes] == storage_bytes(torch, t), key


@pytest.fixture(scope="module")
def zip_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = str(tmp_path_factory.mktemp("z") / "ckpt.pt")
    torch.save(training_state(torch), p)
    return p


def test_torch_zip_keys_dtypes_bytes(zip_ckpt: str) -> None:
    layout = read_layout(zip_ckpt)
    assert layout.format == "torch-zip" == detect_format(zip_ckpt)
    assert layout.problems == [] and layout.unsafe_globals == []
    assert_tiles(layout)
    check_against_torch(zip_ckpt, layout)


def test_torch_zip_records_match_zipfile(zip_ckpt: str) -> None:
    layout = read_layout(zip_ckpt)
    data = Path(zip_ckpt).read_bytes()
    names = {s.name for s in layout.segments}
    with zipfile.ZipFile(zip_ckpt) as zf:
        for info in zf.infolist():
            assert info.filename in names
            if info.file_size == 0:  # empty records have a header but no data segment
                continue
            seg = next(
                s for s in layout.segments if s.name == info.filename and s.kind not in ("zip-local-header",)
            )
            assert data[seg.offset : seg.end] == zf.read(info.filename)
            assert seg.kind == (
                "pickle"
                if info.filename.endswith(".pkl")
                else "tensor-data"
                if "/data/" in info.filename
                else "metadata"
            )


def test_torch_zip_shared_storages_and_leaves(zip_ckpt: str) -> None:
    layout = read_layout(zip_ckpt)
    by_key = {t.key: t for t in layout.tensors}
    shared = {by_key[k].storage for k in ("shared.base", "shared.rows", "shared.cols", "shared.again")}
    assert len(shared) == 1
    assert by_key["shared.rows"].offset == by_key["shared.base"].offset + 6 * 4
    assert by_key["shared.cols"].stride == (6, 2)
    assert layout.non_tensor_entries["step"] == "1234"
    assert layout.non_tensor_entries["name"] == "'run-a'"
    assert layout.non_tensor_entries["optimizer.param_groups.0.lr"] == "0.0003"
    (opt,) = layout.info["optimizers"]
    assert opt["path"] == "optimizer"
    assert opt["param_groups"][0]["params"] == [0, 1, 2, 3]
    assert opt["param_groups"][0]["hyperparameters"]["weight_decay"] == "0.01"
    assert opt["state"] == {str(i): ["step", "exp_avg", "exp_avg_sq"] for i in range(4)}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_torch_zip_pickle_protocols(tmp_path: object, protocol: int) -> None:
    p = os.path.join(str(tmp_path), "p.pt")
    torch.save(training_state(torch), p, pickle_protocol=protocol)
    layout = read_layout(p)
    assert layout.problems == [] and layout.unsafe_globals == []
    check_against_torch(p, layout, trusted=protocol >= 4)


def test_torch_zip_alignment_and_no_crc(tmp_path: object) -> None:
    from torch.utils.serialization import config

    p = os.path.join(str(tmp_path), "aligned.pt")
    old = (config.save.storage_alignment, config.save.compute_crc32)
    config.save.storage_alignment = 4096
    config.save.compute_crc32 = False
    try:
        torch.save({"w": torch.randn(1000), "v": torch.randn(3)}, p)
    finally:
        config.save.storage_alignment, config.save.compute_crc32 = old
    layout = read_layout(p)
    assert layout.problems == []
    assert layout.info["crc_recorded"] is False
    assert all(t.offset % 4096 == 0 for t in layout.tensors)
    check_against_torch(p, layout)


def test_torch_zip_root_name_and_bare_tensor(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "weird name.bin")
    torch.save(torch.arange(10.0), p)
    layout = read_layout(p)
    assert layout.format == "torch-zip" and layout.problems == []
    assert [t.key for t in layout.tensors] == ["<root>"]
    assert layout.info["zip_root"] == "weird name/"


def test_crc_damage_is_reported(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "c.pt")
    torch.save({"w": torch.arange(100.0)}, p)
    layout = read_layout(p)
    (w,) = layout.tensors
    data = bytearray(Path(p).read_bytes())
    data[w.offset + 17] ^= 0x10
    Path(p).write_bytes(bytes(data))
    damaged = read_layout(p)
    (prob,) = damaged.problems
    assert prob.kind == "bad-crc" and prob.offset == w.offset
    assert prob.message.startswith("record 'c/data/0': CRC-32 of its 400 bytes is ")
    assert read_layout(p, check_crc=False).problems == []
    assert tensors_hit(damaged, w.offset + 17, 1) == [("w", 4, 5)]


def test_legacy_format(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "legacy.pt")
    torch.save(training_state(torch, legacy=True), p, _use_new_zipfile_serialization=False)
    layout = read_layout(p)
    assert layout.format == "torch-legacy" == detect_format(p)
    assert layout.problems == [] and layout.unsafe_globals == []
    assert_tiles(layout)
    check_against_torch(p, layout)
    assert layout.non_tensor_entries["epoch"] == "3"


def test_safetensors_against_library(tmp_path: object) -> None:
    safetensors = pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    p = os.path.join(str(tmp_path), "m.safetensors")
    gen = torch.Generator().manual_seed(5)
    tensors = {
        "a": torch.randn(3, 4, generator=gen),
        "b.bf16": torch.randn(5, generator=gen).to(torch.bfloat16),
        "c": torch.arange(7, dtype=torch.int64),
        "d": torch.tensor(1.5),
        "e": torch.zeros(0, 3),
        "f": torch.arange(4, dtype=torch.int32).to(torch.uint16),
        "g": torch.randn(2, generator=gen).to(torch.float8_e5m2),
    }
    save_file(tensors, p, metadata={"format": "pt", "note": "x"})
    layout = read_layout(p)
    assert layout.format == "safetensors" == detect_format(p)
    assert layout.problems == []
    assert_tiles(layout)
    assert layout.non_tensor_entries == {"__metadata__.format": "pt", "__metadata__.note": "x"}
    data = Path(p).read_bytes()
    got = {t.key: t for t in layout.tensors}
    with safetensors.safe_open(p, "pt") as f:
        assert set(f.keys()) == set(got)
        for k in f.keys():  # noqa: SIM118 - safe_open is not a dict
            t = f.get_tensor(k)
            assert got[k].dtype == dtype_name(t) and got[k].shape == tuple(t.shape)
            assert (
                data[got[k].offset : got[k].offset + got[k].nbytes]
                == t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_folder_and_shard(tmp_path: object) -> None:
    import torch.distributed.checkpoint as dcp

    folder = os.path.join(str(tmp_path), "dcp")
    sd = write_dcp(torch, folder)
    assert detect_format(folder) == "dcp"
    d = read_dir_layout(folder)
    assert d.format == "dcp" and d.problems == [] and d.extra_files == [] and d.missing_files == []
    shard_files = sorted(f for f in os.listdir(folder) if f.endswith(".distcp"))
    assert d.files == [".metadata", *shard_files]
    assert set(d.key_files) == {"model.w", "model.b", "step", "meta.tag"}
    (shard,) = shard_files
    layout = read_layout(os.path.join(folder, shard))
    assert layout.format == "dcp-shard" and layout.problems == []
    assert_tiles(layout)
    data = Path(os.path.join(folder, shard)).read_bytes()
    got = {t.key: t for t in layout.tensors}
    assert set(got) == {"model.w", "model.b"}
    for key, t in (("model.w", sd["model"]["w"]), ("model.b", sd["model"]["b"])):
        assert got[key].dtype == dtype_name(t) and got[key].shape == tuple(t.shape)
        assert (
            data[got[key].offset : got[key].offset + got[key].nbytes]
            == t.reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    assert layout.non_tensor_entries["step"] == "42"
    # the reference loader agrees that the folder is intact
    target = {
        "model": {"w": torch.zeros(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16)},
        "step": 0,
        "meta": {"tag": ""},
    }
    dcp.load(target, checkpoint_id=folder)
    assert torch.equal(target["model"]["w"], sd["model"]["w"])


def test_hf_sharded_folder(tmp_path: object) -> None:
    folder = os.path.join(str(tmp_path), "hf")
    write_hf_sharded(torch, folder)
    assert detect_format(folder) == "hf-sharded"
    d = read_dir_layout(folder)
    assert d.problems == [] and d.missing_files == [] and d.extra_files == []
    assert d.files == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert d.key_files["b.weight"] == "model-00002-of-00002.safetensors"


def test_plain_folder_lists_checkpoints(tmp_path: object, zip_ckpt: str) -> None:
    folder = str(tmp_path)
    os.makedirs(os.path.join(folder, "sub"))
    torch.save({"x": torch.ones(2)}, os.path.join(folder, "sub", "a.weights"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("hello")
    with open(os.path.join(folder, "sub", "a.weights.fastckpt"), "wb") as f:
        f.write(b"sidecar")
    d = read_dir_layout(folder)
    assert d.format == "dir" and d.files == [os.path.join("sub", "a.weights")]


def test_opaque_file(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "blob.dat")
    Path(p).write_bytes(os.urandom(1000))
    layout = read_layout(p)
    assert layout.format == "opaque" and layout.problems == []
    assert layout.segments == [Segment(0, 1000, "other", None)]


def test_readers_do_not_import_torch(tmp_path: object, zip_ckpt: str) -> None:
    folder = os.path.join(str(tmp_path), "dcp")
    write_dcp(torch, folder)
    st_path = os.path.join(str(tmp_path), "m.safetensors")
    save_safetensors(torch, {"a": torch.ones(2)}, st_path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from fastckpt.formats import read_layout, read_dir_layout\n"
        "from fastckpt.cli import main\n"
        f"assert read_layout({zip_ckpt!r}).tensors\n"
        f"assert read_layout({st_path!r}).tensors\n"
        f"assert read_dir_layout({folder!r}).files\n"
        f"rc = main(['inspect', '--json', {folder!r}]); assert rc == 0, rc\n"
        f"rc = main(['inspect', {zip_ckpt!r}]); assert rc == 0, rc\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---- tensors_hit -------------------------------------------------------------------------------
def _reference_hits(tensors: list[TensorSpan], offset: int, length: int) -> list[tuple[str, int, int]]:
    out = []
    for t in tensors:
        elems = [
            e
            for e in range(t.nbytes // t.itemsize)
            if t.offset + e * t.itemsize < offset + length and t.offset + (e + 1) * t.itemsize > offset
        ]
        if elems:
            out.append((t.key, min(elems), max(elems) + 1))
    return sorted(out)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from([1, 2, 4, 8]), st.integers(0, 16)),
        min_size=1,
        max_size=8,
    ),
    offset=st.integers(0, 600),
    length=st.integers(1, 200),
)
def test_tensors_hit_matches_bruteforce(sizes: list[tuple[int, int, int]], offset: int, length: int) -> None:
    tensors = []
    pos = 0
    for i, (n, isz, gap) in enumerate(sizes):
        pos += gap
        tensors.append(TensorSpan(f"t{i}", "x", (n,), pos, n * isz, isz, None))
        if i % 3 == 2:  # a view overlapping its predecessor, as shared storages do
            tensors.append(TensorSpan(f"v{i}", "x", (n,), max(0, pos - isz), n * isz, isz, "s"))
        pos += n * isz
    layout = Layout("p", "opaque", pos, [], tensors, [], [], {})
    assert sorted(tensors_hit(layout, offset, length)) == _reference_hits(tensors, offset, length)


def test_inspect_json_contract(tmp_path: object, zip_ckpt: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fastckpt", "inspect", "--json", zip_ckpt],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("ok", "path", "format", "size", "expected_size", "tensor_count", "tensor_bytes", "tensors", "bytes_by_prefix",
                "shared_storages", "optimizers", "non_tensor_entries", "unsafe_globals", "globals", "problems", "info"):  # fmt: skip
        assert key in d
    assert d["ok"] is True and d["format"] == "torch-zip"
    state = training_state(torch)
    model_bytes = sum(t.numel() * t.element_size() for t in state["model"].values())
    assert d["bytes_by_prefix"]["model"] == model_bytes
    assert d["bytes_by_prefix"]["shared"] == 24 * 4  # four views of one storage count once
    (opt,) = d["optimizers"]
    assert opt["steps"] == {str(i): "1" for i in range(4)}
    assert {"storage": d["tensors"][[t["key"] for t in d["tensors"]].index("shared.base")]["storage"],
            "keys": ["shared.base", "shared.rows", "shared.cols", "shared.again"]} in d["shared_storages"]  # fmt: skip
    text = subprocess.run(
        [sys.executable, "-m", "fastckpt", "inspect", zip_ckpt], capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0
    assert "optimizer optimizer:" in text.stdout and "lr=0.0003" in text.stdout
    assert "shared storages:" in text.stdout


# ---- other zips ----------------------------------------------------------------------------------
def test_generic_zip_deflate_zip64_extra_and_damage(tmp_path: Path) -> None:
    p = tmp_path / "g.zip"
    payload = os.urandom(5000)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.txt", b"hello " * 1000, compress_type=zipfile.ZIP_DEFLATED)
        with zf.open("big.bin", "w", force_zip64=True) as f:
            f.write(payload)
        zf.writestr("empty", b"")
    layout = read_layout(str(p))
    assert layout.format == "zip" == detect_format(str(p))
    assert layout.problems == []
    assert_tiles(layout)
    data = p.read_bytes()
    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            if info.file_size:
                (seg,) = [
                    s for s in layout.segments if s.name == info.filename and s.kind != "zip-local-header"
                ]
                assert seg.length == info.compress_size
    seg = next(s for s in layout.segments if s.name == "big.bin" and s.kind != "zip-local-header")
    assert data[seg.offset : seg.end] == payload
    bad = bytearray(data)
    bad[seg.offset + 100] ^= 1
    defl = next(s for s in layout.segments if s.name == "a.txt" and s.kind != "zip-local-header")
    bad[defl.offset + defl.length // 2] ^= 0x40
    p.write_bytes(bytes(bad))
    kinds = {(q.kind, q.message.split(":")[0]) for q in read_layout(str(p)).problems}
    assert ("bad-crc", "record 'big.bin'") in kinds
    assert ("bad-crc", "record 'a.txt'") in kinds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(p))
    layout = read_layout(str(p))
    assert layout.format == "zip" and layout.info.get("torchscript") is True
    assert layout.problems == [] and layout.unsafe_globals == []
    assert_tiles(layout)
    assert any(s.kind == "tensor-data" for s in layout.segments)


def _sparse_zip64(path: Path, big: int) -> dict[str, tuple[int, int]]:
    """A torch-style archive whose storage record is `big` bytes of zeros (a sparse hole), so the
    records after it and the central directory need zip64 offsets. Returns name -> (lh, size)."""
    import pickle
    import struct
    from collections import OrderedDict

    class FakeStorage:
        pass

    storage = FakeStorage()

    class Tensorish:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (big,), (1,), False, OrderedDict()))

    class P(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.ByteStorage, "0", "cpu", big) if obj is storage else None

    import io

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"w": Tensorish()})
    records = [("r/data.pkl", buf.getvalue()), ("r/data/0", None), ("r/version", b"3\n")]
    out: dict[str, tuple[int, int]] = {}
    central = b""
    with open(path, "wb") as f:
        for name, blob in records:
            lh = f.tell()
            nb = name.encode()
            size = big if blob is None else len(blob)
            crc = 0 if blob is None else zlib.crc32(blob)
            if blob is None:  # torch style: sizes in a zip64 data descriptor after the data
                f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0x808, 0, 0, 0, 0, 0, 0, len(nb), 0) + nb)
                f.seek(size, 1)
                f.write(struct.pack("<IIQQ", 0x08074B50, crc, size, size))
            else:
                f.write(
                    struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x800, 0, 0, 0, crc, size, size, len(nb), 0)
                    + nb
                    + blob
                )
            extra = b""
            sizes = (size, size)
            if size >= 0xFFFFFFFF or lh >= 0xFFFFFFFF:
                vals = []
                if size >= 0xFFFFFFFF:
                    vals += [size, size]
                    sizes = (0xFFFFFFFF, 0xFFFFFFFF)
                if lh >= 0xFFFFFFFF:
                    vals.append(lh)
                extra = struct.pack("<HH", 1, 8 * len(vals)) + b"".join(struct.pack("<Q", v) for v in vals)
            central += struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0x808 if blob is None else 0x800, 0, 0, 0, crc,
                sizes[0], sizes[1], len(nb), len(extra), 0, 0, 0, 0, min(lh, 0xFFFFFFFF),
            ) + nb + extra  # fmt: skip
            out[name] = (lh, size)
        cd = f.tell()
        f.write(central)
        e64 = f.tell()
        f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 3, 3, len(central), cd))
        f.write(struct.pack("<IIQI", 0x07064B50, 0, e64, 1))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 3, 3, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return out


@pytest.mark.slow
def test_zip64_offsets_past_4gib(tmp_path: Path) -> None:
    p = tmp_path / "huge.pt"
    big = (1 << 32) + 12345
    records = _sparse_zip64(p, big)
    try:
        layout = read_layout(str(p), check_crc=False)
        assert layout.format == "torch-zip" and layout.problems == []
        assert_tiles(layout)
        (w,) = layout.tensors
        assert (w.key, w.dtype, w.shape, w.nbytes) == ("w", "uint8", (big,), big)
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                assert records[info.filename] == (info.header_offset, info.file_size)
                seg = next(
                    s for s in layout.segments if s.name == info.filename and s.kind == "zip-local-header"
                )
                assert seg.offset == info.header_offset
        assert w.offset == records["r/data/0"][0] + 30 + len("r/data/0")
        desc = next(s for s in layout.segments if s.name == "r/data/0 (data descriptor)")
        assert (desc.offset, desc.length) == (w.offset + big, 24)
        assert tensors_hit(layout, w.offset + (1 << 32), 10) == [("w", 1 << 32, (1 << 32) + 10)]
    finally:
        p.unlink()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_safetensors_serialization(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")  # torch writes these shards through the safetensors package
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.filesystem import SerializationFormat

    folder = tmp_path / "dcp_st"
    sd = {"w": torch.randn(3, 4), "b": torch.ones(2, dtype=torch.bfloat16)}
    dcp.save(
        sd, storage_writer=FileSystemWriter(str(folder), serialization_format=SerializationFormat.SAFETENSORS)
    )
    d = read_dir_layout(str(folder))
    assert d.format == "dcp" and d.problems == []
    (shard,) = [f for f in d.files if f.endswith(".distcp")]
    layout = read_layout(str(folder / shard))
    assert layout.format == "dcp-shard" and layout.problems == []
    assert_tiles(layout)
    data = (folder / shard).read_bytes()
    got = {t.key: t for t in layout.tensors}
    assert set(got) == {"w", "b"}
    for k, t in sd.items():
        assert (
            data[got[k].offset : got[k].offset + got[k].nbytes]
            == t.reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    (folder / shard).write_bytes(data[:-10])
    probs = read_dir_layout(str(folder)).problems
    assert [q.kind for q in probs] == ["truncated", "truncated"]
    assert (
        probs[1].message
        == f"shard {shard!r}: tensor 'b': data_offsets [48, 52] run past the end of the byte buffer (42 bytes)"
    )
