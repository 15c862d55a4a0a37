"""The CUDA build on a machine without a usable GPU: the module imports, CPU paths work, CUDA is
reported unusable with a reason, the CUDA entry points fail with a clear error, and the CUDA
runtime is linked statically. Skipped when the module was built without CUDA."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastckpt
from fastckpt import _native

STATUS = _native.cuda_status()


def test_built_with_cuda_where_nvcc_exists() -> None:
    if shutil.which("nvcc") is None or os.environ.get("FASTCKPT_CUDA", "").upper() == "OFF":
        pytest.skip("no nvcc here, or the CUDA build was switched off on purpose")
    assert STATUS["compiled"], (
        "nvcc is on PATH but fastckpt was built without CUDA: rebuild with FASTCKPT_CUDA=ON"
    )


needs_cuda_build = pytest.mark.skipif(not STATUS["compiled"], reason="built without CUDA")
needs_no_gpu = pytest.mark.skipif(bool(STATUS["usable"]), reason="a usable GPU is present")


@needs_cuda_build
def test_architectures_include_a100_h100_and_ptx() -> None:
    archs = STATUS["architectures"]
    assert "80" in archs and "90" in archs and "virtual" in archs, archs


@needs_cuda_build
@needs_no_gpu
def test_imports_and_reports_unusable_with_a_reason() -> None:
    cuda = fastckpt.backends()["cuda"]
    assert cuda["compiled"] is True
    assert cuda["usable"] is False
    assert isinstance(cuda["reason"], str) and cuda["reason"]
    # The CPU paths work in the same process.
    data = np.arange(100_000, dtype=np.uint8)
    assert fastckpt.hash_bytes(data).nbytes == data.nbytes
    assert fastckpt.compare_tensors(data, data).equal


@needs_cuda_build
@needs_no_gpu
def test_cuda_entry_points_raise_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="fastckpt CUDA backend: cudaGetDeviceCount failed"):
        _native.cuda_leaf_digests([(1 << 40, 4096)], 65536, 0, 0)
    with pytest.raises(RuntimeError, match="fastckpt CUDA backend"):
        _native.cuda_diff([(1 << 40, 1 << 41, 4096, "float32")], 0, 0)
    # Validation happens before any CUDA call.
    with pytest.raises(ValueError, match="unknown dtype"):
        _native.cuda_diff([(1, 2, 4, "float99")], 0, 0)
    with pytest.raises(ValueError, match="power of two"):
        _native.cuda_leaf_digests([(1, 4)], 1000, 0, 0)
    # Nothing to do: no CUDA call at all.
    assert _native.cuda_leaf_digests([(0, 0)], 65536, 0, 0) == [b""]


@needs_cuda_build
def test_cuda_runtime_is_linked_statically() -> None:
    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    out = subprocess.run(["ldd", _native.__file__], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in out, out


def test_force_cpu_reports_the_reason() -> None:
    code = "import fastckpt, json; print(json.dumps(fastckpt.backends()['cuda']))"
    env = dict(os.environ, FASTCKPT_FORCE_CPU="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert '"usable": false' in out and "FASTCKPT_FORCE_CPU" in out
