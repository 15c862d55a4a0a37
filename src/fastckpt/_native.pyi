"""Type stubs for the private native module. Checked with `mypy --strict` in tests/test_stubs.py."""

from collections.abc import Sequence
from typing import TypedDict

from typing_extensions import Buffer

class CudaStatus(TypedDict):
    compiled: bool
    usable: bool
    device_count: int
    reason: str
    architectures: str

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

# ---- zip CRC-32 ----

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
