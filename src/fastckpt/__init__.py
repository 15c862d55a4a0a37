"""fastckpt: native-accelerated checkpoint verification, repair and diff for PyTorch.

Importing fastckpt is cheap: it loads the native core and nothing else. torch is imported only by
the functions that take tensors, and CUDA is never initialized at import.
"""

from __future__ import annotations

from ._backend import backends
from .diff import DiffReport, diff
from .digest import (
    DEFAULT_LEAF_SIZE,
    Digest,
    StateDictDigest,
    hash_bytes,
    hash_file,
    hash_state_dict,
    hash_tensor,
)
from .errors import CorruptCheckpointError, FastckptError, InputError, UsageError
from .optimizer_check import OptimizerReport, check_optimizer_state

# Importing .save binds the name `save` to the function (not the submodule); save.py imports no torch.
from .save import load, save, save_safetensors
from .tensordiff import TensorDiff, compare_buffers, compare_many, compare_tensors

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LEAF_SIZE",
    "CorruptCheckpointError",
    "DiffReport",
    "Digest",
    "FastckptError",
    "InputError",
    "OptimizerReport",
    "StateDictDigest",
    "TensorDiff",
    "UsageError",
    "__version__",
    "backends",
    "check_optimizer_state",
    "compare_buffers",
    "compare_many",
    "compare_tensors",
    "diff",
    "hash_bytes",
    "hash_file",
    "hash_state_dict",
    "hash_tensor",
    "load",
    "save",
    "save_safetensors",
]


def __getattr__(name: str) -> object:
    # `fastckpt.dcp` subclasses torch's classes, so it is imported on first use only.
    if name == "dcp":
        import importlib

        return importlib.import_module(".dcp", __name__)
    raise AttributeError(f"module 'fastckpt' has no attribute {name!r}")
