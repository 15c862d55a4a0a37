"""fastckpt.save / load / save_safetensors: streamed digests, protect-identical sidecars, atomicity,
device-to-disk checks, read-back, parity, CorruptCheckpointError."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt import _native
from fastckpt._writer import TEMP_MARK, HashingFile, LeafHasher, is_temp_name, temp_name_for
from fastckpt.errors import CorruptCheckpointError, InputError, UsageError
from fastckpt.protect import protect_file
from fastckpt.sidecar import read_sidecar, sidecar_path_for

torch = pytest.importorskip("torch")


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def _sample_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(600, 500, generator=g)
    tied = torch.randn(64, 32, generator=g)
    return {
        "model": {
            "w": torch.randn(1000, 300, generator=g),
            "bf": torch.randn(70000, generator=g).to(torch.bfloat16),
            "ints": torch.arange(12345, dtype=torch.int64),
            "flag": torch.tensor([True, False, True]),
            "empty": torch.empty(0, 7),
            "scalar": torch.tensor(3.5),
            "view": base[10:20],  # offset into a larger storage
            "strided": base.t(),  # non-contiguous view of the same storage
            "tied_a": tied,
            "tied_b": tied,
        },
        "optimizer": {"state": {0: {"exp_avg": torch.ones(100, 100), "step": torch.tensor(7.0)}}, "lr": 0.1},
        "step": 1234,
        "name": "run",
    }


def _assert_equal(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(
            a.view(torch.uint8) if a.dtype == torch.bool else a,
            b.view(torch.uint8) if b.dtype == torch.bool else b,
        )
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal(a[k], b[k])
    else:
        assert a == b


def _protect_copy(path: str, tmp_path) -> bytes:
    """The sidecar `fastckpt protect` writes for a byte-identical copy with the same name."""
    other = tmp_path / "protect-copy"
    other.mkdir(exist_ok=True)
    dst = other / os.path.basename(path)
    shutil.copyfile(path, dst)
    res = protect_file(dst)
    assert res.written
    return (other / (dst.name + ".fastckpt")).read_bytes()


# ---------------------------------------------------------------------------------------------
# Streaming leaf hasher
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
    leaf_pow=st.integers(min_value=6, max_value=9),
    background=st.booleans(),
    stable=st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_leaf_hasher_matches_whole_buffer(
    data: bytes, cuts: list[int], leaf_pow: int, background: bool, stable: list[bool]
) -> None:
    leaf = 1 << leaf_pow
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    h = LeafHasher(leaf, chunk_min=1, background=background)
    view = memoryview(data)  # stays valid until finish(), as a stable write requires
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        h.update(view[a:b], stable=stable[k])
    assert h.pos == len(data)
    assert h.finish() == _native.leaf_digests(data, leaf)
    for a, b in itertools.pairwise(bounds):
        n, leaves = h.chunks[a]
        assert n == b - a
        assert leaves == _native.leaf_digests(data[a:b], leaf)


def test_background_lockstep_blocks(monkeypatch) -> None:
    # The background job hashes both alignments block by block; cut the blocks small so that a
    # write spans many of them, with every offset of the write relative to the leaves.
    import fastckpt._writer as w

    monkeypatch.setattr(w, "_LOCKSTEP_BLOCK", 256)
    data = os.urandom(64 * 37 + 11)
    view = memoryview(data)
    for first in (0, 1, 63, 64, 65, 200, 1000):
        h = LeafHasher(64, chunk_min=1, background=True)
        h.update(view[:first], stable=True)
        h.update(view[first:], stable=True)
        assert h.finish() == _native.leaf_digests(data, 64)
        assert h.chunks[first] == (len(data) - first, _native.leaf_digests(data[first:], 64))


def test_hashing_file_writes_exact_bytes(tmp_path) -> None:
    data = os.urandom(3 * 65536 + 777)
    h = LeafHasher(65536)
    p = tmp_path / "f.bin"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT)
    with HashingFile(fd, h) as f:
        pieces = [data[:10], data[10:70000], data[70000:70001], data[70001:]]
        for piece in pieces:
            assert f.write(piece) == len(piece)
        assert f.tell() == len(data)
        with pytest.raises(AttributeError):
            f.fileno()  # hidden: torch's legacy writer would bypass the hash through it
    os.close(fd)
    assert p.read_bytes() == data
    assert h.finish() == fastckpt.hash_file(p).leaf_bytes


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------


def test_save_matches_torch_save_and_protect(tmp_path) -> None:
    sd = _sample_state()
    path = tmp_path / "model.pt"
    info = fastckpt.save(sd, path)
    import io

    ref = io.BytesIO()
    torch.save(sd, ref)
    # torch.save's own bytes for a file object (its records live under "archive/"), apart from the
    # per-save serialization id.
    assert path.stat().st_size == len(ref.getvalue())
    assert info.sidecar == str(path) + ".fastckpt" and os.path.exists(info.sidecar)
    assert info.format == "torch-zip" and info.size == path.stat().st_size
    assert info.digest == fastckpt.hash_file(path).hex()
    # The sidecar is byte for byte what `fastckpt protect` writes for the same bytes.
    assert path.with_name("model.pt.fastckpt").read_bytes() == _protect_copy(str(path), tmp_path)
    _assert_equal(sd, fastckpt.load(path))
    assert _files(tmp_path) == ["model.pt", "model.pt.fastckpt", "protect-copy"]


@pytest.mark.parametrize("leaf_size", [64, 4096, 1 << 20])
def test_save_sidecar_identical_at_leaf_sizes(tmp_path, leaf_size: int) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save(_sample_state(1), path, leaf_size=leaf_size)
    other = tmp_path / "o"
    other.mkdir()
    shutil.copyfile(path, other / "m.pt")
    protect_file(other / "m.pt", leaf_size=leaf_size)
    assert (tmp_path / "m.pt.fastckpt").read_bytes() == (other / "m.pt.fastckpt").read_bytes()


def test_save_hashes_tensor_data_in_flight(tmp_path) -> None:
    # Every storage (>= CHUNK_MIN bytes) is written by torch in one call: no tensor byte is re-read.
    sd = {f"t{i}": torch.randn(1000 + i) for i in range(20)}
    info = fastckpt.save(sd, tmp_path / "m.pt")
    assert info.tensors == 20 and info.reread_bytes == 0


def test_save_hashes_storages_in_the_background(tmp_path, monkeypatch) -> None:
    jobs = []
    real = LeafHasher._job

    def spy(self, mv, i, full, want_chunk):
        jobs.append(mv.nbytes)
        return real(self, mv, i, full, want_chunk)

    monkeypatch.setattr(LeafHasher, "_job", spy)
    sd = {"big": torch.randn(1 << 19), "small": torch.randn(10), "view": torch.randn(1 << 19)[1:]}
    path = tmp_path / "m.pt"
    info = fastckpt.save(sd, path)
    assert sorted(jobs) == [2 << 20, 2 << 20]  # the two large storages, off the writer's thread
    # Only what no write delimits is read back (from the page cache): the view, which starts 4 bytes
    # into its storage, and the 40-byte tensor (below CHUNK_MIN).
    assert info.reread_bytes == (2 << 20) - 4 + 40
    assert (tmp_path / "m.pt.fastckpt").read_bytes() == _protect_copy(str(path), tmp_path)


def test_save_legacy_format(tmp_path) -> None:
    sd = {"a": torch.randn(100, 100), "b": torch.arange(5)}
    path = tmp_path / "legacy.pt"
    info = fastckpt.save(sd, path, _use_new_zipfile_serialization=False)
    assert info.format == "torch-legacy"
    assert (tmp_path / "legacy.pt.fastckpt").read_bytes() == _protect_copy(str(path), tmp_path)
    _assert_equal(sd, fastckpt.load(path))


def test_save_replaces_old_version_and_preserves_mode(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save({"v": torch.zeros(10)}, path)
    os.chmod(path, 0o600)
    fastckpt.save({"v": torch.ones(10)}, path, fsync=False)
    assert torch.equal(fastckpt.load(path)["v"], torch.ones(10))
    assert path.stat().st_mode & 0o777 == 0o600
    assert _files(tmp_path) == ["m.pt", "m.pt.fastckpt"]


def test_failed_save_leaves_old_checkpoint(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save({"v": torch.zeros(10)}, path)
    before = (path.read_bytes(), (tmp_path / "m.pt.fastckpt").read_bytes())
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        fastckpt.save({"v": torch.ones(10), "f": lambda: 1}, path)
    assert (path.read_bytes(), (tmp_path / "m.pt.fastckpt").read_bytes()) == before
    assert _files(tmp_path) == ["m.pt", "m.pt.fastckpt"]


def test_save_rejects_file_objects_and_bad_options(tmp_path) -> None:
    import io

    with pytest.raises(UsageError, match="file path"):
        fastckpt.save({}, io.BytesIO())
    with pytest.raises(UsageError, match="leaf_size"):
        fastckpt.save({}, tmp_path / "x.pt", leaf_size=1000)
    with pytest.raises(UsageError, match="redundancy"):
        fastckpt.save({}, tmp_path / "x.pt", redundancy=-1)
    with pytest.raises(InputError, match="does not exist"):
        fastckpt.save({}, tmp_path / "nope" / "x.pt")
    assert _files(tmp_path) == []


def test_temp_names_are_recognisable(tmp_path) -> None:
    t = temp_name_for(str(tmp_path / "step_100.pt"))
    base = os.path.basename(t)
    assert base.startswith(".step_100.pt" + TEMP_MARK) and base.endswith(".pt")
    assert is_temp_name(t) and not is_temp_name(str(tmp_path / "step_100.pt"))


def test_stale_temps_of_dead_processes_are_removed(tmp_path) -> None:
    path = tmp_path / "m.pt"
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(child.stdout)
    stale = os.path.basename(temp_name_for(str(path))).replace(f"-{os.getpid()}-", f"-{dead}-")
    live = os.path.basename(temp_name_for(str(path))).replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    other_target = os.path.basename(temp_name_for(str(tmp_path / "n.pt"))).replace(
        f"-{os.getpid()}-", f"-{dead}-"
    )
    for n in (stale, live, other_target):
        (tmp_path / n).write_bytes(b"partial")
    fastckpt.save({"v": torch.zeros(3)}, path)
    assert _files(tmp_path) == sorted([live, other_target, "m.pt", "m.pt.fastckpt"])


def test_import_does_not_import_torch() -> None:
    code = (
        "import sys, fastckpt\n"
        "fastckpt.save; fastckpt.load; fastckpt.save_safetensors; fastckpt.CorruptCheckpointError\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert issubclass(fastckpt.CorruptCheckpointError, RuntimeError)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_with_sidecar_does_not_import_torch(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save({"v": torch.zeros(1000)}, path)
    code = f"import sys\nfrom fastckpt.save import check\ncheck({str(path)!r})\nassert 'torch' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Corruption on load
# ---------------------------------------------------------------------------------------------


def _flip(path, offset: int, n: int = 1) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(n)
        f.seek(offset)
        f.write(bytes(x ^ 0xFF for x in b))


def _entry(path, key: str):
    m = read_sidecar(sidecar_path_for(path)).manifest
    return next(e for e in m.tensor_entries() if e.key == key)


def test_load_names_damaged_tensors(tmp_path) -> None:
    path = tmp_path / "m.pt"
    sd = _sample_state()
    fastckpt.save(sd, path)
    e = _entry(path, "model.ints")
    _flip(path, e.offset + e.nbytes // 2)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path)
    err = ei.value
    assert isinstance(err, RuntimeError)
    assert err.damaged == ["model.ints"]
    assert "model.ints" in str(err) and f"fastckpt repair {path}" in str(err)
    assert err.report is not None and err.report["manifest"] is True
    # verify=False loads it anyway (the caller asked for no check).
    assert not torch.equal(fastckpt.load(path, verify=False)["model"]["ints"], sd["model"]["ints"])


def test_load_reports_tied_and_non_tensor_damage(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save(_sample_state(), path)
    e = _entry(path, "model.tied_a")
    _flip(path, e.offset)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path)
    assert sorted(ei.value.damaged) == ["model.tied_a", "model.tied_b"]
    # Damage in the pickle is named by its segment.
    path2 = tmp_path / "n.pt"
    fastckpt.save({"v": torch.zeros(4)}, path2)
    seg = next(
        s for s in read_sidecar(sidecar_path_for(path2)).manifest.segment_entries() if s.kind == "pickle"
    )
    _flip(path2, seg.offset + 1)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path2)
    assert ei.value.damaged == [f"<pickle {seg.name}>"]


def test_load_truncated(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save(_sample_state(), path)
    size = path.stat().st_size
    os.truncate(path, size - 100)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path)
    assert f"<truncated: {size - 100} of {size} bytes>" in ei.value.damaged


def test_load_without_sidecar_uses_structural_check(tmp_path) -> None:
    path = tmp_path / "plain.pt"
    sd = {"a": torch.randn(10000), "b": torch.randn(10)}
    torch.save(sd, path)
    _assert_equal(sd, fastckpt.load(path))
    with pytest.raises(CorruptCheckpointError, match="sidecar"):
        fastckpt.load(path, require_sidecar=True)
    _flip(path, 5000)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path)
    assert ei.value.damaged == ["a"] and ei.value.report["manifest"] is False


def test_load_refuses_weights_only_false_and_missing_files(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save({"a": torch.zeros(2)}, path)
    with pytest.raises(UsageError, match="weights_only"):
        fastckpt.load(path, weights_only=False)
    with pytest.raises(FileNotFoundError):
        fastckpt.load(tmp_path / "missing.pt")


def test_load_with_damaged_sidecar_copy_still_verifies(tmp_path) -> None:
    path = tmp_path / "m.pt"
    fastckpt.save({"a": torch.arange(1000)}, path)
    _flip(str(path) + ".fastckpt", 100, 8)  # inside copy A
    assert torch.equal(fastckpt.load(path)["a"], torch.arange(1000))


# ---------------------------------------------------------------------------------------------
# Device-to-disk check (exercised on the CPU by treating CPU tensors as device tensors)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cpu_as_device(monkeypatch):
    import fastckpt.save as save_mod

    monkeypatch.setattr(sys.modules["fastckpt.save"], "_needs_device_check", lambda t: True)
    return save_mod


def test_device_check_passes_for_correct_writes(tmp_path, cpu_as_device) -> None:
    sd = _sample_state()
    info = fastckpt.save(sd, tmp_path / "m.pt")
    n_nonempty = sum(1 for _, t in fastckpt.digest.iter_tensors(sd) if t.numel())
    assert info.device_checked == n_nonempty  # includes the strided view (byte-range digest)


def test_device_check_detects_injected_mismatch(tmp_path, monkeypatch, cpu_as_device) -> None:
    mod = sys.modules["fastckpt.save"]
    real = mod._device_leaf_digests

    def corrupt(tensors, leaf_size, threads):
        out = real(tensors, leaf_size, threads)
        lb, nb = out[0]
        out[0] = (bytes([lb[0] ^ 1]) + lb[1:], nb)  # as if one leaf came off the GPU differently
        return out

    path = tmp_path / "m.pt"
    fastckpt.save({"first": torch.zeros(5)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(mod, "_device_leaf_digests", corrupt)
    sd = {"first": torch.randn(1000), "second": torch.randn(1000)}
    with pytest.raises(CorruptCheckpointError, match="device-to-disk") as ei:
        fastckpt.save(sd, path)
    assert ei.value.damaged == ["first"]
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.pt", "m.pt.fastckpt"]


def test_device_check_detects_bytes_changed_after_device_hash(tmp_path, monkeypatch, cpu_as_device) -> None:
    # The tensor changes between the device-side digest and the copy to the host (e.g. a bad DMA).
    mod = sys.modules["fastckpt.save"]
    real_init = mod._DeviceCheck.__init__
    sd = {"a": torch.randn(1000), "b": torch.randn(50000)}

    def init_then_corrupt(self, items, leaf_size, threads):
        real_init(self, items, leaf_size, threads)
        sd["b"][40000] += 1.0

    monkeypatch.setattr(mod._DeviceCheck, "__init__", init_then_corrupt)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.save(sd, tmp_path / "m.pt")
    assert ei.value.damaged == ["b"]
    assert _files(tmp_path) == []


@pytest.mark.cuda
def test_device_check_on_gpu(tmp_path) -> None:
    sd = {"w": torch.randn(1000, 1000, device="cuda"), "v": torch.randn(4000, device="cuda")[10:20],
          "s": torch.randn(300, 200, device="cuda").t(), "cpu": torch.randn(10)}  # fmt: skip
    info = fastckpt.save(sd, tmp_path / "m.pt", verify=True)
    assert info.device_checked == 3
    out = fastckpt.load(tmp_path / "m.pt")
    for k in sd:
        assert torch.equal(out[k], sd[k].cpu())


# ---------------------------------------------------------------------------------------------
# Read-back and parity
# ---------------------------------------------------------------------------------------------


def test_verify_read_back_detects_storage_corruption(tmp_path, monkeypatch) -> None:
    import fastckpt._writer

    mod = sys.modules["fastckpt.save"]
    path = tmp_path / "m.pt"
    fastckpt.save({"old": torch.zeros(3)}, path)
    before = path.read_bytes()

    def corrupt_on_disk(fd: int) -> None:
        os.pwrite(fd, b"\x00\x01\x02", 3000)  # what the device handed back differs from what was written

    monkeypatch.setattr(mod, "drop_cache", corrupt_on_disk)
    with pytest.raises(CorruptCheckpointError, match="read-back") as ei:
        fastckpt.save({"x": torch.randn(10000)}, path, verify=True)
    assert ei.value.damaged == ["x"]
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.pt", "m.pt.fastckpt"]


def test_verify_read_back_passes(tmp_path) -> None:
    info = fastckpt.save(_sample_state(), tmp_path / "m.pt", verify=True)
    assert info.verified


def test_parity_in_sidecar(tmp_path) -> None:
    from fastckpt.parity import ParityParams, encode_file_parity, n_leaves_of
    from fastckpt.sidecar_parity import load_parity, parity_section_of

    path = tmp_path / "m.pt"
    info = fastckpt.save(_sample_state(), path, redundancy=5)
    spath = str(path) + ".fastckpt"
    sc = read_sidecar(spath)
    params = ParityParams.from_redundancy(5, n_leaves_of(info.size, info.leaf_size))
    expected = encode_file_parity(path.read_bytes(), info.leaf_size, params)
    assert info.parity_bytes == len(expected) == params.parity_nbytes(info.leaf_size)
    sec = parity_section_of(sc.manifest, path=spath)
    assert sec is not None and (sec.params.k, sec.params.m, sec.params.groups) == (
        params.k,
        params.m,
        params.groups,
    )
    loaded = load_parity(spath, sc.bulk_offset, sec)
    try:
        assert bytes(loaded.data) == expected and loaded.damaged == []
    finally:
        loaded.close()
    # Exactly the sidecar `fastckpt protect --redundancy 5` writes, and verify passes.
    other = tmp_path / "o"
    other.mkdir()
    shutil.copyfile(path, other / "m.pt")
    protect_file(other / "m.pt", redundancy=5)
    assert (other / "m.pt.fastckpt").read_bytes() == (tmp_path / "m.pt.fastckpt").read_bytes()
    from fastckpt.verify import verify_file

    assert verify_file(path)["ok"]
    fastckpt.load(path)


def test_default_redundancy_is_protects(tmp_path) -> None:
    from fastckpt.protect import DEFAULT_REDUNDANCY

    info = fastckpt.save({"w": torch.randn(100000)}, tmp_path / "m.pt")
    assert info.redundancy == DEFAULT_REDUNDANCY and (DEFAULT_REDUNDANCY == 0 or info.parity_bytes > 0)
    assert fastckpt.save({"w": torch.randn(10)}, tmp_path / "n.pt", redundancy=0).parity_bytes == 0


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------


def test_save_safetensors(tmp_path) -> None:
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = {
        "emb": torch.randn(3000, 64),
        "bias": torch.randn(64).to(torch.float16),
        "ids": torch.arange(100, dtype=torch.int32),
        "tiny": torch.tensor([1.0]),
    }
    path = tmp_path / "model.safetensors"
    info = fastckpt.save_safetensors(tensors, path, metadata={"format": "pt", "step": "7"})
    assert info.format == "safetensors" and info.tensors == 4 and info.reread_bytes == 0
    _assert_equal(tensors, load_file(path))
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "pt", "step": "7"}
    assert (tmp_path / "model.safetensors.fastckpt").read_bytes() == _protect_copy(str(path), tmp_path)
    _assert_equal(tensors, fastckpt.load(path))
    e = _entry(path, "ids")
    _flip(path, e.offset + 4)
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.load(path)
    assert ei.value.damaged == ["ids"]


def test_save_safetensors_device_check(tmp_path, monkeypatch, cpu_as_device) -> None:
    pytest.importorskip("safetensors")
    mod = sys.modules["fastckpt.save"]
    info = fastckpt.save_safetensors({"a": torch.randn(100), "b": torch.randn(7)}, tmp_path / "m.safetensors")
    assert info.device_checked == 2
    real = mod._device_leaf_digests
    monkeypatch.setattr(
        mod, "_device_leaf_digests", lambda ts, ls, th: [(b"\0" * len(lb), nb) for lb, nb in real(ts, ls, th)]
    )
    with pytest.raises(CorruptCheckpointError) as ei:
        fastckpt.save_safetensors({"a": torch.randn(100)}, tmp_path / "m.safetensors")
    assert ei.value.damaged == ["a"]
