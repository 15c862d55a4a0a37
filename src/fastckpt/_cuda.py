"""GPU hashing entry points (filled in by the GPU engine). Until the CUDA kernels land, the
backend reports itself unusable and this module is never reached."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cuda_leaf_digests(tensors: Sequence[torch.Tensor], leaf_size: int) -> list[tuple[bytes, int]]:
    raise NotImplementedError("the CUDA hashing kernels are not built into this version")
