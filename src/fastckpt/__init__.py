"""fastckpt: native-accelerated checkpoint verification, repair and diff for PyTorch.

Importing fastckpt is cheap: it loads the native core and nothing else. torch is imported only by
the functions that take tensors, and CUDA is never initialized at import.
"""

from __future__ import annotations

from ._backend import backends
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

# The rest of the API is imported on first use (PEP 562), which keeps `import fastckpt` and commands
# such as `fastckpt hash` cheap: name -> (submodule, attribute). `fastckpt.save` and `fastckpt.diff`
# share their names with submodules; both submodules are callable, so either object works when called.
_LAZY = {
    "DiffReport": (".diff", "DiffReport"),
    "diff": (".diff", "diff"),
    "OptimizerReport": (".optimizer_check", "OptimizerReport"),
    "check_optimizer_state": (".optimizer_check", "check_optimizer_state"),
    "TensorDiff": (".tensordiff", "TensorDiff"),
    "compare_buffers": (".tensordiff", "compare_buffers"),
    "compare_many": (".tensordiff", "compare_many"),
    "compare_tensors": (".tensordiff", "compare_tensors"),
    "load": (".save", "load"),
    "save": (".save", "save"),
    "save_safetensors": (".save", "save_safetensors"),
}

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
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    # `fastckpt.dcp` subclasses torch's classes, so it is imported on first use only.
    if name == "dcp":
        return importlib.import_module(".dcp", __name__)
    raise AttributeError(f"module 'fastckpt' has no attribute {name!r}")
