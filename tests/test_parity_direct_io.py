"""Parity moved with direct I/O: protect writes the streamed parity through an O_DIRECT descriptor,
and verify checks it with direct reads on a thread beside the file hash (sidecar_parity.py).

The bytes must be exactly those of the buffered path (`write_sidecar_with_parity`), whichever way
they went; file systems without direct I/O, and a probe write that fails, fall back to the page
cache; damage to the parity is found either way.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct

import numpy as np
import pytest
import xxhash

import fastckpt.sidecar_parity as sp
from fastckpt.errors import InputError
from fastckpt.sidecar import read_sidecar


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def direct_io_works(folder: str) -> bool:
    """Whether this folder's file system takes an aligned O_DIRECT write (what protect probes)."""
    path = os.path.join(folder, "probe.direct")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        return False
    try:
        return os.pwrite(fd, mmap.mmap(-1, 4096), 0) == 4096
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(path)


@pytest.fixture
def spy(monkeypatch):  # type: ignore[no-untyped-def]
    """Direct I/O from the first byte of parity on; records what each direct open returned."""
    monkeypatch.setattr(sp, "DIRECT_MIN_BYTES", 0)
    opened: list[int | None] = []
    real = sp._open_direct

    def recording(path: str, flags: int) -> int | None:
        fd = real(path, flags)
        opened.append(fd)
        return fd

    monkeypatch.setattr(sp, "_open_direct", recording)
    return opened


def _opaque(tmp_path, n: int = 9 * 65536 + 3) -> str:
    p = str(tmp_path / "m.bin")
    with open(p, "wb") as f:
        f.write(random_bytes(n, 4))
    return p


def _plain_sidecar_bytes(tmp_path, p: str, pct: float = 5) -> bytes:
    import fastckpt.protect as pr

    manifest, _, params, parity = pr.build_manifest_with_parity(p, redundancy=pct)
    plain = str(tmp_path / "plain.fastckpt")
    sp.write_sidecar_with_parity(plain, manifest, parity=parity, params=params)
    with open(plain, "rb") as f:
        data = f.read()
    os.unlink(plain)
    return data


@pytest.mark.parametrize("pct", [5, 30])  # the fused kernel (m <= 8) and the unfused one
def test_protect_writes_parity_directly_and_bytes_equal_plain_write(tmp_path, spy, pct: float) -> None:
    import fastckpt.protect as pr

    p = _opaque(tmp_path)
    assert pr.protect_file(p, redundancy=pct).written
    with open(p + ".fastckpt", "rb") as f:
        assert f.read() == _plain_sidecar_bytes(tmp_path, p, pct)
    assert (spy[:1] != [None]) == direct_io_works(str(tmp_path)), spy
    assert not read_sidecar(p + ".fastckpt").damaged
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin.fastckpt"]


def test_protect_with_the_writer_thread_and_direct_io(tmp_path, monkeypatch) -> None:
    """Over the 8 MiB threshold at the real settings: the native writer thread writes windows of
    many groups through the direct descriptor; the sidecar is still exactly the plain one."""
    import fastckpt.protect as pr

    p = _opaque(tmp_path, 40 * (1 << 20) + 12345)
    assert pr.protect_file(p, redundancy=25).written  # 10 MiB of parity
    with open(p + ".fastckpt", "rb") as f:
        assert f.read() == _plain_sidecar_bytes(tmp_path, p, 25)


def test_protect_falls_back_when_direct_io_is_refused(tmp_path, spy, monkeypatch) -> None:
    """No O_DIRECT here (open refused), then a probe write that fails (EINVAL, as from a file system
    that opens but cannot do it): both write through the page cache, with the same bytes."""
    import fastckpt.protect as pr

    p = _opaque(tmp_path)
    want = _plain_sidecar_bytes(tmp_path, p)
    monkeypatch.setattr(sp, "_open_direct", lambda path, flags: None)
    assert pr.protect_file(p, redundancy=5, force=True).written
    with open(p + ".fastckpt", "rb") as f:
        assert f.read() == want

    monkeypatch.undo()
    monkeypatch.setattr(sp, "DIRECT_MIN_BYTES", 0)
    probe = mmap.mmap(-1, 4096)
    monkeypatch.setattr(sp, "_aligned_zeros", lambda: probe)
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        if data is probe:
            refused.append(fd)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    os.unlink(p + ".fastckpt")
    assert pr.protect_file(p, redundancy=5).written
    with open(p + ".fastckpt", "rb") as f:
        assert f.read() == want
    assert len(refused) == (1 if direct_io_works(str(tmp_path)) else 0)


