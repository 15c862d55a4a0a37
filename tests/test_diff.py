"""The CPU bitwise-diff kernel against the numpy reference (bit for bit, every dtype, boundary
sizes, special values, unaligned addresses, thread counts), the semantics of docs/DIFF_SEMANTICS.md
on hand-derived cases, and the Python API (`compare_tensors`, `compare_many`, `compare_buffers`).
"""

from __future__ import annotations

import math
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt
from fastckpt import _native
from fastckpt._diff_reference import FLOAT_FORMATS, TILE_BYTES, itemsize, reference_diff

DTYPES = sorted(_native.diff_dtypes())
FLOATS = sorted(FLOAT_FORMATS)


ISAS = _native.diff_isas()


def native(a: bytes | memoryview, b: bytes | memoryview, dtype: str, threads: int = 0) -> dict:
    """The kernel's statistics, ||A||^2 ("sum_sq_a") included, after checking that every kernel
    usable on this CPU (scalar, AVX2, AVX-512) returns the same bits, with and without norm_a."""
    results = [dict(_native.diff_buffers(a, b, dtype, threads, norm_a=True, isa=isa)) for isa in ISAS]
    for isa, r in zip(ISAS, results, strict=True):
        assert r == results[0], (isa, ISAS[0])
        plain = dict(_native.diff_buffers(a, b, dtype, threads, isa=isa))
        assert plain == {k: v for k, v in r.items() if k != "sum_sq_a"}, (isa, "norm_a=False")
    return results[-1]


def reference(a: bytes | memoryview, b: bytes | memoryview, dtype: str) -> dict:
    return reference_diff(a, b, dtype, norm_a=True)


