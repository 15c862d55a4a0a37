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
report["numpy_imported"] = "numpy" in sys.modules
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
    assert report["numpy_imported"] is False
    assert report["contexts_active"] in (None, False)
    assert report["torch_cuda_initialized"] in (None, False)


def test_cli_hash_does_not_import_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 1000)
    code = (
        "import sys\n"
        "from fastckpt.cli import main\n"
        f"assert main(['hash', {str(f)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'hash imported torch'\n"
        "print('checked')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    assert r.stdout.rstrip().endswith("checked")


def test_cli_version_builds_no_command() -> None:
    """`fastckpt --version` prints the version without importing any command's module."""
    code = (
        "import sys, contextlib, io\n"
        "import fastckpt\n"
        "from fastckpt.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--version'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert out.getvalue().strip() == f'fastckpt {fastckpt.__version__}', out.getvalue()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('fastckpt.commands.') and m != 'fastckpt.commands._common')\n"
        "assert loaded == [], loaded\n"
        "print('checked')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("checked")


# What `fastckpt verify FILE` with a sidecar (and `fastckpt hash FILE`) must not import: torch and
# numpy (never needed), the object-storage layer and what it pulls in (thread pools, logging), and
# dataclasses with inspect/ast/dis/tokenize (~8 ms of start-up; see fastckpt._record). Modules the
# bare interpreter already has here (site hooks can import some) are not held against fastckpt.
FORBIDDEN_ON_LEAN_PATHS = {
    "torch",
    "numpy",
    "fastckpt.remote",
    "fastckpt.remote_verify",
    "fsspec",
    "concurrent.futures",
    "logging",
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "importlib.resources",
}

MODULES_AFTER = (
    "import json, runpy, sys\n"
    "exec(sys.argv[2])\n"
    "sys.argv = ['fastckpt', *json.loads(sys.argv[1])]\n"
    # cli.main, not `python -m fastckpt`: its console entry may end the process without returning.
    "from fastckpt.cli import main\n"
    "try:\n    code = main()\n"
    "except SystemExit as e:\n    code = e.code\n"
    "sys.stderr.write('\\nMODULES ' + json.dumps({'rc': code, 'modules': sorted(sys.modules)}) + '\\n')\n"
)


def _modules_after(argv: list[str], preamble: str = "") -> tuple[int, set[str]]:
    r = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER, json.dumps(argv), preamble],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES ")][-1]
    out = json.loads(line[len("MODULES ") :])
    return out["rc"], set(out["modules"])


def _baseline_modules() -> set[str]:
    r = subprocess.run(
        [sys.executable, "-c", "import json, runpy, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return set(json.loads(r.stdout))


@pytest.mark.parametrize("command", ["verify", "verify-json", "hash"])
def test_verify_with_sidecar_and_hash_import_lean(tmp_path, command: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ckpt.bin"
    f.write_bytes(bytes(range(256)) * 4000)
    # Default protect: the sidecar carries Reed-Solomon parity, so verify also checks parity leaves.
    subprocess.run(
        [sys.executable, "-m", "fastckpt", "protect", "--quiet", str(f)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    argv = {
        "verify": ["verify", "--quiet", str(f)],
        "verify-json": ["verify", "--json", str(f)],
        "hash": ["hash", str(f)],
    }[command]
    rc, modules = _modules_after(argv)
    assert rc in (0, None)
    if command.startswith("verify"):
        assert "fastckpt.verify" in modules and "fastckpt.sidecar_parity" in modules  # the path ran
    bad = _forbidden(modules)
    assert not bad, f"`fastckpt {' '.join(argv[:2])}` imported {bad}"


def _forbidden(modules: set[str]) -> list[str]:
    newly = modules - _baseline_modules()
    return sorted(m for m in newly if m in FORBIDDEN_ON_LEAN_PATHS or m.split(".")[0] in {"torch", "numpy"})


def test_lean_path_check_detects_a_regression(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The check above can fail: a run that pulls in the remote layer is caught."""
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 1000)
    rc, modules = _modules_after(["hash", str(f)], preamble="import fastckpt.remote")
    assert rc in (0, None)
    bad = _forbidden(modules)
    assert "fastckpt.remote" in bad and "concurrent.futures" in bad
