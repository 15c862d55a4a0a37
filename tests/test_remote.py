"""Remote storage against a real S3-compatible server (moto's standalone server on loopback) through
the real s3fs client: ranged readers, hashing, layouts, and verify / inspect / diff / report on
s3:// and file:// URLs, each checked against the same command on the local copy."""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from fastckpt import remote
from fastckpt.digest import DEFAULT_LEAF_SIZE, hash_bytes, hash_file
from fastckpt.errors import InputError
from remote_helpers import S3Server, s3_server

torch = pytest.importorskip("torch")

LEAF = DEFAULT_LEAF_SIZE


@pytest.fixture(scope="module")
def s3() -> S3Server:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    from report_helpers import make_run

    folder = str(tmp_path_factory.mktemp("remote-run"))
    make_run(torch, folder, steps=(1, 2, 3))
    return folder


def _no_volatile(r: dict) -> dict:
    """A report without the fields that name the location or depend on timing."""
    out = json.loads(json.dumps(r))
    for key in ("run", "timings", "warnings", "interval"):
        out.pop(key, None)
    for c in out["checkpoints"]:
        for key in ("path", "mtime"):
            c.pop(key, None)
    out["size"]["growth"].pop("run_bytes_per_day")  # from modification (upload) times
    return out


# ---------------------------------------------------------------------------------------------
# Readers and hashing
# ---------------------------------------------------------------------------------------------


def test_urls_and_paths() -> None:
    assert remote.is_url("s3://b/k") and remote.is_url("gs://b/k") and remote.is_url("memory://x")
    assert not remote.is_url("/tmp/x") and not remote.is_url("file:///tmp/x") and not remote.is_url("C:x")
    assert remote.local_path("file:///tmp/a%20b") == "/tmp/a b"
    assert remote.local_path("file://localhost/tmp/x") == "/tmp/x"
    assert remote.join("s3://b/run/", "step_1.pt") == "s3://b/run/step_1.pt"


@pytest.mark.parametrize("size", [0, 1, LEAF - 1, LEAF, LEAF + 1, 3 * LEAF + 17])
def test_hash_url_equals_local_hash(s3: S3Server, tmp_path, size: int, monkeypatch) -> None:
    # Small chunks so that a few hundred KiB already take several parallel ranged reads.
    monkeypatch.setattr(remote, "CHUNK", 2 * LEAF)
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    url = f"s3://bucket/hash/{size}.bin"
    s3.upload(str(path), url)
    got = remote.hash_url(url, threads=2)
    assert got.hex() == hash_file(path).hex() == hash_bytes(data).hex()
    assert got.leaf_bytes == hash_file(path).leaf_bytes
    chunks = list(remote.iter_leaf_digests(url, LEAF, chunk=2 * LEAF))
    assert [first for first, _ in chunks] == list(range(0, -(-size // LEAF), 2))
    assert b"".join(d for _, d in chunks) == got.leaf_bytes


def test_range_reader_bounds_and_parallel_ranges(s3: S3Server, tmp_path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "x").write_bytes(data)
    s3.upload(str(tmp_path / "x"), "s3://bucket/reader/x")
    with remote.open_reader("s3://bucket/reader/x", concurrency=4) as r:
        assert r.size == len(data)
        ranges = [(0, 10), (299_990, 10), (1234, 100_000), (5, 0)]
        assert r.read_ranges(ranges) == [data[o : o + n] for o, n in ranges]
        assert b"".join(r.iter_ranges([(o, 1000) for o in range(0, 300_000, 1000)], ahead=3)) == data
        with pytest.raises(InputError, match="within the object"):
            r.read(299_999, 2)
    with pytest.raises(InputError, match=r"no object|there is none"):
        remote.open_reader("s3://bucket/reader/missing")


def test_remote_file_view_reads_like_the_file(s3: S3Server, tmp_path, local_run) -> None:
    from fastckpt.formats import read_layout
    from fastckpt.formats._io import FileView

    src = os.path.join(local_run, "step_1.pt")
    s3.upload(src, "s3://bucket/view/step_1.pt")
    with FileView(src) as fv, remote.RemoteFileView("s3://bucket/view/step_1.pt") as rv:
        assert rv.size == fv.size
        for off, n in ((0, 4), (fv.size - 22, 22), (100, 3 << 20 if fv.size > 3 << 20 else fv.size - 100)):
            assert rv.read(off, n) == fv.read(off, n)
        assert rv.u32(0) == fv.u32(0) and rv.u64(8) == fv.u64(8)
        assert rv.rfind(b"PK\x05\x06", 0, rv.size) == fv.rfind(b"PK\x05\x06", 0, fv.size)
        assert bytes(rv.buf[:100]) == bytes(fv.buf[:100])
    local = read_layout(src, check_crc=True)
    far = read_layout("s3://bucket/view/step_1.pt", check_crc=True)
    assert far.format == local.format == "torch-zip"
    assert far.tensors == local.tensors and far.segments == local.segments and far.problems == local.problems


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def _damaged_copy(src: str, dst: str, offset: int) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x40]))