def mutate(data: bytes, fraction: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    mask = rng.random(arr.size) < fraction
    arr[mask] = rng.integers(0, 256, int(mask.sum()), dtype=np.uint8)
    return arr.tobytes()


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_dtype_table_matches_reference() -> None:
    table = _native.diff_dtypes()
    assert set(table) == set(DTYPES)
    for name, (has_floats, size) in table.items():
        assert size == itemsize(name)
        assert has_floats == (name in FLOAT_FORMATS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_bits_every_dtype_boundary_sizes(dtype: str) -> None:
    size = itemsize(dtype)
    tile_elems = TILE_BYTES // size
    for n_elems in (0, 1, 2, 15, 16, 17, tile_elems - 1, tile_elems, tile_elems + 1, 3 * tile_elems + 5):
        a = random_bytes(n_elems * size, seed=n_elems)
        for fraction in (0.0, 0.001, 0.3, 1.0):
            b = mutate(a, fraction, seed=n_elems + 1)
            assert native(a, b, dtype) == reference(a, b, dtype), (n_elems, fraction)


def special_patterns(dtype: str) -> list[int]:
    """Bit patterns of zeros, subnormals, normals, the largest finite, infinities and NaN payloads."""
    width, e_bits, m_bits = FLOAT_FORMATS[dtype]
    sign = 1 << (width - 1)
    exp_all = ((1 << e_bits) - 1) << m_bits
    man_all = (1 << m_bits) - 1
    one = ((1 << (e_bits - 1)) - 1) << m_bits
    pats = [0, 1, man_all, 1 << m_bits, one, one + 1, exp_all - 1, exp_all, exp_all | 1, exp_all | man_all]
    if m_bits > 1:
        pats += [exp_all | (1 << (m_bits - 1)), exp_all | 2]
    pats += [p | sign for p in pats]
    return sorted({p & ((1 << width) - 1) for p in pats})


@pytest.mark.parametrize("dtype", FLOATS)
def test_every_pair_of_special_values(dtype: str) -> None:
    pats = special_patterns(dtype)
    width = FLOAT_FORMATS[dtype][0]
    np_u = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    a = np.array([x for x in pats for _ in pats], dtype=np_u).tobytes()
    b = np.array([y for _ in pats for y in pats], dtype=np_u).tobytes()
    assert native(a, b, dtype) == reference(a, b, dtype)
    assert native(b, a, dtype) == reference(b, a, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_realistic_perturbations(dtype: str) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(300_001).astype(dtype)
    b = (a + rng.standard_normal(a.size).astype(dtype) * np.asarray(1e-3, dtype=dtype)).astype(dtype)
    b[::7] = a[::7]
    b[123] = np.nan
    a[456] = np.inf
    assert native(a.tobytes(), b.tobytes(), dtype) == reference(a.tobytes(), b.tobytes(), dtype)


@pytest.mark.parametrize("offset", [1, 2, 3, 4, 8, 15])
def test_unaligned_buffers(offset: int) -> None:
    a = random_bytes(3 * TILE_BYTES + 64 + 16, seed=offset)
    b = mutate(a, 0.05, seed=offset)
    va = memoryview(a)[offset : offset + 3 * TILE_BYTES + 64]
    vb = memoryview(b)[16 - offset : 16 - offset + 3 * TILE_BYTES + 64]
    for dtype in ("float32", "bfloat16", "float64", "int8", "complex128"):
        assert native(va, vb, dtype) == reference(va, vb, dtype)


def test_thread_count_does_not_change_any_bit() -> None:
    a = random_bytes(9 << 20, seed=11)  # above the threading threshold
    b = mutate(a, 0.2, seed=12)
    results = [native(a, b, "bfloat16", threads) for threads in (1, 2, 3, 0)]
    assert all(r == results[0] for r in results)
    assert results[0] == reference(a, b, "bfloat16")


def pack(fmt: str, values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}{fmt}", *values)


def test_semantics_hand_derived() -> None:
    nan_a = struct.unpack("<f", struct.pack("<I", 0x7FC00000))[0]
    # -0 vs +0: bits differ, values equal: counted, one ULP, no abs/rel difference.
    s = native(pack("f", [0.0]), pack("f", [-0.0]), "float32")
    assert (s["n_different"], s["max_abs_diff"], s["max_rel_diff"], s["max_ulp"]) == (1, 0.0, 0.0, 1)
    # NaN payloads: different bits, both NaN: counted as different, no NaN/Inf mismatch.
    a = struct.pack("<I", 0x7FC00000)
    b = struct.pack("<I", 0x7FC00001)
    s = native(a, b, "float32")
    assert (s["n_different"], s["nan_inf_introduced"], s["nan_inf_removed"]) == (1, 0, 0)
    # Finite -> NaN is introduced; Inf -> finite is removed; NaN -> +Inf is both.
    s = native(pack("f", [1.0, math.inf, nan_a]), pack("f", [nan_a, 2.0, math.inf]), "float32")
    assert (s["n_different"], s["nan_inf_introduced"], s["nan_inf_removed"]) == (3, 2, 2)
    assert s["max_abs_diff"] == 0.0  # no finite pair differs
    # a == 0, b != 0: relative difference is infinite.
    s = native(pack("d", [0.0, 4.0]), pack("d", [1e-300, 5.0]), "float64")
    assert s["max_rel_diff"] == math.inf
    assert s["max_abs_diff"] == 1.0
    assert s["first_diff_index"] == 0
    # 1.0 vs the next float32 up: one ULP, |a-b| = 2^-23.
    s = native(pack("f", [1.0]), struct.pack("<I", 0x3F800001), "float32")
    assert (s["max_ulp"], s["max_abs_diff"], s["max_rel_diff"]) == (1, 2.0**-23, 2.0**-23)
    # Across zero: +1 smallest subnormal vs -1 smallest subnormal is 3 ULPs (+d, +0, -0, -d).
    s = native(struct.pack("<I", 1), struct.pack("<I", 0x80000001), "float32")
    assert s["max_ulp"] == 3
    # float8_e4m3fn: 0x7E (448) is finite, 0x7F is NaN.
    s = native(bytes([0x7E]), bytes([0x7D]), "float8_e4m3fn")
    assert (s["max_abs_diff"], s["nan_inf_introduced"]) == (32.0, 0)
    s = native(bytes([0x7E]), bytes([0x7F]), "float8_e4m3fn")
    assert s["nan_inf_introduced"] == 1
    # Integers: counts and first index only.
    s = native(pack("q", [1, 2, 3, 4]), pack("q", [1, 5, 3, 6]), "int64")
    assert (s["n_different"], s["first_diff_index"], s["float_stats"]) == (2, 1, False)


def test_overflowing_difference_is_infinite_not_nan() -> None:
    s = native(pack("d", [1.7e308]), pack("d", [-1.7e308]), "float64")
    assert s["max_abs_diff"] == math.inf
    assert s["sum_sq_diff"] == math.inf
    assert s["max_rel_diff"] == math.inf


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(DTYPES),
    st.binary(min_size=0, max_size=4096),
    st.binary(min_size=0, max_size=4096),
)
def test_property_matches_reference(dtype: str, x: bytes, y: bytes) -> None:
    size = itemsize(dtype)
    n = min(len(x), len(y)) // size * size
    a, b = x[:n], y[:n]
    assert native(a, b, dtype) == reference(a, b, dtype)
    assert native(a, a, dtype)["n_different"] == 0


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown dtype 'float128'.*float32"):
        _native.diff_buffers(b"1234", b"1234", "float128")
    with pytest.raises(ValueError, match="differ in length"):
        _native.diff_buffers(b"1234", b"123", "uint8")
    with pytest.raises(ValueError, match="not a multiple"):
        _native.diff_buffers(b"123", b"123", "float32")
    with pytest.raises(ValueError, match="null address"):
        _native.diff_buffers_at(0, 0, 4, "float32")


def test_diff_buffers_at_matches_buffer_entry_point() -> None:
    a = np.frombuffer(random_bytes(100_000, seed=2), dtype=np.uint8)
    b = np.frombuffer(mutate(a.tobytes(), 0.01, seed=3), dtype=np.uint8)
    at = _native.diff_buffers_at(a.ctypes.data, b.ctypes.data, a.size, "float16")
    assert at == _native.diff_buffers(a, b, "float16")


# ---- Python API ----


def test_compare_numpy_arrays_and_result_fields() -> None:
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    b = a.copy()
    b[3, 7] = 0.0
    d = fastckpt.compare_tensors(a, b)
    assert not d.equal
    assert (d.n_elements, d.n_different, d.first_diff_index) == (1000, 1, 307)
    assert d.max_abs_diff == 307.0 and d.max_rel_diff == 1.0
    assert d.mean_abs_diff == 307.0 / 1000
    assert d.rms_diff == math.sqrt(307.0**2 / 1000)
    assert (d.dtype, d.shape) == ("float32", (10, 100))
    assert fastckpt.compare_tensors(a, a.copy()).equal
    assert d.to_dict()["shape"] == [10, 100]


def test_compare_non_contiguous_numpy_uses_logical_order() -> None:
    a = np.arange(64, dtype=np.int16).reshape(8, 8)
    b = a.copy()
    b[1, 0] = -1
    d = fastckpt.compare_tensors(a.T, b.T)
    assert d.first_diff_index == 0 * 8 + 1  # (0, 1) of the transposed view
    assert d.max_abs_diff is None  # integers: counts only


def test_compare_buffers() -> None:
    a = pack("e", [1.0, 2.0, 3.0])
    b = pack("e", [1.0, 2.5, 3.0])
    d = fastckpt.compare_buffers(a, b, "float16", (3,))
    assert (d.n_different, d.first_diff_index, d.max_abs_diff) == (1, 1, 0.5)
    with pytest.raises(fastckpt.UsageError, match="unknown dtype"):
        fastckpt.compare_buffers(a, b, "nope")


def test_mismatched_inputs_are_usage_errors() -> None:
    with pytest.raises(fastckpt.UsageError, match="dtype and shape must match"):
        fastckpt.compare_tensors(np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(fastckpt.UsageError, match="dtype and shape must match"):
        fastckpt.compare_tensors(np.zeros(3, np.float32), np.zeros(3, np.float64))
    with pytest.raises(fastckpt.UsageError, match="torch tensors or numpy arrays"):
        fastckpt.compare_tensors([1, 2], [1, 2])


torch = pytest.importorskip("torch")

TORCH_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.complex64,
    torch.complex128,
]  # fmt: skip


def random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(
        0, 256, (int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size(),), generator=g
    )
    raw = raw.to(torch.uint8)
    if dtype == torch.bool:
        raw &= 1  # copies of a bool tensor canonicalize other bytes to 0/1
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_torch_tensors_match_reference(dtype: torch.dtype) -> None:
    a = random_tensor((37, 129), dtype, seed=1)
    b = a.clone()
    flat = b.view(-1).view(torch.uint8)
    flat[::97] ^= 1 if dtype == torch.bool else 0x5A
    d = fastckpt.compare_tensors(a, b)
    name = str(dtype).removeprefix("torch.")
    ref = reference_diff(a.view(torch.uint8).numpy().tobytes(), b.view(torch.uint8).numpy().tobytes(), name)
    assert d == fastckpt.TensorDiff.from_stats(ref, name, (37, 129))


def test_torch_non_contiguous_and_views() -> None:
    a = torch.randn(64, 48)
    b = a.clone()
    b[5, 40] += 1
    d = fastckpt.compare_tensors(a.t(), b.t())
    assert d.first_diff_index == 40 * 64 + 5
    assert d == fastckpt.compare_tensors(a.t().contiguous(), b.t().contiguous())
    # A view at an odd byte offset (unaligned data pointer).
    base_a = torch.arange(1001, dtype=torch.uint8)
    base_b = base_a.clone()
    base_b[500] = 0
    d = fastckpt.compare_tensors(base_a[1:], base_b[1:])
    assert (d.n_different, d.first_diff_index) == (1, 499)


def test_compare_many_runs_small_cpu_pairs_side_by_side() -> None:
    """Many small CPU pairs go to a thread pool: every result lands on its own pair and equals the
    numpy reference (sizes straddle the 64 KiB GIL threshold and the 8 MiB threading threshold)."""
    g = torch.Generator().manual_seed(9)
    pairs = []
    for i, n in enumerate([0, 1, 7, 8191, 16384, 16385, 40000, 3 << 20, 5, 100_000] * 3):
        a = torch.randn(n, generator=g).to(torch.bfloat16 if i % 2 else torch.float32)
        b = a.clone()
        if n and i % 3:
            b[(i * 7919) % n] += 1
        pairs.append((a, b))
    many = fastckpt.compare_many(pairs, threads=2)
    for (a, b), d in zip(pairs, many, strict=True):
        ref = reference_diff(
            a.view(torch.uint8).numpy().tobytes(), b.view(torch.uint8).numpy().tobytes(), d.dtype
        )
        assert (d.n_elements, d.n_different, d.first_diff_index) == (
            ref["n_elements"],
            ref["n_different"],
            ref["first_diff_index"] if ref["first_diff_index"] >= 0 else None,
        )
        assert d == fastckpt.compare_tensors(a, b, threads=1)


def test_compare_many_mixed_inputs() -> None:
    a = torch.ones(10)
    pairs = [(a, a.clone()), (np.ones(3), np.zeros(3)), (a.int(), a.int() + 1)]
    out = fastckpt.compare_many(pairs)
    assert [d.equal for d in out] == [True, False, False]
    assert out[2].n_different == 10


def test_torch_mismatch_is_usage_error() -> None:
    with pytest.raises(fastckpt.UsageError, match="dtype and shape must match"):
        fastckpt.compare_tensors(torch.zeros(3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(fastckpt.UsageError, match="pass two torch tensors"):
        fastckpt.compare_tensors(torch.zeros(3), np.zeros(3, np.float32))


def test_module_does_not_import_torch_for_numpy() -> None:
    import subprocess

    code = (
        "import sys, numpy as np, fastckpt\n"
        "fastckpt.compare_tensors(np.zeros(4), np.ones(4))\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_large_diff_releases_the_gil() -> None:
    import threading
    import time

    a = np.zeros(16 << 20, dtype=np.float32)
    b = np.ones(16 << 20, dtype=np.float32)  # every element differs: the slow path, many switch intervals
    window: list[float] = []

    def worker() -> None:
        window.append(time.perf_counter())
        _native.diff_buffers(a, b, "float32", 1)
        window.append(time.perf_counter())

    ticks: list[float] = []
    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    start, end = window
    assert end - start > 0.02, "call too short to tell; enlarge the buffers"
    assert [x for x in ticks if start + 0.75 * (end - start) < x < end], (len(ticks), end - start)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16", "float8_e5m2", "int32"])
def test_sparse_changes_at_block_and_row_edges(dtype: str) -> None:
    size = itemsize(dtype)
    n = (2 * TILE_BYTES + 4096 + 72) // size  # a short last row and a partial last 64-byte block
    a = random_bytes(n * size, seed=21)
    arr = bytearray(a)
    for e in (
        0,
        1,
        15,
        16,
        63 // size,
        64 // size,
        4096 // size - 1,
        4096 // size,
        TILE_BYTES // size,
        n - 1,
    ):
        arr[e * size] ^= 0x11
    b = bytes(arr)
    assert native(a, b, dtype) == reference(a, b, dtype)


# ---- ||A||^2 and the vector tile kernels -------------------------------------------------------


def test_isa_names() -> None:
    assert ISAS[0] == "scalar"
    assert set(ISAS) <= {"scalar", "avx2", "avx512"}
    a = b"\0" * 8
    assert _native.diff_buffers(a, a, "float32", isa="") == _native.diff_buffers(
        a, a, "float32", isa=ISAS[-1]
    )
    with pytest.raises(ValueError, match="not usable"):
        _native.diff_buffers(a, a, "float32", isa="sse9")


def test_norm_a_flag_only_adds_sum_sq_a() -> None:
    """Without norm_a the kernels skip equal blocks inside differing tiles (nothing to square):
    every other statistic must be the same bits."""
    a = random_bytes(2 * TILE_BYTES + 40, seed=31)
    b = mutate(a, 0.001, seed=32)
    for dtype in [*FLOATS, "int16"]:
        with_norm = native(a, b, dtype)
        assert with_norm["n_different"] > 0
        for isa in ISAS:
            plain = dict(_native.diff_buffers(a, b, dtype, isa=isa))
            assert "sum_sq_a" not in plain
            assert {k: v for k, v in with_norm.items() if k != "sum_sq_a"} == plain, (dtype, isa)
    for dtype in ("float32", "bfloat16", "int16"):
        with_norm = native(a, b, dtype)
        at = _native.diff_buffers_at(
            np.frombuffer(a, np.uint8).ctypes.data,
            np.frombuffer(b, np.uint8).ctypes.data,
            len(a),
            dtype,
            norm_a=True,
        )
        assert dict(at) == with_norm
    assert native(a, a, "float32")["sum_sq_a"] is None  # equal: not computed
    assert native(a, b, "int16")["sum_sq_a"] is None  # no float statistics


@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values_fill_full_tiles(dtype: str) -> None:
    """Every pair of special values, repeated over several full tiles so that the vector kernels see
    them in every lane position (the short special-value test above stays in the scalar tail)."""
    pats = special_patterns(dtype)
    width = FLOAT_FORMATS[dtype][0]
    np_u = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    xa = np.array([x for x in pats for _ in pats], dtype=np_u)
    xb = np.array([y for _ in pats for y in pats], dtype=np_u)
    reps = -(-3 * TILE_BYTES // xa.nbytes)
    rng = np.random.default_rng(width)
    order = rng.permutation(reps * xa.size)
    a = np.tile(xa, reps)[order].tobytes()
    b = np.tile(xb, reps)[order].tobytes()
    assert native(a, b, dtype) == reference(a, b, dtype)
    assert native(b, a, dtype) == reference(b, a, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_boundary_lengths_up_to_4160_elements(dtype: str) -> None:
    size = itemsize(dtype)
    lengths = set(range(0, 70))
    for w in (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
        lengths |= {w - 1, w, w + 1}
    lengths |= {4159, 4160}
    big = random_bytes(4160 * size, seed=size)
    other = mutate(big, 0.5, seed=size + 1)
    for n in sorted(lengths):
        a, b = big[: n * size], other[: n * size]
        assert native(a, b, dtype) == reference(a, b, dtype), n


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "float16"])
def test_norm_of_partly_equal_tensors(dtype: str) -> None:
    """Equal tiles are skipped by the difference pass and summed for ||A|| afterwards; their a^2
    must land in the same canonical order as the differing tiles'."""
    size = itemsize(dtype)
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(5 * TILE_BYTES // size + 7) * 3).astype(np.float64)
    if dtype == "bfloat16":
        raw_a = (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        raw_a = a.astype(dtype).tobytes()
    for tiles in ([0], [4], [1, 3], [5]):  # the differing tiles (5: the short last one)
        arr = bytearray(raw_a)
        for t in tiles:
            arr[t * TILE_BYTES + 2 * size] ^= 0x01
        b = bytes(arr)
        assert native(raw_a, b, dtype) == reference(raw_a, b, dtype), tiles
        for threads in (1, 2):
            assert native(raw_a, b, dtype, threads) == native(raw_a, b, dtype), threads


def test_norm_thread_count_does_not_change_any_bit() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal(9 << 18).astype(np.float32)  # 9 MiB: above the threading threshold
    b = a.copy()
    b[: a.size // 3] += np.float32(1e-3)  # a third differs: two thirds of the tiles are summed later
    results = [native(a.tobytes(), b.tobytes(), "float32", threads) for threads in (1, 2, 3, 0)]
    assert all(r == results[0] for r in results)
    assert results[0] == reference(a.tobytes(), b.tobytes(), "float32")
    assert math.isclose(
        math.sqrt(results[0]["sum_sq_a"]), float(np.linalg.norm(a.astype(np.float64))), rel_tol=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(FLOATS),
    st.binary(min_size=1, max_size=512),
    st.integers(min_value=0, max_value=2 * TILE_BYTES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=40),
    st.integers(min_value=0, max_value=15),
)
def test_property_full_tiles_match_reference(
    dtype: str, pattern: bytes, extra: int, edits: list[tuple[int, int]], offset: int
) -> None:
    """Hypothesis-drawn contents large enough for the vector tile kernels (>= one full tile),
    at a drawn misalignment, with drawn byte edits in b."""
    size = itemsize(dtype)
    n = (TILE_BYTES + extra) // size * size
    a = bytearray((pattern * (n // len(pattern) + 16))[offset : offset + n])
    b = bytearray(a)
    for pos, val in edits:
        b[pos % n] = val
    # The kernel reads misaligned views; the reference reads plain copies of the same bytes.
    va = memoryview(bytes(offset) + bytes(a))[offset:]
    vb = memoryview(bytes(15 - offset) + bytes(b))[15 - offset :]
    assert native(va, vb, dtype) == reference(bytes(a), bytes(b), dtype)


def test_flush_denormal_mode_does_not_change_results() -> None:
    """torch.set_flush_denormal(True) sets FTZ/DAZ on the calling thread, which runs the kernel when
    threads=1; subnormals must still be compared exactly."""
    rng = np.random.default_rng(8)
    for dtype, np_t in (("float32", np.uint32), ("float64", np.uint64), ("float16", np.uint16)):
        width = FLOAT_FORMATS[dtype][0]
        man = (1 << FLOAT_FORMATS[dtype][2]) - 1
        n = 3 * TILE_BYTES // (width // 8)
        a = rng.integers(1, man, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << (width - 1))
        b = a ^ np.uint64(1)
        ra, rb = a.astype(np_t).tobytes(), b.astype(np_t).tobytes()
        want = reference(ra, rb, dtype)
        assert want["sum_abs_diff"] > 0
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU has no flush-denormal mode")
        try:
            assert native(ra, rb, dtype, threads=1) == want
        finally:
            torch.set_flush_denormal(False)
