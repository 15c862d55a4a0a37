"""Backend selection: which native backends are compiled in, usable, and chosen.

`FASTCKPT_FORCE_CPU=1` makes every operation take the CPU path (GPU tensors are copied to the
host first), so the whole test suite can run once per backend. Probing CUDA here goes through
the native module's own statically linked runtime; it never imports torch or initializes CUDA in
torch's runtime.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from . import _native


def force_cpu() -> bool:
    return os.environ.get("FASTCKPT_FORCE_CPU", "").strip().lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def _cuda_status() -> dict[str, Any]:
    return dict(_native.cuda_status())


def cuda_usable() -> bool:
    return not force_cpu() and bool(_cuda_status()["usable"])


def backends() -> dict[str, dict[str, Any]]:
    """What is compiled in and what is usable, e.g.
    `{"cpu": {"compiled": True, "usable": True, "isa": "avx2", ...}, "cuda": {"compiled": True, "usable": False, "reason": "..."}}`.
    """
    cuda = _cuda_status()
    cuda_info: dict[str, Any] = {
        "compiled": cuda["compiled"],
        "usable": bool(cuda["usable"]) and not force_cpu(),
        "device_count": cuda["device_count"],
        "architectures": cuda["architectures"],
    }
    if force_cpu():
        cuda_info["reason"] = "FASTCKPT_FORCE_CPU is set"
    elif not cuda["usable"]:
        cuda_info["reason"] = cuda["reason"]
    return {
        "cpu": {
            "compiled": True,
            "usable": True,
            "isa": _native.default_isa(),
            "isas": _native.available_isas(),
            "threads": os.cpu_count() or 1,
        },
        "cuda": cuda_info,
    }
