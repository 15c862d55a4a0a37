"""Parity engine: GF(2^8) arithmetic, the Cauchy matrix, encode and reconstruct on every kernel,
checked against the numpy reference (fastckpt._parity_reference) and against the original bytes."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastckpt import _native, hash_bytes
from fastckpt import _parity_reference as ref
from fastckpt.errors import UsageError
from fastckpt.parity import (
    ParityParams,
    UnrecoverableLeavesError,
    encode_file_parity,
    n_leaves_of,
    protect_buffer,
    protect_file,
    reconstruct_leaves,
)

ISAS = _native.rs_available_isas()
byte = st.integers(0, 255)
nonzero = st.integers(1, 255)


def slow_mul(a: int, b: int) -> int:
    """Carry-less multiply then reduce mod x^8+x^4+x^3+x^2+1: independent of the log/exp tables."""
    p = 0
    for i in range(8):
        if b >> i & 1:
            p ^= a << i
    for bit in range(14, 7, -1):
        if p >> bit & 1:
            p ^= 0x11D << (bit - 8)
    return p


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---- field arithmetic ----


def test_reference_tables_match_bitwise_multiply() -> None:
    for a in range(256):
        for b in range(256):
            assert ref.MUL[a, b] == slow_mul(a, b)
    # 2 generates the multiplicative group: its powers hit every nonzero element once.
    assert sorted(ref.EXP[:255].tolist()) == list(range(1, 256))


def test_every_nonzero_element_has_an_inverse() -> None:
    for a in range(1, 256):
        assert slow_mul(a, ref.gf_inv(a)) == 1
    with pytest.raises(ZeroDivisionError):
        ref.gf_inv(0)


@given(byte, byte, byte)
def test_field_axioms(a: int, b: int, c: int) -> None:
    mul = ref.gf_mul
    assert mul(a, b) == mul(b, a)
    assert mul(mul(a, b), c) == mul(a, mul(b, c))
    assert mul(a, b ^ c) == mul(a, b) ^ mul(a, c)
    assert mul(a, 1) == a and mul(a, 0) == 0
    assert (a ^ b) ^ b == a  # addition is XOR: every element is its own negative


@given(nonzero, nonzero)
def test_division(a: int, b: int) -> None:
    q = ref.gf_mul(a, ref.gf_inv(b))
    assert ref.gf_mul(q, b) == a


@pytest.mark.parametrize("isa", ISAS)
def test_native_multiply_every_coefficient(isa: str) -> None:
    data = bytes(range(256)) * 3 + b"\x01\x80\xff"
    for coef in range(256):
        assert _native.gf256_mul(data, coef, isa) == bytes(slow_mul(coef, x) for x in data)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("length", [0, 1, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 4097])
@pytest.mark.parametrize("offset", [0, 1, 7])
def test_native_multiply_lengths_and_alignment(isa: str, length: int, offset: int) -> None:
    buf = random_bytes(length + offset, length)
    view = memoryview(buf)[offset:]
    for coef in (0x02, 0x8E, 0xFF):
        assert _native.gf256_mul(view, coef, isa) == ref.gf_mul_bytes(coef, np.frombuffer(view, np.uint8)).tobytes()


# ---- the Cauchy matrix ----


@pytest.mark.parametrize(("k", "m"), [(1, 1), (3, 2), (60, 3), (64, 32), (200, 1), (128, 128), (255, 1)])
def test_native_cauchy_matches_reference(k: int, m: int) -> None:
    assert _native.gf256_cauchy(k, m) == ref.cauchy_matrix(k, m).tobytes()


def test_cauchy_points_distinct_for_every_allowed_shape() -> None:
    # x_r = k + r and y_j = j must be distinct field elements (the MDS condition of a Cauchy matrix).
    for k in range(1, 256):
        for m in range(1, 257 - k):
            xs, ys = set(range(k, k + m)), set(range(k))
            assert max(xs) <= 255 and not xs & ys


def _det_nonzero(sub: np.ndarray) -> bool:
    return ref.invert(sub) is not None


@pytest.mark.parametrize(("k", "m"), [(k, m) for k in range(1, 9) for m in range(1, 5)])
def test_every_square_submatrix_invertible_small(k: int, m: int) -> None:
    c = ref.cauchy_matrix(k, m)
    for size in range(1, min(k, m) + 1):
        for rows in itertools.combinations(range(m), size):
            for cols in itertools.combinations(range(k), size):
                assert _det_nonzero(c[np.ix_(rows, cols)]), (k, m, rows, cols)


@pytest.mark.parametrize(("k", "m"), [(60, 3), (100, 1), (50, 1), (64, 32), (60, 6), (200, 1), (64, 64)])
def test_square_submatrices_invertible_sampled(k: int, m: int) -> None:
    c = ref.cauchy_matrix(k, m)
    assert (c != 0).all()
    rng = np.random.default_rng(k * 1000 + m)
    for _ in range(150):
        size = int(rng.integers(1, min(k, m) + 1))
        rows = rng.choice(m, size, replace=False)
        cols = rng.choice(k, size, replace=False)
        assert _det_nonzero(c[np.ix_(rows, cols)])


def test_any_k_rows_of_generator_invertible() -> None:
    k, m = 6, 4
    gen = ref.generator_matrix(k, m)
    for rows in itertools.combinations(range(k + m), k):
        assert _det_nonzero(gen[list(rows)]), rows


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.data())
def test_native_invert_matches_reference(n: int, data: st.DataObject) -> None:
    cells = data.draw(st.lists(byte, min_size=n * n, max_size=n * n))
    if data.draw(st.booleans()) and n > 1:
        cells[n : 2 * n] = cells[:n]  # a repeated row: singular
    a = np.array(cells, dtype=np.uint8).reshape(n, n)
    expected = ref.invert(a)
    got = _native.gf256_invert(a.tobytes(), n)
    if expected is None:
        assert got is None
    else:
        assert got == expected.tobytes()
        assert (ref.matmul(a, expected) == np.eye(n, dtype=np.uint8)).all()


# ---- parameters ----


def test_from_redundancy_default_example() -> None:
    # The worked example of docs/FORMAT.md: a 2 GiB file of 64 KiB leaves at 5%.
    p = ParityParams.from_redundancy(5, 32768)
    assert (p.k, p.m, p.groups) == (60, 3, 547)
    assert p.max_burst_leaves == 1641


@settings(max_examples=300)
@given(st.floats(0.5, 100), st.integers(0, 10**8))
def test_from_redundancy_properties(pct: float, n: int) -> None:
    p = ParityParams.from_redundancy(pct, n)
    p.check(n)
    assert p.k + p.m <= 256
    if n:
        # Interleaving: a contiguous run of pct% of the leaves never hits a group more than m times.
        # (pct is taken in whole parts per million, hence the tolerance.)
        assert p.max_burst_leaves * 100 >= n * pct * (1 - 1e-4)
        # Redundancy is at least the request, and at most one parity leaf per group more...
        assert p.k * pct / 100 * (1 - 1e-4) <= p.m < p.k * pct / 100 * (1 + 1e-4) + 1
        # ...and once every group is full (n >= k0 * (k0 - 1)), k is the largest that m allows.
        big = ParityParams.from_redundancy(pct, 10**9)
        assert big.m / (big.k + 1) < pct / 100 * (1 + 1e-4) or big.k + big.m == 256
        if n >= big.k * (big.k - 1):
            assert (p.k, p.m) == (big.k, big.m)


@pytest.mark.parametrize("pct", [0.49, 100.1, -1, float("nan"), True, "5"])
def test_from_redundancy_rejects(pct: object) -> None:
    with pytest.raises(UsageError):
        ParityParams.from_redundancy(pct, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params", [ParityParams(0, 1, 1), ParityParams(4, 0, 1), ParityParams(200, 57, 1), ParityParams(2, 1, 7)]
)
def test_invalid_params_rejected(params: ParityParams) -> None:
    with pytest.raises(UsageError):
        encode_file_parity(bytes(6 * 64), 64, params)


def test_params_record_roundtrip() -> None:
    p = ParityParams.from_redundancy(5, 1000)
    assert ParityParams.from_dict(p.to_dict()) == p
    bad = dict(p.to_dict(), version=2)
    with pytest.raises(Exception, match="parity version 1"):
        ParityParams.from_dict(bad)


# ---- encode ----

L = 256  # small leaves keep the reference fast; the kernels see the same tiles as with 64 KiB


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", [0, 1, L - 1, L, L + 1, 7 * L, 60 * L - 3, 61 * L, 333 * L + 77])
@pytest.mark.parametrize(("k", "m"), [(None, None), (1, 1), (4, 2), (3, 5), (60, 3)])
def test_encode_matches_reference(isa: str, size: int, k: int | None, m: int | None) -> None:
    data = random_bytes(size, size)
    n = n_leaves_of(size, L)
    if k is None or m is None:
        params = ParityParams.from_redundancy(5, n)
    else:
        params = ParityParams(k, m, -(-n // k))
    parity = encode_file_parity(data, L, params, isa=isa)
    assert len(parity) == params.parity_nbytes(L)
    assert parity == ref.encode(data, L, params.k, params.m, params.groups)


@pytest.mark.parametrize("isa", ISAS)
def test_encode_unaligned_and_more_groups(isa: str) -> None:
    raw = random_bytes(50 * 1000 + 3, 5)
    view = memoryview(raw)[3:]
    n = n_leaves_of(len(view), 1024)
    for groups in (-(-n // 8), n // 2, n):
        params = ParityParams(8, 2, groups)
        assert encode_file_parity(view, 1024, params, isa=isa) == ref.encode(bytes(view), 1024, 8, 2, groups)


def test_widest_field_shape() -> None:
    data = random_bytes(300 * 64, 3)
    params = ParityParams(200, 56, 2)
    assert encode_file_parity(data, 64, params) == ref.encode(data, 64, 200, 56, 2)


@pytest.mark.parametrize("isa", ISAS)
def test_xor_parity_matches_reference(isa: str) -> None:
    data = random_bytes(37 * L + 5, 9)
    assert _native.rs_xor_encode(data, L, 7, 0, isa) == ref.xor_encode(data, L, 7)


@pytest.mark.parametrize("isa", ISAS)
def test_protect_buffer_is_hash_plus_parity(isa: str) -> None:
    data = np.frombuffer(random_bytes(123 * 4096 + 11, 4), dtype=np.uint8)
    params = ParityParams.from_redundancy(5, n_leaves_of(data.nbytes, 4096))
    leaves, parity = protect_buffer(data, 4096, params, isa=isa)
    assert leaves == hash_bytes(data, leaf_size=4096).leaf_bytes
    assert parity == encode_file_parity(data, 4096, params, isa="scalar")


def test_protect_file(tmp_path) -> None:
    data = random_bytes(3 * 65536 + 100, 6)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    res = protect_file(path, redundancy=10)
    assert res.size == len(data) and res.params == ParityParams.from_redundancy(10, 4)
    assert res.leaf_bytes == hash_bytes(data).leaf_bytes
    assert res.parity == ref.encode(data, 65536, res.params.k, res.params.m, res.params.groups)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    res = protect_file(empty)
    assert (res.size, res.leaf_bytes, res.parity, res.params.groups) == (0, b"", b"", 0)


@pytest.mark.slow
def test_threaded_encode_matches_reference() -> None:
    leaf = 65536
    data = np.frombuffer(random_bytes(24 << 20, 8), dtype=np.uint8)  # above the threading threshold
    params = ParityParams.from_redundancy(5, n_leaves_of(data.nbytes, leaf))
    par1 = encode_file_parity(data, leaf, params, threads=1)
    par2, _ = protect_buffer(data, leaf, params, threads=2)[::-1]
    assert par1 == par2 == ref.encode(data.tobytes(), leaf, params.k, params.m, params.groups)


# ---- reconstruct ----


def _check_rebuilt(data: bytes, size: int, leaf: int, rebuilt: dict[int, bytes]) -> None:
    for i, got in rebuilt.items():
        assert got == data[i * leaf : min((i + 1) * leaf, size)], i


@pytest.mark.parametrize("isa", ISAS)
def test_every_erasure_pattern_up_to_m(isa: str) -> None:
    k, m, groups, leaf = 5, 3, 2, 64
    size = 9 * leaf - 17  # 9 leaves: group 0 has 5 (the short last leaf), group 1 has 4 + one virtual
    data = random_bytes(size, 11)
    params = ParityParams(k, m, groups)
    parity = encode_file_parity(data, leaf, params)
    for g in range(groups):
        members = [s * groups + g for s in range(k) if s * groups + g < 9]
        parity_rows = [params.parity_leaf(g, r) for r in range(m)]
        slots = [("d", i) for i in members] + [("p", j) for j in parity_rows]
        for count in range(m + 1):
            for pattern in itertools.combinations(slots, count):
                dmg = [i for kind, i in pattern if kind == "d"]
                dmg_par = [j for kind, j in pattern if kind == "p"]
                # Garble the damaged leaves so a decoder that read them would be caught.
                broken = bytearray(data)
                for i in dmg:
                    broken[i * leaf : (i + 1) * leaf] = b"\xa5" * len(broken[i * leaf : (i + 1) * leaf])
                res = reconstruct_leaves(bytes(broken), size, leaf, params, parity, dmg, damaged_parity=dmg_par, isa=isa)
                assert res.complete and sorted(res.leaves) == sorted(dmg)
                _check_rebuilt(data, size, leaf, res.leaves)
                expected, lost = ref.reconstruct(bytes(broken), size, leaf, k, m, groups, parity, dmg, dmg_par)
                assert lost == [] and expected == res.leaves


@pytest.mark.parametrize("isa", ISAS)
def test_beyond_budget_reported(isa: str) -> None:
    leaf = 128
    size = 40 * leaf
    data = random_bytes(size, 12)
    params = ParityParams(10, 2, 4)
    parity = encode_file_parity(data, leaf, params)
    # Group 1 loses 3 data leaves (> m = 2); group 2 loses 1 data leaf and 2 parity leaves (1 > 0 left);
    # group 3 loses 2 data leaves: rebuildable.
    dmg = [1, 5, 9, 2, 3, 7]
    dmg_par = [params.parity_leaf(2, 0), params.parity_leaf(2, 1)]
    res = reconstruct_leaves(data, size, leaf, params, parity, dmg, damaged_parity=dmg_par, isa=isa)
    assert res.unrecoverable == (1, 2, 5, 9)
    assert [(g.group, g.leaves, g.parity_available) for g in res.lost_groups] == [(1, (1, 5, 9), 2), (2, (2,), 0)]
    assert sorted(res.leaves) == [3, 7]
    _check_rebuilt(data, size, leaf, res.leaves)
    ref_rebuilt, ref_lost = ref.reconstruct(data, size, leaf, 10, 2, 4, parity, dmg, dmg_par)
    assert ref_lost == list(res.unrecoverable) and ref_rebuilt == res.leaves
    with pytest.raises(UnrecoverableLeavesError, match="4 damaged leaves cannot be rebuilt") as err:
        res.raise_if_incomplete("x.pt")
    assert err.value.leaves == (1, 2, 5, 9)


@pytest.mark.parametrize("isa", ISAS)
def test_interleaving_spreads_a_burst(isa: str) -> None:
    leaf = 64
    n = 97
    size = n * leaf - 9
    data = random_bytes(size, 13)
    params = ParityParams.from_redundancy(10, n)
    burst = params.max_burst_leaves
    assert burst == params.m * params.groups and params.groups > 1
    parity = encode_file_parity(data, leaf, params)
    for start in range(n - burst + 1):
        dmg = range(start, start + burst)
        res = reconstruct_leaves(data, size, leaf, params, parity, dmg, isa=isa)
        assert res.complete and sorted(res.leaves) == list(dmg)
        _check_rebuilt(data, size, leaf, res.leaves)
    # One leaf more hits some group m + 1 times.
    res = reconstruct_leaves(data, size, leaf, params, parity, range(burst + 1), isa=isa)
    assert not res.complete


@pytest.mark.parametrize("isa", ISAS)
def test_truncated_tail_recovered(isa: str) -> None:
    leaf = 64
    n = 90
    size = n * leaf - 30
    data = random_bytes(size, 14)
    params = ParityParams.from_redundancy(5, n)
    parity = encode_file_parity(data, leaf, params)
    limit = params.max_burst_leaves
    for keep in sorted({0, 1, 63, 64, 65, size - 1, size - 31, (n - limit) * leaf, (n - limit) * leaf - 1}):
        lost_leaves = n - keep // leaf
        res = reconstruct_leaves(data[:keep], size, leaf, params, parity, [], isa=isa)
        if lost_leaves <= limit:
            assert res.complete and sorted(res.leaves) == list(range(keep // leaf, n)), keep
            _check_rebuilt(data, size, leaf, res.leaves)
            rebuilt = data[:keep][: (keep // leaf) * leaf] + b"".join(res.leaves[i] for i in sorted(res.leaves))
            assert rebuilt == data
        else:
            assert not res.complete
        expected, lost = ref.reconstruct(data[:keep], size, leaf, params.k, params.m, params.groups, parity, [])
        assert expected == res.leaves and lost == list(res.unrecoverable)


def test_appended_garbage_ignored() -> None:
    leaf = 64
    size = 20 * leaf + 5
    data = random_bytes(size, 15)
    params = ParityParams.from_redundancy(5, 21)
    parity = encode_file_parity(data, leaf, params)
    res = reconstruct_leaves(data + b"garbage" * 50, size, leaf, params, parity, [20])
    assert res.leaves == {20: data[20 * leaf :]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_reconstruct_matches_reference_random(data: st.DataObject) -> None:
    leaf = 64
    size = data.draw(st.integers(1, 150 * leaf))
    n = n_leaves_of(size, leaf)
    k = data.draw(st.integers(1, 20))
    m = data.draw(st.integers(1, 6))
    groups = data.draw(st.integers(-(-n // k), n))
    params = ParityParams(k, m, groups)
    original = random_bytes(size, size)
    parity = encode_file_parity(original, leaf, params)
    dmg = data.draw(st.sets(st.integers(0, n - 1), max_size=12))
    dmg_par = data.draw(st.sets(st.integers(0, m * groups - 1), max_size=4))
    keep = data.draw(st.integers(0, size + 100))
    buf = (original + b"\x00" * 100)[:keep]
    isa = data.draw(st.sampled_from(ISAS))
    res = reconstruct_leaves(buf, size, leaf, params, parity, dmg, damaged_parity=dmg_par, isa=isa)
    expected, lost = ref.reconstruct(buf, size, leaf, k, m, groups, parity, dmg, dmg_par)
    assert res.leaves == expected and list(res.unrecoverable) == lost
    _check_rebuilt(original, size, leaf, res.leaves)


def test_large_leaf_reconstruct_threads() -> None:
    leaf = 256 << 10  # wider than one tile
    size = 40 * leaf + 1234
    data = random_bytes(size, 16)
    params = ParityParams.from_redundancy(10, 41)  # one group, m = 5
    parity = encode_file_parity(data, leaf, params)
    assert parity == ref.encode(data, leaf, params.k, params.m, params.groups)
    for threads in (1, 2):
        res = reconstruct_leaves(data[: 38 * leaf + 5], size, leaf, params, parity, [3], threads=threads)
        assert sorted(res.leaves) == [3, 38, 39, 40]
        _check_rebuilt(data, size, leaf, res.leaves)


def test_reconstruct_validation() -> None:
    data = random_bytes(10 * 64, 17)
    params = ParityParams(10, 2, 1)
    parity = encode_file_parity(data, 64, params)
    with pytest.raises(UsageError, match="out of range"):
        reconstruct_leaves(data, len(data), 64, params, parity, [10])
    with pytest.raises(UsageError, match="parity leaf 2 is out of range"):
        reconstruct_leaves(data, len(data), 64, params, parity, [], damaged_parity=[2])
    with pytest.raises(UsageError, match="parity holds"):
        reconstruct_leaves(data, len(data), 64, params, parity[:-1], [1])
    with pytest.raises(UsageError, match="non-negative int"):
        reconstruct_leaves(data, len(data), 64, params, parity, [-1])
    with pytest.raises(UsageError, match="C-contiguous"):
        reconstruct_leaves(np.zeros((64, 20), np.uint8)[:, ::2], len(data), 64, params, parity, [1])
    with pytest.raises(ValueError, match="unknown parity instruction set"):
        reconstruct_leaves(data, len(data), 64, params, parity, [1], isa="neon")
    assert reconstruct_leaves(data, len(data), 64, params, parity, []).leaves == {}


def test_native_boundary_errors() -> None:
    with pytest.raises(ValueError, match="groups must be between"):
        _native.rs_encode(bytes(640), 64, 4, 1, 2)
    with pytest.raises(ValueError, match="leaf_size"):
        _native.rs_encode(bytes(640), 100, 4, 1, 3)
    with pytest.raises(ValueError, match="k \\+ m <= 256"):
        _native.gf256_cauchy(250, 7)
    with pytest.raises(TypeError):
        _native.rs_encode(np.zeros((8, 16), np.uint8)[:, ::2], 64, 1, 1, 1)


def test_mmap_can_be_closed_after_calls(tmp_path) -> None:
    import mmap

    path = tmp_path / "f"
    path.write_bytes(random_bytes(5 * 64 + 1, 18))
    params = ParityParams.from_redundancy(5, 6)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        parity = encode_file_parity(mm, 64, params)
        reconstruct_leaves(mm, 321, 64, params, parity, [0])
        with pytest.raises(UsageError):
            reconstruct_leaves(mm, 321, 64, params, parity[:3], [0])
    assert os.path.getsize(path) == 321
