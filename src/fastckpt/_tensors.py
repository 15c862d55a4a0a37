"""The torch boundary: turns tensors into (address, nbytes) for the native core.

Only this module knows about torch tensor internals. It makes each tensor dense and contiguous
(a view hashes like its contiguous copy), resolves lazy conjugate/negative bits, rejects layouts
that have no plain byte representation, and keeps every tensor referenced while native code reads
its memory (the SAFETY contract in csrc/bindings.cpp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import _native
from .errors import UsageError

if TYPE_CHECKING:
    import torch


def logical_bytes_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A dense, contiguous tensor with the same logical bytes as `tensor` (no copy when possible)."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise UsageError(f"cannot hash a {tensor.layout} tensor: convert it with .to_dense() first")
    if tensor.is_quantized:
        raise UsageError("cannot hash a quantized tensor: hash its int_repr() and quantization parameters")
    if tensor.device.type == "meta":
        raise UsageError("cannot hash a meta tensor: it has no data")
    if tensor.is_contiguous() and not tensor.is_conj() and not tensor.is_neg():
        # The common case, without detach(): its cost dominates hashing a 1000-tensor state_dict on
        # the GPU. Only the bytes are read, so the autograd metadata does not matter.
        return tensor
    t = tensor.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t.contiguous()


def _host_leaf_digests(t: torch.Tensor, leaf_size: int, threads: int) -> tuple[bytes, int]:
    nbytes = t.numel() * t.element_size()
    # `t` stays referenced for the duration of the call, which keeps its storage alive.
    return _native.leaf_digests_at(t.data_ptr() if nbytes else 0, nbytes, leaf_size, threads), nbytes


def tensor_leaf_digests(tensor: torch.Tensor, leaf_size: int, threads: int) -> tuple[bytes, int]:
    """(packed leaf digests, nbytes) of one tensor, on the device that holds it when possible."""
    return state_dict_leaf_digests([tensor], leaf_size, threads)[0]


def state_dict_leaf_digests(
    tensors: Sequence[torch.Tensor], leaf_size: int, threads: int
) -> list[tuple[bytes, int]]:
    """Leaf digests for many tensors; GPU tensors go to the GPU backend in one batch."""
    from ._backend import cuda_usable

    dense = [logical_bytes_tensor(t) for t in tensors]
    results: list[tuple[bytes, int] | None] = [None] * len(dense)
    on_gpu = [i for i, t in enumerate(dense) if t.device.type == "cuda"]
    if on_gpu and cuda_usable():
        from ._cuda import cuda_leaf_digests

        for i, res in zip(on_gpu, cuda_leaf_digests([dense[i] for i in on_gpu], leaf_size), strict=True):
            results[i] = res
    for i, t in enumerate(dense):
        if results[i] is None:
            host = t if t.device.type == "cpu" else t.cpu()
            results[i] = _host_leaf_digests(host, leaf_size, threads)
    return [r for r in results if r is not None]
