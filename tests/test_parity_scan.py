"""The fused protect pass (`_native.rs_scan`, `parity.scan_file`) and protect's use of it.

Every result is checked against independent references: `xxhash` for leaf digests, `zlib.crc32`
for CRCs, the numpy encoder of `_parity_reference` for parity, and `read_layout(check_crc=True)` /
a hash of each tensor's own bytes for what `protect` records.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastckpt import _native, hash_bytes
from fastckpt import _parity_reference as ref
from fastckpt.digest import digest_from_leaves
from fastckpt.errors import InputError, UsageError
from fastckpt.parity import ParityParams, n_leaves_of, scan_file

ISAS = _native.rs_available_isas()


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def ref_leaves(data: bytes, leaf: int) -> bytes:
    return b"".join(
        struct.pack("<Q", xxhash.xxh3_64_intdigest(data[i : i + leaf])) for i in range(0, len(data), leaf)
    )


def code_for(size: int, leaf: int, pct: float) -> tuple[int, int, int]:
    if not pct:
        return 0, 0, 0
    p = ParityParams.from_redundancy(pct, n_leaves_of(size, leaf))
    return p.k, p.m, p.groups


def check_scan(
    buf: object,
    data: bytes,
    leaf: int,
    pct: float,
    spans: list[tuple[int, int]],
    crc_spans: list[tuple[int, int]],
    *,
    threads: int = 1,
    isa: str = "",
) -> None:
    k, m, g = code_for(len(data), leaf, pct)
    size, leaves, parity, span_leaves, crcs, parity_leaves = _native.rs_scan(
        buf, leaf, k, m, g, spans, crc_spans, threads, isa
    )
    assert size == len(data)
    assert leaves == ref_leaves(data, leaf)
    assert parity == (ref.encode(data, leaf, k, m, g) if m else b"")
    assert parity_leaves == ref_leaves(parity, leaf)
    assert span_leaves == b"".join(ref_leaves(data[o : o + n], leaf) for o, n in spans)
    assert crcs == [zlib.crc32(data[o : o + n]) for o, n in crc_spans]


def spans_around(size: int, leaf: int) -> list[tuple[int, int]]:
    """Spans that start just before, at and just after leaf edges (so that their leaves straddle the
    pass's ranges), empty ones, the whole range and one ending at the very end."""
    out = [(0, size), (0, 0), (size, 0)]
    for edge in range(0, size, leaf):
        for d in (-65, -1, 0, 1, 64):
            o = edge + d
            if 0 <= o <= size:
                out.append((o, min(size - o, 3 * leaf + 7)))
    out.append((max(0, size - leaf - 3), min(size, leaf + 3)))
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pct", [0, 5, 30])  # none, the fused kernel (m <= 8), the unfused path (m > 8)
@pytest.mark.parametrize("leaf", [64, 256, 4096])
@pytest.mark.parametrize("extra", [0, 1, 63])
def test_scan_matches_references(isa: str, pct: float, leaf: int, extra: int) -> None:
    size = 37 * leaf + extra
    data = random_bytes(size, leaf + extra)
    spans = spans_around(size, leaf)
    crc_spans = spans[::-1]
    check_scan(data, data, leaf, pct, spans, crc_spans, isa=isa)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 240, 241, 4095, 4096, 4097])