def _parity_leaf_offset(spath: str, leaf: int) -> tuple[int, int]:
    sc = read_sidecar(spath)
    sec = sp.parity_section_of(sc.manifest, path=spath)
    assert sec is not None
    return sc.bulk_offset + sec.parity_offset + leaf * sec.leaf_size, sec.parity_leaves


def test_direct_parity_digests_equal_the_mapped_ones(tmp_path, spy) -> None:
    import fastckpt.protect as pr

    p = _opaque(tmp_path, 3 * (1 << 20) + 77)
    pr.protect_file(p, redundancy=10)
    spath = p + ".fastckpt"
    sc = read_sidecar(spath)
    sec = sp.parity_section_of(sc.manifest, path=spath)
    assert sec is not None
    start = sc.bulk_offset + sec.parity_offset
    got = sp._parity_digests_direct(spath, start, sec.parity_length, sec.leaf_size, 1)
    if not direct_io_works(str(tmp_path)):
        assert got is None
        return
    with open(spath, "rb") as f:
        f.seek(start)
        parity = f.read(sec.parity_length)
    want = b"".join(
        struct.pack("<Q", xxhash.xxh3_64_intdigest(parity[i : i + sec.leaf_size]))
        for i in range(0, len(parity), sec.leaf_size)
    )
    assert got == want == sec.leaf_bytes
    # Unaligned or short requests are declined (the caller maps the file instead).
    assert sp._parity_digests_direct(spath, start + 512, sec.parity_length, sec.leaf_size, 1) is None
    assert sp._parity_digests_direct(spath, start, sec.parity_length, 1000, 1) is None
    assert sp._parity_digests_direct(spath, start, os.path.getsize(spath), sec.leaf_size, 1) is None


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_verify_finds_damaged_parity_through_direct_reads(tmp_path, spy, where: str) -> None:
    import fastckpt.protect as pr
    from fastckpt.verify import verify_with_sidecar

    p = _opaque(tmp_path, 3 * (1 << 20) + 77)
    pr.protect_file(p, redundancy=10)
    spath = p + ".fastckpt"
    assert verify_with_sidecar(p, spath)["ok"]
    _, n = _parity_leaf_offset(spath, 0)
    leaf = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    off, _ = _parity_leaf_offset(spath, leaf)
    with open(spath, "r+b") as f:
        f.seek(off + 4097)
        b = f.read(1)
        f.seek(off + 4097)
        f.write(bytes([b[0] ^ 0x10]))
    spy.clear()
    rep = verify_with_sidecar(p, spath)
    assert rep["ok"]  # the checkpoint itself is intact
    assert rep["sidecar_damaged"] is True
    assert rep["sidecar_problems"] == [f"1 of {n} parity leaves are damaged (first: parity leaf {leaf})"]
    assert (spy[:1] != [None]) == direct_io_works(str(tmp_path))


def test_verify_reports_a_truncated_sidecar_parity(tmp_path, spy) -> None:
    """A sidecar cut inside its parity: the direct read declines (the file ends early) and the mapped
    path counts the missing leaves as damaged."""
    import fastckpt.protect as pr
    from fastckpt.verify import verify_with_sidecar

    p = _opaque(tmp_path, 3 * (1 << 20) + 77)
    pr.protect_file(p, redundancy=10)
    spath = p + ".fastckpt"
    _, n = _parity_leaf_offset(spath, 0)
    cut = n // 2
    assert 0 < cut < n
    off, _ = _parity_leaf_offset(spath, cut)
    os.truncate(spath, off + 100)
    rep = verify_with_sidecar(p, spath)
    assert rep["ok"] and rep["sidecar_damaged"] is True
    want = f"{n - cut} of {n} parity leaves are damaged (first: parity leaf {cut})"
    assert want in rep["sidecar_problems"], rep["sidecar_problems"]


