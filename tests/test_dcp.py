"""fastckpt.dcp (torch.distributed.checkpoint writer/reader with digests), DCP-aware verify, and
verify scaled out over torchrun. Multi-process tests run 2 gloo ranks on the CPU."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt.dcp_verify import ItemDigest, decode_items, encode_items
from fastckpt.errors import CorruptCheckpointError, InputError

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(args: list[str], world: int = 2, timeout: int = 240) -> list[subprocess.CompletedProcess[str]]:
    """Runs `python ARGS` as `world` gloo ranks (env:// rendezvous on loopback)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        # One intra-op thread per rank: on a many-core runner each rank would otherwise start a
        # thread per core, which is how a container's pids limit is reached.
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """One 2-rank run of tests/_dcp_worker.py: save, load, damage, load again."""
    base = tmp_path_factory.mktemp("dcp2")
    root = base / "ckpt"
    procs = run_ranks([os.path.join(HERE, "_dcp_worker.py"), str(root), str(base / "rank{}.json")])
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), "\n".join(
        f"rank {r} exit {p.returncode}:\n{p.stderr[-3000:]}" for r, p in enumerate(procs)
    )
    results = [json.loads((base / f"rank{r}.json").read_text()) for r in range(2)]
    return root, results


def test_items_roundtrip_and_keys() -> None:
    items = [
        ItemDigest("model.w", (32, 0), 0, 0, 100, 1 << 127),
        ItemDigest("meta.step", None, 1, 100, 5, 7),
        ItemDigest("ü", (0, 0), 0, 105, 0, 0),
    ]
    assert decode_items(encode_items(items)) == items
    assert [i.key for i in items] == ["model.w@32,0", "meta.step", "ü"]
    with pytest.raises(InputError, match="ITEMS"):
        decode_items(encode_items(items)[:-3])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=20),
            st.one_of(st.none(), st.lists(st.integers(0, 2**63 - 1), max_size=4).map(tuple)),
            st.integers(0, 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**128 - 1),
        ),
        max_size=8,
    )
)
def test_items_encoding_property(raw) -> None:
    items = [ItemDigest(f, o if o else None, k, a, b, d) for f, o, k, a, b, d in raw]
    assert decode_items(encode_items(items)) == items


def test_two_ranks_save_load(two_rank_run) -> None:
    root, (r0, r1) = two_rank_run
    assert r0["loaded_equal"] and r1["loaded_equal"]
    # Every rank recorded digests for the items it wrote, sharded tensors by chunk.
    assert "model.sharded" in r0["items"] and "model.sharded@32,0" in r1["items"]
    assert "rank0.mine" in r0["items"] and "rank1.mine" in r1["items"]
    assert "model.replicated" in r0["items"] + r1["items"]
    assert "meta.step" in r0["items"] + r1["items"]
    names = sorted(os.listdir(root))
    for f in names:
        if f.endswith(".distcp"):
            assert f + ".fastckpt" in names
    assert ".fastckpt-dir" in names and ".metadata.fastckpt" in names


def test_two_ranks_damaged_item_is_named(two_rank_run) -> None:
    _, (r0, r1) = two_rank_run
    for r in (r0, r1):  # dcp.load gathers the failure of rank 1 on every rank
        assert r["damaged_load"] == "CorruptCheckpointError", r
        assert r["damaged_items"] == ["rank1.mine"]
        assert "rank1.mine" in r["message"] and "fastckpt repair" in r["message"]
        assert r["plain_dcp_load"] == "CorruptCheckpointError"


def test_verify_two_rank_checkpoint(two_rank_run, cli) -> None:
    root, (r0, _) = two_rank_run
    r = cli(["verify", str(root), "--json"])
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["dcp"]["damaged_items"] == ["rank1.mine"]
    bad = [f for f in rep["files"] if not f["ok"]]
    assert [f["file"] for f in bad] == [r0["damaged_file"]]
    assert any("rank1.mine" in (region.get("items") or []) for region in bad[0]["damaged"])


