"""`import fastckpt` and `fastckpt.backends()` import no torch and initialize no CUDA: the probe
is lazy and uses cudaGetDeviceCount only, which creates no context. Checked in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, sys
report = {}
import fastckpt
report["probed_at_import"] = fastckpt._backend._cuda_status.cache_info().currsize > 0
fastckpt.backends()
fastckpt.compare_buffers(b"abcd", b"abcd", "uint8")
report["torch_imported"] = "torch" in sys.modules
# The driver's primary context of every device must still be inactive.
try:
    cu = ctypes.CDLL("libcuda.so.1")
except OSError:
    report["contexts_active"] = None
else:
    active_any = False
    if cu.cuInit(0) == 0:
        count = ctypes.c_int(0)
        cu.cuDeviceGetCount(ctypes.byref(count))
        for i in range(count.value):
            dev, flags, active = ctypes.c_int(0), ctypes.c_uint(0), ctypes.c_int(0)
            cu.cuDeviceGet(ctypes.byref(dev), i)
            cu.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active))
            active_any |= bool(active.value)
    report["contexts_active"] = active_any
try:
    import torch
except ImportError:
    report["torch_cuda_initialized"] = None
else:
    report["torch_cuda_initialized"] = torch.cuda.is_initialized()
print(json.dumps(report))
"""


def run_probe(env_extra: dict[str, str] | None = None) -> dict[str, object]:
    import os

    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("force_cpu", ["", "1"])
def test_import_and_backends_are_lean(force_cpu: str) -> None:
    report = run_probe({"FASTCKPT_FORCE_CPU": force_cpu})
    assert report["probed_at_import"] is False
    assert report["torch_imported"] is False
    assert report["contexts_active"] in (None, False)
    assert report["torch_cuda_initialized"] in (None, False)


def test_cli_hash_does_not_import_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 1000)
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['fastckpt', 'hash', {str(f)!r}]\n"
        "try:\n    runpy.run_module('fastckpt', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'hash imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
