"""numpy reference implementation of parity format v1 (docs/FORMAT.md, "Parity (Reed-Solomon)"): the
test oracle for the native engine.

It is written straight from the specification and shares no code with `csrc/`: the field is built
from log/exp tables, encoding is a matrix product over whole arrays, and decoding is the textbook one
(take any k surviving rows of the generator matrix [I; C], invert that k x k matrix, multiply), where
the native engine solves only for the erased leaves. It is slow; nothing outside tests and the
benchmark imports it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

POLYNOMIAL = 0x11D

U8 = npt.NDArray[np.uint8]


def _build_tables() -> tuple[U8, U8, U8]:
    exp = np.zeros(512, dtype=np.uint8)
    log = np.zeros(256, dtype=np.uint8)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLYNOMIAL
    exp[255:510] = exp[:255]
    a = np.arange(256)
    la = log[a].astype(np.int64)
    mul = exp[la[:, None] + la[None, :]]
    mul[0, :] = 0
    mul[:, 0] = 0
    return exp, log, mul.astype(np.uint8)


EXP, LOG, MUL = _build_tables()


def gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return int(EXP[int(LOG[a]) + int(LOG[b])])


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return int(EXP[255 - int(LOG[a])])


def gf_mul_bytes(coef: int, data: U8) -> U8:
    """coef * b for every byte b."""
    return MUL[coef][data]


def matmul(a: U8, b: U8) -> U8:
    """GF(2^8) product of (n x p) and (p x w) uint8 matrices."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.uint8)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j]:
                out[i] ^= MUL[a[i, j]][b[j]]
    return out


def invert(a: U8) -> U8 | None:
    """Inverse of a square GF(2^8) matrix by Gauss-Jordan elimination, or None if singular."""
    n = a.shape[0]
    aug = np.concatenate([a.astype(np.uint8), np.eye(n, dtype=np.uint8)], axis=1)
    for col in range(n):
        nz = np.nonzero(aug[col:, col])[0]
        if len(nz) == 0:
            return None
        p = col + int(nz[0])
        if p != col:
            aug[[col, p]] = aug[[p, col]]
        aug[col] = MUL[gf_inv(int(aug[col, col]))][aug[col]]
        for row in range(n):
            f = int(aug[row, col])
            if row != col and f:
                aug[row] ^= MUL[f][aug[col]]
    return aug[:, n:].copy()


def cauchy_matrix(k: int, m: int) -> U8:
    """The m x k parity rows: C[r, j] = 1 / (x_r + y_j) with x_r = k + r, y_j = j (+ is XOR)."""
    if k < 1 or m < 1 or k + m > 256:
        raise ValueError("need k >= 1, m >= 1, k + m <= 256")
    return np.array([[gf_inv((k + r) ^ j) for j in range(k)] for r in range(m)], dtype=np.uint8)


def generator_matrix(k: int, m: int) -> U8:
    """The (k + m) x k systematic generator [I_k; C]: codeword = G @ data."""
    return np.concatenate([np.eye(k, dtype=np.uint8), cauchy_matrix(k, m)], axis=0)


def _data_grid(data: bytes, leaf_size: int, k: int, groups: int) -> U8:
    """The data leaves as a (k, groups, leaf_size) array: [s, g] is leaf s * groups + g, zero-padded
    (the short last leaf, and the virtual leaves past the end)."""
    buf = np.zeros(k * groups * leaf_size, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return buf.reshape(k, groups, leaf_size)


def encode(data: bytes, leaf_size: int, k: int, m: int, groups: int) -> bytes:
    """Parity leaves r * groups + g, each leaf_size bytes."""
    n = -(-len(data) // leaf_size)
    if n == 0:
        return b""
    if not (-(-n // k) <= groups <= n):
        raise ValueError("need ceil(n / k) <= groups <= n")
    grid = _data_grid(data, leaf_size, k, groups)
    c = cauchy_matrix(k, m)
    parity = np.zeros((m, groups, leaf_size), dtype=np.uint8)
    for r in range(m):
        for s in range(k):
            parity[r] ^= MUL[c[r, s]][grid[s]]
    return parity.tobytes()


def xor_encode(data: bytes, leaf_size: int, groups: int) -> bytes:
    n = -(-len(data) // leaf_size)
    if n == 0:
        return b""
    k = -(-n // groups)
    return np.bitwise_xor.reduce(_data_grid(data, leaf_size, k, groups), axis=0).tobytes()


def reconstruct(
    data: bytes,
    size: int,
    leaf_size: int,
    k: int,
    m: int,
    groups: int,
    parity: bytes,
    damaged: Iterable[int],
    damaged_parity: Iterable[int] = (),
) -> tuple[dict[int, bytes], list[int]]:
    """Rebuilds the damaged data leaves of the original [0, size). Leaves not wholly inside `data`
    count as damaged. Returns ({leaf: bytes of its true length}, sorted unrecoverable leaves)."""
    n = -(-size // leaf_size)
    erased = set(damaged)
    erased |= {i for i in range(n) if min((i + 1) * leaf_size, size) > len(data)}
    bad_parity = set(damaged_parity)
    gen = generator_matrix(k, m)
    par = np.frombuffer(parity, dtype=np.uint8).reshape(m, groups, leaf_size)
    rebuilt: dict[int, bytes] = {}
    lost: list[int] = []
    for g in sorted({i % groups for i in erased}):
        members = [s * groups + g for s in range(k)]
        # Rows of [I; C] whose values we know: data positions not erased (virtual leaves past the end are
        # known zeros) and parity rows not damaged.
        rows: list[int] = []
        values: list[U8] = []
        for s, i in enumerate(members):
            if i not in erased:
                rows.append(s)
                leaf = np.zeros(leaf_size, dtype=np.uint8)
                if i < n:
                    chunk = np.frombuffer(data[i * leaf_size : min((i + 1) * leaf_size, size)], dtype=np.uint8)
                    leaf[: len(chunk)] = chunk
                values.append(leaf)
        for r in range(m):
            if r * groups + g not in bad_parity:
                rows.append(k + r)
                values.append(par[r, g])
        group_erased = sorted(i for i in members if i in erased)
        if len(rows) < k:
            lost += group_erased
            continue
        inverse = invert(gen[rows[:k]])
        assert inverse is not None, "a k x k submatrix of [I; C] was singular"
        solved = matmul(inverse, np.stack(values[:k]))
        for i in group_erased:
            rebuilt[i] = solved[i // groups, : min(leaf_size, size - i * leaf_size)].tobytes()
    return rebuilt, sorted(lost)