def test_verify_url_with_sidecar_matches_local(s3: S3Server, tmp_path, local_run, cli) -> None:
    from fastckpt.protect import protect_file
    from fastckpt.remote_verify import verify_url_file
    from fastckpt.verify import verify_path

    src = str(tmp_path / "step.pt")
    shutil.copyfile(os.path.join(local_run, "step_2.pt"), src)
    protect_file(src)
    s3.upload(src, "s3://bucket/v/step.pt")
    s3.upload(src + ".fastckpt", "s3://bucket/v/step.pt.fastckpt")
    ok = verify_path("s3://bucket/v/step.pt")
    assert ok["ok"] and ok["check"] == "manifest" and ok["leaves_checked"] == -(-os.path.getsize(src) // LEAF)

    offset = os.path.getsize(src) // 2 + 3
    bad_local = str(tmp_path / "bad.pt")
    _damaged_copy(src, bad_local, offset)
    s3.upload(bad_local, "s3://bucket/v/bad.pt")
    s3.upload(src + ".fastckpt", "s3://bucket/v/bad.pt.fastckpt")
    shutil.copyfile(src + ".fastckpt", bad_local + ".fastckpt")
    seen: list[int] = []
    far = verify_url_file("s3://bucket/v/bad.pt", on_damage=lambda leaf, t: seen.append(leaf))
    near = verify_path(bad_local)
    assert not far["ok"] and far["damaged"] == near["damaged"] and far["problems"] == near["problems"]
    assert seen == [offset // LEAF]

    out = cli(["verify", "s3://bucket/v/bad.pt", "--json"], env=s3.env)
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["damaged"] == near["damaged"]
    assert cli(["verify", "s3://bucket/v/step.pt"], env=s3.env).returncode == 0


def test_verify_url_structural_and_truncated(s3: S3Server, tmp_path, local_run) -> None:
    from fastckpt.verify import verify_path

    src = os.path.join(local_run, "step_3.pt")
    s3.upload(src, "s3://bucket/s/ok.pt")
    r = verify_path("s3://bucket/s/ok.pt")
    assert r["ok"] and r["check"] == "structural"
    bad = str(tmp_path / "bad.pt")
    _damaged_copy(src, bad, os.path.getsize(src) // 2)
    s3.upload(bad, "s3://bucket/s/bad.pt")
    far, near = verify_path("s3://bucket/s/bad.pt"), verify_path(bad)
    assert not far["ok"] and [p["kind"] for p in far["problems"]] == [p["kind"] for p in near["problems"]]
    assert "bad-crc" in [p["kind"] for p in far["problems"]]


def test_verify_url_folder_with_directory_manifest(s3: S3Server, tmp_path, local_run, cli) -> None:
    from fastckpt.verify import verify_path

    folder = str(tmp_path / "ckpt")
    shutil.copytree(local_run, folder)
    assert cli(["protect", folder, "-q"]).returncode == 0
    s3.upload(folder, "s3://bucket/dir/ckpt")
    r = verify_path("s3://bucket/dir/ckpt")
    assert (
        r["ok"] and r["manifest"] and sorted(f["file"] for f in r["files"]) == sorted(os.listdir(local_run))
    )
    s3.fs.rm("bucket/dir/ckpt/step_2.pt")
    s3.invalidate()
    r = verify_path("s3://bucket/dir/ckpt")
    assert not r["ok"] and r["missing"] == ["step_2.pt"]
    out = cli(["verify", "s3://bucket/dir/ckpt", "--json"], env=s3.env)
    assert out.returncode == 1 and json.loads(out.stdout)["missing"] == ["step_2.pt"]


def test_verify_url_errors_are_one_line(s3: S3Server, cli) -> None:
    out = cli(["verify", "s3://bucket/nothing/here.pt"], env=s3.env)
    assert out.returncode == 2 and out.stderr.startswith("fastckpt: error: s3://bucket/nothing/here.pt")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# inspect, diff, report
# ---------------------------------------------------------------------------------------------


def test_inspect_url_equals_local(s3: S3Server, local_run, cli) -> None:
    src = os.path.join(local_run, "step_1.pt")
    s3.upload(src, "s3://bucket/i/step_1.pt")
    far = cli(["inspect", "s3://bucket/i/step_1.pt", "--json"], env=s3.env)
    near = cli(["inspect", src, "--json"])
    assert far.returncode == near.returncode == 0, far.stderr
    a, b = json.loads(far.stdout), json.loads(near.stdout)
    for d in (a, b):
        d.pop("path", None)
        d.pop("size", None)
    assert a["tensors"] == b["tensors"] and a["format"] == b["format"]


def test_diff_urls_equal_local_diff(s3: S3Server, local_run) -> None:
    from fastckpt.diff import diff

    a, b = (os.path.join(local_run, f"step_{i}.pt") for i in (1, 2))
    s3.upload(a, "s3://bucket/d/a.pt")
    s3.upload(b, "s3://bucket/d/b.pt")
    far = diff("s3://bucket/d/a.pt", "s3://bucket/d/b.pt")
    near = diff(a, b)
    assert [(t.key, t.status, t.max_abs_diff, t.n_different) for t in far.tensors] == [
        (t.key, t.status, t.max_abs_diff, t.n_different) for t in near.tensors
    ]
    mixed = diff(a, "s3://bucket/d/a.pt")
    assert mixed.identical


def test_report_url_equals_local_report(s3: S3Server, tmp_path, local_run, cli) -> None:
    from fastckpt.report import build_report

    s3.upload(local_run, "s3://bucket/r/run")
    far = build_report("s3://bucket/r/run")
    near = build_report(local_run)
    assert [c["path"] for c in far["checkpoints"]] == [f"s3://bucket/r/run/step_{i}.pt" for i in (1, 2, 3)]
    assert _no_volatile(far) == _no_volatile(near)
    # With sidecars uploaded too, the digests come from them.
    folder = str(tmp_path / "protected")
    shutil.copytree(local_run, folder)
    assert cli(["protect", folder, "-q"]).returncode == 0
    s3.upload(folder, "s3://bucket/r/protected")
    far2 = build_report("s3://bucket/r/protected")
    assert all(c["digests"] == "sidecar" for c in far2["checkpoints"])
    assert far2["dedup"]["shared_fraction"] == near["dedup"]["shared_fraction"]
    out = cli(["report", "s3://bucket/r/run", "--json"], env=s3.env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["dedup"]["shared_fraction"] == near["dedup"]["shared_fraction"]


def test_file_urls(local_run, cli, tmp_path) -> None:
    from fastckpt.report import build_report

    url = "file://" + local_run
    assert _no_volatile(build_report(url)) == _no_volatile(build_report(local_run))
    assert cli(["verify", url + "/step_1.pt"]).returncode == 0
    assert cli(["inspect", url + "/step_1.pt", "--json"]).returncode == 0