@pytest.mark.parametrize("pct", [0, 5])
def test_scan_boundary_sizes(size: int, pct: float) -> None:
    data = random_bytes(size, size)
    spans = [(0, size), (size // 3, size - size // 3), (size, 0)]
    check_scan(data, data, 4096, pct, spans, spans, isa="")


@pytest.mark.parametrize("offset", [1, 3, 17, 63])
def test_scan_unaligned_buffer(offset: int) -> None:
    leaf = 1024
    data = random_bytes(50 * leaf + 5, offset)
    backing = np.zeros(len(data) + 128, dtype=np.uint8)
    start = (offset - backing.ctypes.data) % 64
    view = backing[start : start + len(data)]
    view[:] = np.frombuffer(data, dtype=np.uint8)
    assert view.ctypes.data % 64 == offset
    for pct in (0, 5):
        check_scan(view, data, leaf, pct, spans_around(len(data), leaf), [(1, len(data) - 2)])


@pytest.mark.slow
@pytest.mark.parametrize("pct", [0, 5])
def test_scan_threaded_large(pct: float) -> None:
    leaf = 65536
    data = random_bytes((20 << 20) + 12345, 99)  # above the threading threshold, a short last leaf
    rng = np.random.default_rng(5)
    spans = [(int(o), int(rng.integers(0, len(data) - o))) for o in rng.integers(0, len(data), 40)]
    spans += [(64 * 1001, len(data) - 64 * 1001)]  # a large tensor off every leaf edge
    check_scan(data, data, leaf, pct, spans, spans[::-1], threads=2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_scan_hypothesis(data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from([64, 128, 1024]))
    size = data.draw(st.integers(0, 40 * leaf))
    pct = data.draw(st.sampled_from([0, 5, 12.5, 50]))
    raw = random_bytes(size, size)

    def span() -> tuple[int, int]:
        o = data.draw(st.integers(0, size))
        return o, data.draw(st.integers(0, size - o))

    spans = [span() for _ in range(data.draw(st.integers(0, 6)))]
    crc_spans = [span() for _ in range(data.draw(st.integers(0, 6)))]
    check_scan(raw, raw, leaf, pct, spans, crc_spans, isa=data.draw(st.sampled_from(ISAS)))


def test_scan_rejects_bad_arguments() -> None:
    data = random_bytes(1000, 1)
    with pytest.raises(ValueError, match="does not lie inside"):
        _native.rs_scan(data, 64, 0, 0, 0, [(990, 11)], [])
    with pytest.raises(ValueError, match="does not lie inside"):
        _native.rs_scan(data, 64, 0, 0, 0, [], [(1001, 0)])
    with pytest.raises(ValueError, match="leaf_size"):
        _native.rs_scan(data, 100, 0, 0, 0, [], [])
    with pytest.raises(ValueError, match="groups"):
        _native.rs_scan(data, 64, 4, 1, 1, [], [])  # 16 leaves need at least 4 groups of 4
    with pytest.raises(ValueError, match="m must be"):
        _native.rs_scan(data, 64, 4, -1, 4, [], [])


@pytest.mark.parametrize("pct", [0, 5])
def test_scan_file(tmp_path, pct: float) -> None:
    data = random_bytes(5 * 65536 + 321, 11)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    spans = [(0, 0), (100, 70000), (65536 - 64, 2 * 65536), (len(data) - 10, 10)]
    crcs = [(0, len(data)), (7, 0), (65535, 2)]
    sc = scan_file(path, redundancy=pct, spans=spans, crc_spans=crcs)
    assert sc.size == len(data) and sc.leaf_bytes == hash_bytes(data).leaf_bytes
    assert sc.span_leaves == [ref_leaves(data[o : o + n], 65536) for o, n in spans]
    assert sc.crcs == [zlib.crc32(data[o : o + n]) for o, n in crcs]
    if pct:
        assert sc.params == ParityParams.from_redundancy(pct, 6)
        assert sc.parity == ref.encode(data, 65536, sc.params.k, sc.params.m, sc.params.groups)
        assert sc.parity_leaf_bytes == ref_leaves(sc.parity, 65536)
    else:
        assert sc.params is None and sc.parity == b""
    with pytest.raises(InputError):
        scan_file(path, spans=[(len(data) - 1, 2)])
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    sc = scan_file(empty, redundancy=pct, spans=[(0, 0)], crc_spans=[(0, 0)])
    assert (sc.size, sc.leaf_bytes, sc.parity, sc.span_leaves, sc.crcs) == (0, b"", b"", [b""], [0])


# ---- protect's use of the pass ----

torch = pytest.importorskip("torch")


def _save(path: str) -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {
        "a": torch.randn(70000, generator=g),  # leaves straddle file leaves
        "b": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "c": torch.arange(10, dtype=torch.int64)[2:7],  # a view: its span is not dense
        "e": torch.empty(0),
    }
    torch.save(sd, path)
    return sd


def test_protect_torch_file_uses_one_pass(tmp_path, monkeypatch) -> None:
    import fastckpt.protect as pr
    from fastckpt.digest import hash_file
    from fastckpt.formats import read_layout

    p = str(tmp_path / "m.pt")
    _save(p)
    calls: list[bool] = []
    real = pr.read_layout

    def spy(path: str, *, check_crc: bool = True):  # type: ignore[no-untyped-def]
        calls.append(check_crc)
        return real(path, check_crc=check_crc)

    monkeypatch.setattr(pr, "read_layout", spy)
    for pct in (0, 5):
        calls.clear()
        res = pr.protect_file(p, redundancy=pct)
        assert res.written and not res.problems
        assert calls == [False]  # the CRC check rode along with the fused pass
    manifest, layout, _, _ = pr.build_manifest_with_parity(p, redundancy=5)
    full = read_layout(p, check_crc=True)
    assert layout.problems == full.problems == [] and layout.info == full.info
    assert manifest.file_digest == hash_file(p).value
    with open(p, "rb") as f:
        data = f.read()
    by_key = {t.key: t for t in full.tensors}
    for entry in manifest.tensors:
        t = by_key[entry.key]
        raw = data[t.offset : t.offset + t.nbytes]
        if entry.flags == 0:
            want = digest_from_leaves(ref_leaves(raw, 65536), 65536, t.nbytes, t.dtype, tuple(t.shape))
        else:
            want = digest_from_leaves(ref_leaves(raw, 65536), 65536, t.nbytes)
        assert entry.digest == want.value, entry.key


def test_protect_refuses_bad_crc_found_by_the_pass(tmp_path) -> None:
    import fastckpt.protect as pr
    from fastckpt.formats import read_layout

    p = str(tmp_path / "m.pt")
    _save(p)
    (a,) = [t for t in read_layout(p).tensors if t.key == "a"]
    with open(p, "r+b") as f:
        f.seek(a.offset + 70001)
        b = f.read(1)
        f.seek(a.offset + 70001)
        f.write(bytes([b[0] ^ 4]))
    want = [{"offset": q.offset, "kind": q.kind, "message": q.message} for q in read_layout(p).problems]
    assert [q["kind"] for q in want] == ["bad-crc"]
    for pct in (0, 5):
        res = pr.protect_file(p, redundancy=pct)
        assert not res.written and res.problems == want and not os.path.exists(p + ".fastckpt")
        assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []  # the streamed temp is gone
    res = pr.protect_file(p, force=True)
    assert res.written and res.problems == want


def test_protect_without_recorded_crcs(tmp_path) -> None:
    import fastckpt.protect as pr
    from fastckpt.formats import read_layout

    p = str(tmp_path / "m.pt")
    cfg = torch.utils.serialization.config.save
    old = cfg.compute_crc32
    cfg.compute_crc32 = False
    try:
        _save(p)
    finally:
        cfg.compute_crc32 = old
    _, layout, _, _ = pr.build_manifest_with_parity(p, redundancy=5)
    assert layout.info == read_layout(p).info and layout.info.get("crc_recorded") is False
    assert pr.protect_file(p).written


@pytest.mark.parametrize(
    ("size", "leaf", "offset", "pct"),
    [
        (40 * 4096 + 5, 4096, 12345, 10),  # an unaligned offset
        (40 * 4096 + 5, 4096, 12288, 10),
        (300 * 1024 + 7, 1024, 8192, 5),  # small leaves
        # Over the 8 MiB thread threshold, with many more windows than the writer has buffers: the
        # workers and the writer thread hand buffers back and forth.
        (9 * 65536 * 16 + 4097, 65536, 4096, 5),
        (9 * 65536 * 16 + 4097, 65536, 4096, 25),
    ],
)
def test_scan_file_streams_parity(tmp_path, size: int, leaf: int, offset: int, pct: float) -> None:
    data = random_bytes(size, 21)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    out = tmp_path / "out"
    out.write_bytes(b"\xee" * offset)  # what lies before the parity is left alone
    fd = os.open(out, os.O_RDWR, 0o644)
    try:
        sc = scan_file(path, leaf_size=leaf, redundancy=pct, out_fd=fd, out_offset=offset, threads=2)
    finally:
        os.close(fd)
    assert sc.params is not None
    want = ref.encode(data, leaf, sc.params.k, sc.params.m, sc.params.groups)
    assert sc.parity == b""  # streamed, never held whole
    assert out.read_bytes() == b"\xee" * offset + want
    assert sc.parity_leaf_bytes == ref_leaves(want, leaf)
    assert sc.leaf_bytes == ref_leaves(data, leaf)


def _streamed(tmp_path, name: str, data_path, leaf: int, pct: float) -> tuple[bytes, object]:
    out = tmp_path / name
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        sc = scan_file(data_path, leaf_size=leaf, redundancy=pct, out_fd=fd, threads=2)
    finally:
        os.close(fd)
    return out.read_bytes(), sc


def test_scan_file_reuses_window_memory_across_scans(tmp_path) -> None:
    """The writer's window buffers outlive a scan (one arena is kept for the next): scans that need a
    larger, a smaller and then a larger arena again, one after another and from two threads at once,
    each write exactly the reference parity (stale bytes of an earlier scan must never leak in)."""
    import threading

    size = 9 * 65536 * 16 + 4097  # over the writer thread's 8 MiB threshold at 5 %
    paths = []
    for seed in (31, 32):
        path = tmp_path / f"d{seed}.bin"
        path.write_bytes(random_bytes(size, seed))
        paths.append(path)
    runs = [(paths[0], 65536, 25), (paths[1], 65536, 5), (paths[0], 16384, 5), (paths[1], 65536, 40)]

    def check(i: int, run: tuple) -> None:
        path, leaf, pct = run
        got, sc = _streamed(tmp_path, f"out{i}", path, leaf, pct)
        assert sc.params is not None
        want = ref.encode(path.read_bytes(), leaf, sc.params.k, sc.params.m, sc.params.groups)
        assert got == want, f"run {i} {run[1:]}: streamed parity differs from the reference"

    for i, run in enumerate(runs):
        check(i, run)
    errors: list[BaseException] = []

    def worker(i: int, run: tuple) -> None:
        try:
            check(10 + i, run)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, run)) for i, run in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_scan_file_stream_errors(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(random_bytes(40 * 4096 + 5, 21))
    with pytest.raises(OSError):
        scan_file(path, leaf_size=4096, redundancy=10, out_fd=987654)  # not an open file
    ro = tmp_path / "ro"
    ro.write_bytes(b"")
    fd = os.open(ro, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            scan_file(path, leaf_size=4096, redundancy=10, out_fd=fd, out_offset=4096)  # not writable
    finally:
        os.close(fd)
    if os.path.exists("/dev/full"):  # every write fails with ENOSPC: a full disk
        big = tmp_path / "big.bin"
        big.write_bytes(random_bytes(12 << 20, 5))  # >= 8 MiB of parity at 100 %: the writer thread
        for f, pct in ((path, 10), (big, 100)):
            fd = os.open("/dev/full", os.O_WRONLY)
            try:
                with pytest.raises(OSError) as err:
                    scan_file(f, leaf_size=4096, redundancy=pct, out_fd=fd)
                assert err.value.errno == errno.ENOSPC
            finally:
                os.close(fd)


def test_streamed_sidecar_moves_parity_when_the_shape_changes(tmp_path) -> None:
    """bulk_start placed the parity for one manifest shape; finish() gets another (protect --force
    re-reads a damaged file's layout): the parity is moved and the sidecar is exactly the plain one."""
    import fastckpt.protect as pr
    from fastckpt._record import replace as record_replace
    from fastckpt.sidecar import read_sidecar
    from fastckpt.sidecar_parity import StreamedSidecar, write_sidecar_with_parity

    p = str(tmp_path / "m.bin")
    with open(p, "wb") as f:
        f.write(random_bytes(9 * 65536 + 3, 4))
    manifest, _, params, parity = pr.build_manifest_with_parity(p, redundancy=5)
    assert params is not None
    # Long enough to push the bulk area one 4 KiB block further.
    other = record_replace(manifest, name="x" * 5000)
    spath = p + ".fastckpt"
    with StreamedSidecar(spath) as sink:
        start = sink.bulk_start(other, params)
        os.pwrite(sink.fd, parity, start)
        sink.finish(manifest, params, ref_leaves(parity, 65536))
    plain = str(tmp_path / "plain.fastckpt")
    write_sidecar_with_parity(plain, manifest, parity=parity, params=params)
    with open(spath, "rb") as a, open(plain, "rb") as b:
        assert a.read() == b.read()
    assert not read_sidecar(spath).damaged
    with StreamedSidecar(spath) as sink:
        sink.bulk_start(manifest, params)
        with pytest.raises(UsageError, match="parity leaf digests"):
            sink.finish(manifest, params, b"\0" * 3)
    with StreamedSidecar(spath) as sink, pytest.raises(UsageError, match="bulk_start"):
        sink.finish(manifest, params, ref_leaves(parity, 65536))
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin.fastckpt", "plain.fastckpt"]


@pytest.mark.parametrize("kind", ["opaque", "torch"])
def test_streamed_sidecar_bytes_equal_plain_write(tmp_path, kind: str) -> None:
    import fastckpt.protect as pr
    from fastckpt.sidecar import read_sidecar
    from fastckpt.sidecar_parity import write_sidecar_with_parity

    p = str(tmp_path / ("m.pt" if kind == "torch" else "m.bin"))
    if kind == "torch":
        _save(p)
    else:
        with open(p, "wb") as f:
            f.write(random_bytes(9 * 65536 + 3, 4))
    res = pr.protect_file(p, redundancy=5)
    assert res.written
    manifest, _, params, parity = pr.build_manifest_with_parity(p, redundancy=5)
    plain = str(tmp_path / "plain.fastckpt")
    write_sidecar_with_parity(plain, manifest, parity=parity, params=params)
    with open(p + ".fastckpt", "rb") as a, open(plain, "rb") as b:
        assert a.read() == b.read()
    back = read_sidecar(p + ".fastckpt")
    assert not back.damaged and back.manifest.file_digest == manifest.file_digest
    assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []


def test_protect_reports_a_failed_parity_write(tmp_path, monkeypatch, capsys) -> None:
    """A full disk while the parity streams into the sidecar: one line naming the sidecar, exit 2,
    no sidecar and no temp file left."""
    import fastckpt.parity as parity
    from fastckpt.cli import main

    p = tmp_path / "m.bin"
    p.write_bytes(random_bytes(300_000, 8))

    def full(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(parity, "scan_file", full)
    assert main(["protect", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fastckpt: error: {p}.fastckpt: No space left on device (writing the parity into its temporary file)"
    ]
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]


@pytest.mark.parametrize("pct", ["0", "5"])
def test_protect_reports_a_full_disk_while_writing_the_sidecar(
    tmp_path, monkeypatch, capsys, pct: str
) -> None:
    """os.pwrite failing with ENOSPC while the manifest copies are written (with parity: around the
    streamed parity; without: the whole sidecar): the error names the sidecar, nothing is left."""
    import fastckpt.sidecar as sidecar
    from fastckpt.cli import main

    p = tmp_path / "m.bin"
    p.write_bytes(random_bytes(300_000, 8))
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        if "m.bin.fastckpt" in os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(sidecar.os, "pwrite", pwrite)
    assert main(["protect", str(p), "--redundancy", pct]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastckpt: error: {p}.fastckpt: No space left on device"]
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]
