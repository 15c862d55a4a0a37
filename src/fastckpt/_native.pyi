"""Type stubs for the private native module. Checked with `mypy --strict` in tests/test_stubs.py."""

from collections.abc import Sequence
from typing import TypedDict

from typing_extensions import Buffer, NotRequired

class CudaStatus(TypedDict):
    compiled: bool
    usable: bool
    device_count: int
    reason: str
    architectures: str

class DiffStats(TypedDict):
    n_elements: int
    n_different: int
    first_diff_index: int  # -1 when equal
    float_stats: bool  # False: the float fields are zero and meaningless (bitwise-only dtype)
    sum_abs_diff: float  # canonical-order float64 sums (docs/DIFF_SEMANTICS.md)
    sum_sq_diff: float
    max_abs_diff: float
    max_rel_diff: float
    max_ulp: int
    nan_inf_introduced: int
    nan_inf_removed: int
    # Only with norm_a=True: sum of a*a over A's finite elements in the canonical order, or None
    # when the buffers are equal or the dtype is compared bitwise only.
    sum_sq_a: NotRequired[float | None]

def xxh3_64(data: Buffer) -> int: ...
def xxh3_128(data: Buffer) -> int: ...
def leaf_digests(data: Buffer, leaf_size: int = 65536, threads: int = 0, isa: str = "") -> bytes: ...
def leaf_digests_at(
    address: int, nbytes: int, leaf_size: int = 65536, threads: int = 0, isa: str = ""
) -> bytes: ...
def hash_file(path: str, leaf_size: int = 65536, threads: int = 0, isa: str = "") -> tuple[int, bytes]: ...
def available_isas() -> list[str]: ...
def default_isa() -> str: ...
def cuda_status() -> CudaStatus: ...

# ---- bitwise diff ----
def diff_dtypes() -> dict[str, tuple[bool, int]]: ...
def diff_buffers(
    a: Buffer, b: Buffer, dtype: str, threads: int = 0, *, norm_a: bool = False, isa: str = ""
) -> DiffStats: ...
def diff_buffers_at(
    a_address: int,
    b_address: int,
    nbytes: int,
    dtype: str,
    threads: int = 0,
    *,
    norm_a: bool = False,
    isa: str = "",
) -> DiffStats: ...
def diff_isas() -> list[str]: ...

# ---- zip CRC-32 ----

def crc32(data: Buffer, value: int = 0, *, threads: int = 0, isa: str = "") -> int: ...
def crc32_ranges(
    data: Buffer, offsets: Sequence[int], lengths: Sequence[int], *, threads: int = 0, isa: str = ""
) -> list[int]: ...
def crc32_combine(crc1: int, crc2: int, len2: int) -> int: ...
def crc32_isas() -> list[str]: ...
def crc32_default_isa() -> str: ...

# ---- run report ----

def sumsq_dtypes() -> list[str]: ...
def sumsq_sequence(
    buffers: list[Buffer | None], dtype: str, threads: int = 0
) -> tuple[list[float], list[float]]: ...

# ---- Reed-Solomon parity ----
# Public API: fastckpt.parity. Parity leaf r * groups + g is row r of group g; data leaf i is in group i % groups.

def rs_encode(
    data: Buffer, leaf_size: int, k: int, m: int, groups: int, threads: int = 0, isa: str = ""
) -> bytes: ...
def rs_protect(
    data: Buffer, leaf_size: int, k: int, m: int, groups: int, threads: int = 0, isa: str = ""
) -> tuple[bytes, bytes]: ...
def rs_protect_file(
    path: str, leaf_size: int, k: int, m: int, groups: int, threads: int = 0, isa: str = ""
) -> tuple[int, bytes, bytes]: ...
def rs_scan(
    data: Buffer,
    leaf_size: int,
    k: int,
    m: int,
    groups: int,
    spans: Sequence[tuple[int, int]],
    crc_spans: Sequence[tuple[int, int]],
    threads: int = 0,
    isa: str = "",
) -> tuple[int, bytes, bytes, bytes, list[int], bytes]: ...
def rs_scan_file(
    path: str,
    leaf_size: int,
    k: int,
    m: int,
    groups: int,
    spans: Sequence[tuple[int, int]],
    crc_spans: Sequence[tuple[int, int]],
    threads: int = 0,
    isa: str = "",
    out_fd: int = -1,
    out_offset: int = 0,
) -> tuple[int, bytes, bytes, bytes, list[int], bytes]: ...
def rs_reconstruct(
    data: Buffer,
    size: int,
    leaf_size: int,
    k: int,
    m: int,
    groups: int,
    parity: Buffer,
    damaged: Sequence[int],
    damaged_parity: Sequence[int] = ...,
    threads: int = 0,
    isa: str = "",
) -> tuple[list[int], list[int], bytes]: ...
def rs_xor_encode(data: Buffer, leaf_size: int, groups: int, threads: int = 0, isa: str = "") -> bytes: ...
def gf256_mul(data: Buffer, coef: int, isa: str = "") -> bytes: ...
def gf256_cauchy(k: int, m: int) -> bytes: ...
def gf256_invert(matrix: Buffer, n: int) -> bytes | None: ...
def rs_available_isas() -> list[str]: ...
def rs_default_isa() -> str: ...

# ---- CUDA entry points ----
def cuda_leaf_digests(
    tensors: Sequence[tuple[int, int]], leaf_size: int, device: int, stream: int
) -> list[bytes]: ...
def cuda_diff(pairs: Sequence[tuple[int, int, int, str]], device: int, stream: int) -> list[DiffStats]: ...
def emulate_cuda_leaf_digests(data: Buffer, leaf_size: int = 65536) -> bytes: ...