def test_verify_scaled_out_with_torchrun(two_rank_run, tmp_path) -> None:
    root, _ = two_rank_run
    damaged = tmp_path / "damaged"
    shutil.copytree(root, damaged)
    intact = tmp_path / "intact"
    state = {"a": torch.randn(300, 300), "b": torch.arange(5000), "c": {"d": torch.randn(1000)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastckpt.dcp.save(state, intact, thread_count=3)
    single = {}
    for d in (intact, damaged):
        r = subprocess.run(
            [sys.executable, "-m", "fastckpt", "verify", str(d), "--json"], capture_output=True, text=True
        )
        single[d] = (r.returncode, json.loads(r.stdout))
    for d in (intact, damaged):
        port = _free_port()
        r = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
             f"--master_port={port}", "-m", "fastckpt", "verify", str(d), "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        code, ref = single[d]
        assert r.returncode == code, r.stderr[-3000:]
        rep = json.loads(r.stdout)  # printed once, by rank 0
        dist = rep.pop("distributed")
        assert dist["world_size"] == 2 and all(n > 0 for n in dist["files_per_rank"])
        assert rep == ref


def test_verify_missing_extra_short_shards(tmp_path, cli) -> None:
    base = tmp_path / "ok"
    state = {
        "a": torch.randn(300, 300),
        "b": torch.randn(200, 200),
        "c": torch.arange(100),
        "meta": {"step": 3},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastckpt.dcp.save(state, base, thread_count=2)
    shards = sorted(f for f in os.listdir(base) if f.endswith(".distcp"))
    assert len(shards) == 2
    victim = next(s for s in shards if "b" in _items_in(base, s))

    for manifest in (True, False):

        def case(name: str, manifest: bool = manifest) -> str:
            d = tmp_path / f"{name}-{manifest}"
            shutil.copytree(base, d)
            if not manifest:
                os.unlink(d / ".fastckpt-dir")
            return str(d)

        d = case("missing")
        os.unlink(os.path.join(d, victim))
        r = cli(["verify", d, "--json"])
        rep = json.loads(r.stdout)
        assert r.returncode == 1 and rep["missing"] == [victim]
        assert "b" in rep["dcp"]["missing_items"]

        d = case("short")
        os.truncate(os.path.join(d, victim), os.path.getsize(os.path.join(d, victim)) - 10)
        r = cli(["verify", d, "--json"])
        rep = json.loads(r.stdout)
        assert r.returncode == 1 and rep["truncated"]
        assert rep["dcp"]["cut_off_items"] and set(rep["dcp"]["cut_off_items"]) <= set(
            _items_in(base, victim)
        )

        d = case("extra")
        shutil.copy(os.path.join(d, victim), os.path.join(d, "__7_0.distcp"))
        r = cli(["verify", d, "--json"])
        rep = json.loads(r.stdout)
        assert r.returncode == 0  # an unreferenced shard is reported, not fatal
        if manifest:
            assert rep["extra"] == ["__7_0.distcp"]
        else:
            assert any(p["kind"] == "extra-file" and "__7_0.distcp" in p["message"] for p in rep["problems"])

        d = case("intact")
        r = cli(["verify", d])
        assert r.returncode == 0 and "OK" in r.stdout


def _items_in(root, shard: str) -> list[str]:
    from fastckpt.dcp_verify import items_of
    from fastckpt.sidecar import read_sidecar

    m = read_sidecar(os.path.join(root, shard + ".fastckpt")).manifest
    return [it.key for it in items_of(m, shard) or []]


def test_single_process_roundtrip_and_damage(tmp_path) -> None:
    import fastckpt.dcp as fdcp

    state = {"w": torch.randn(128, 64), "n": torch.arange(10), "meta": {"step": 9, "tag": "x"}}
    root = tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=fdcp.FileSystemWriter(root))
        out = {
            "w": torch.zeros(128, 64),
            "n": torch.zeros(10, dtype=torch.int64),
            "meta": {"step": 0, "tag": ""},
        }
        dcp.load(out, storage_reader=fdcp.FileSystemReader(root))
    assert (
        torch.equal(out["w"], state["w"])
        and torch.equal(out["n"], state["n"])
        and out["meta"] == state["meta"]
    )
    # The per-file sidecars are what `fastckpt protect` writes for the same folder (plus ITEMS).
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    from fastckpt.protect import protect_dir
    from fastckpt.sidecar import read_sidecar

    protect_dir(copy)
    for f in os.listdir(root):
        if f.endswith(".fastckpt") or f == ".fastckpt-dir":
            a, b = read_sidecar(root / f).manifest, read_sidecar(copy / f).manifest
            if hasattr(a, "leaf_bytes"):
                assert (a.file_size, a.leaf_bytes, a.format, a.file_digest) == (
                    b.file_size,
                    b.leaf_bytes,
                    b.format,
                    b.file_digest,
                )
                assert a.tensor_entries() == b.tensor_entries() and a.segment_entries() == b.segment_entries()
            else:
                assert a == b
    # Damage in .metadata: refused before anything is unpickled.
    meta = root / ".metadata"
    raw = bytearray(meta.read_bytes())
    raw[-3] ^= 1
    meta.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError) as ei:
        fdcp.load(out, root)
    assert ei.value.damaged == [".metadata"]
    reader = fdcp.FileSystemReader(root)
    with pytest.raises(BaseException, match="does not match its sidecar") as ei2:
        dcp.load(out, storage_reader=reader)
    assert fdcp.unwrap(ei2.value, reader) is reader.metadata_error


def test_reader_uses_leaves_for_folders_protected_afterwards(tmp_path, cli) -> None:
    import fastckpt.dcp as fdcp

    state = {"w": torch.randn(256, 256), "v": torch.randn(100)}
    root = tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=root)  # torch's own writer
    assert cli(["protect", str(root)]).returncode == 0
    out = {"w": torch.zeros(256, 256), "v": torch.zeros(100)}
    fdcp.load(out, root)
    assert torch.equal(out["w"], state["w"])
    from fastckpt.sidecar import read_sidecar

    shard = next(f for f in os.listdir(root) if f.endswith(".distcp"))
    m = read_sidecar(root / (shard + ".fastckpt")).manifest
    e = next(t for t in m.tensor_entries() if t.key.startswith("v"))
    with open(root / shard, "r+b") as f:
        f.seek(e.offset + 3)
        f.write(b"\x00\x01")
    with pytest.raises(CorruptCheckpointError) as ei:
        fdcp.load({"w": torch.zeros(256, 256), "v": torch.zeros(100)}, root)
    assert ei.value.damaged == ["v"]
    # Unprotected shards load with a warning, or are refused with require_digests=True.
    os.unlink(root / (shard + ".fastckpt"))
    with pytest.raises(CorruptCheckpointError, match="no sidecar"):
        fdcp.load({"w": torch.zeros(256, 256)}, root, require_digests=True)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("FASTCKPT_EVIL_MARK", "/nonexistent/x"),))


def test_metadata_is_never_unpickled_unsafely(tmp_path, monkeypatch) -> None:
    import fastckpt.dcp as fdcp

    root = tmp_path / "c"
    root.mkdir()
    mark = tmp_path / "pwned"
    monkeypatch.setenv("FASTCKPT_EVIL_MARK", str(mark))
    (root / ".metadata").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputError, match=r"posix\.system|os\.system"):
        fdcp.FileSystemReader(root).read_metadata()
    assert not mark.exists()
