"""The native module's .pyi stub is a tested artifact: it must type-check under mypy --strict, and
every public native function must appear in it with a matching name (blake3-py's practice)."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

import fastckpt
from fastckpt import _native

PKG = pathlib.Path(fastckpt.__file__).parent
STUB = PKG / "_native.pyi"


def stub_names() -> set[str]:
    tree = ast.parse(STUB.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_stub_covers_every_native_function() -> None:
    native = {n for n in dir(_native) if not n.startswith("_") and callable(getattr(_native, n))}
    stubbed = stub_names()
    missing = native - stubbed
    assert not missing, f"add these to _native.pyi: {sorted(missing)}"
    extra = {n for n in stubbed - native if n not in {"CudaStatus"} and not n[0].isupper()}
    assert not extra, f"_native.pyi declares functions the module lacks: {sorted(extra)}"


def test_mypy_strict_on_stub_and_package(tmp_path: pathlib.Path) -> None:
    if (
        shutil.which("mypy") is None
        and subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True).returncode
    ):
        pytest.skip("mypy not installed")
    r = subprocess.run(
        # By module name, from an empty folder: mypy resolves the installed (py.typed) package.
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-m",
            "fastckpt._native",
            "-m",
            "fastckpt.digest",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
