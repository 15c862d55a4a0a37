"""The torch side of the GPU engine: turns CUDA tensors into (device address, nbytes) batches for
the native kernels, one batch per device, on each device's current torch stream.

Callers (`_tensors.state_dict_leaf_digests`, `tensordiff`) have already made every tensor dense and
contiguous and checked `_backend.cuda_usable()`. This module keeps every tensor it passes
referenced until the native call returns (the SAFETY contract in csrc/cuda/backend.hpp); the call
waits for its own kernels, so nothing outlives it. Only digests and statistics cross to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import _native

if TYPE_CHECKING:
    import torch


def _device_index(t: torch.Tensor) -> int:
    import torch

    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a fresh copy when its data is not 16-byte aligned (a view at an odd offset): the
    kernels' vector loads need alignment, and a device copy is far cheaper than byte loads."""
    if t.numel() and t.data_ptr() % 16:
        # Copied as bytes: clone() of a bool tensor would canonicalize bytes other than 0 and 1.
        import torch

        return t.reshape(-1).view(torch.uint8).clone()
    return t


def _stream(device: int) -> int:
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def cuda_leaf_digests(tensors: Sequence[torch.Tensor], leaf_size: int) -> list[tuple[bytes, int]]:
    """(packed little-endian u64 leaf digests, nbytes) for dense contiguous CUDA tensors.

    All tensors of one device are hashed by one kernel launch on that device's current stream.
    """
    results: list[tuple[bytes, int] | None] = [None] * len(tensors)
    by_device: dict[int, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(_device_index(t), []).append(i)
    for device, idxs in by_device.items():
        keep = [_aligned(tensors[i]) for i in idxs]
        jobs = []
        for t in keep:
            nbytes = t.numel() * t.element_size()  # the uint8 copy of _aligned keeps the byte count
            jobs.append((t.data_ptr() if nbytes else 0, nbytes))
        leaves = _native.cuda_leaf_digests(jobs, leaf_size, device, _stream(device))
        for i, (_, nbytes), lb in zip(idxs, jobs, leaves, strict=True):
            results[i] = (lb, nbytes)
        del keep  # the tensors are no longer read once the call has returned
    return [r for r in results if r is not None]


def cuda_diff(pairs: Sequence[tuple[torch.Tensor, torch.Tensor, str]], device: int) -> list[_native.DiffStats]:
    """Raw diff statistics for (a, b, kernel dtype name) pairs of dense CUDA tensors on `device`,
    all in two kernel launches on the device's current stream."""
    keep = [(_aligned(a), _aligned(b), dtype) for a, b, dtype in pairs]
    jobs = []
    for a, b, dtype in keep:
        nbytes = a.numel() * a.element_size()
        jobs.append((a.data_ptr() if nbytes else 0, b.data_ptr() if nbytes else 0, nbytes, dtype))
    stats = _native.cuda_diff(jobs, device, _stream(device))
    del keep
    return list(stats)