def test_verify_raises_what_the_parity_check_raised(tmp_path, monkeypatch, capsys) -> None:
    """The parity check runs on its own thread: its error still reaches the caller (and the CLI's
    one-line error with exit 2), after the hash."""
    import fastckpt.protect as pr
    from fastckpt.cli import main

    p = _opaque(tmp_path)
    pr.protect_file(p, redundancy=5)

    def broken(sc, *, threads: int = 0):  # type: ignore[no-untyped-def]
        raise InputError(sc.path, 123, "a readable parity area (injected)")

    monkeypatch.setattr(sp, "parity_problems", broken)
    assert main(["verify", p]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "injected" in err[0] and "123" in err[0], err


def test_repair_with_parity_checked_on_its_thread(tmp_path, spy) -> None:
    """Repair checks the parity on a thread while it hashes the file: a damaged data leaf and a
    damaged parity leaf are both found, the file comes back byte for byte, the sidecar is restored."""
    import hashlib

    import fastckpt.protect as pr
    from fastckpt.repair import repair_file
    from fastckpt.verify import verify_with_sidecar

    p = _opaque(tmp_path, 3 * (1 << 20) + 77)
    with open(p, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    pr.protect_file(p, redundancy=10)
    spath = p + ".fastckpt"
    off, n = _parity_leaf_offset(spath, 1)
    with open(spath, "r+b") as f:
        f.seek(off + 9)
        b = f.read(1)
        f.seek(off + 9)
        f.write(bytes([b[0] ^ 1]))
    with open(p, "r+b") as f:
        f.seek(5 * 65536 + 100)
        b = f.read(1)
        f.seek(5 * 65536 + 100)
        f.write(bytes([b[0] ^ 0x80]))
    rep = repair_file(p, backup=False)
    assert rep["ok"] and rep["repaired"] and rep["sidecar_restored"], rep
    assert rep["sidecar_damaged"] is True and "1 damaged parity leaves" in rep["sidecar_problems"]
    assert rep["parity"]["damaged_leaves"] == 1 and rep["rebuilt_from_parity"] == 1
    with open(p, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want
    after = verify_with_sidecar(p, spath)
    assert after["ok"] and not after["sidecar_damaged"], after
    assert n > 1


def test_repair_raises_what_the_parity_load_raised(tmp_path, monkeypatch, capsys) -> None:
    import fastckpt.protect as pr
    import fastckpt.repair as repair
    from fastckpt.cli import main

    p = _opaque(tmp_path)
    pr.protect_file(p, redundancy=5)
    with open(p, "r+b") as f:
        f.write(b"\xff\xfe")

    def broken(path, bulk_offset, sec, *, threads: int = 0):  # type: ignore[no-untyped-def]
        raise InputError(path, 4096, "readable parity (injected)")

    monkeypatch.setattr(repair, "load_parity", broken)
    assert main(["repair", p]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "injected" in err[0] and "4096" in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin.fastckpt"]


def test_direct_parity_checks_from_several_threads(tmp_path, spy) -> None:
    """One read buffer is kept for the process; a thread that finds it in use reads into its own, so
    checks running at once (verify of several files from several threads) never mix their bytes."""
    import threading

    import fastckpt.protect as pr

    if not direct_io_works(str(tmp_path)):
        pytest.skip("no direct I/O in the test folder")
    jobs = []
    for i in range(4):
        folder = tmp_path / f"d{i}"
        folder.mkdir()
        p = str(folder / "m.bin")
        with open(p, "wb") as f:
            f.write(random_bytes(9 * (1 << 20) + 77 * i, 40 + i))  # over the 4 MiB read buffer
        pr.protect_file(p, redundancy=10)
        sc = read_sidecar(p + ".fastckpt")
        sec = sp.parity_section_of(sc.manifest, path=sc.path)
        assert sec is not None
        jobs.append((sc.path, sc.bulk_offset + sec.parity_offset, sec))
    results: dict[int, object] = {}

    def check(i: int) -> None:
        path, start, sec = jobs[i % len(jobs)]
        for _ in range(3):
            got = sp._parity_digests_direct(path, start, sec.parity_length, sec.leaf_size, 1)
            if got != sec.leaf_bytes:
                results[i] = got
                return
        results[i] = True

    threads = [threading.Thread(target=check, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(8)}


def test_verify_reports_the_hash_error_over_the_parity_check_error(tmp_path, monkeypatch, capsys) -> None:
    """Both the file hash and the parity check on its thread fail: the file's error is the one the
    user sees (a missing file is found before the parity is read at all)."""
    import fastckpt.digest as digest
    import fastckpt.protect as pr
    from fastckpt.cli import main

    p = _opaque(tmp_path)
    pr.protect_file(p, redundancy=5)
    started = []

    def broken(sc, *, threads: int = 0):  # type: ignore[no-untyped-def]
        started.append(sc.path)
        raise InputError(sc.path, 123, "a readable parity area (injected)")

    monkeypatch.setattr(sp, "parity_problems", broken)

    def unreadable(path, **kwargs):  # type: ignore[no-untyped-def]
        raise InputError(path, 77, "a readable file (injected into the hash)")

    monkeypatch.setattr(digest, "hash_file", unreadable)
    assert main(["verify", p]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "injected into the hash" in err[0], err
    assert started == [p + ".fastckpt"]

    started.clear()
    os.rename(p, p + ".gone")
    assert main(["verify", "--sidecar", p + ".fastckpt", p]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err
    assert started == []
