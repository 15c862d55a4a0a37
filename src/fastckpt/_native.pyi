"""Type stubs for the private native module. Checked with `mypy --strict` in tests/test_stubs.py."""

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

# ---- CUDA entry points ----
