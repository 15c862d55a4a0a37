"""`fastckpt hash` and `fastckpt demo` as users run them: in a fresh process, with exit codes,
JSON contracts, and without importing torch where torch is not needed."""

from __future__ import annotations

import json
import os
import sys

import pytest

from fastckpt import _reference


def test_hash_json_contract(cli, tmp_path) -> None:
    data = os.urandom(200_000)
    p = tmp_path / "w.bin"
    p.write_bytes(data)
    r = cli(["hash", str(p), "--json", "--leaf-size", "4096"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["path"] == str(p)
    assert out["size"] == len(data)
    assert out["leaf_size"] == 4096
    assert out["leaves"] == [f"{v:016x}" for v in _reference.leaf_digests(data, 4096)]
    assert all(len(h) == 16 and h == h.lower() for h in out["leaves"])
    assert out["digest"] == f"{_reference.bytes_digest(data, 4096):032x}"
    assert out["leaf_count"] == len(out["leaves"])


def test_hash_text(cli, tmp_path) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(b"hello")
    r = cli(["hash", str(p)])
    assert r.returncode == 0
    assert f"digest:    {_reference.bytes_digest(b'hello', 65536):032x}" in r.stdout
    assert "size:      5 bytes" in r.stdout


def test_hash_does_not_import_torch(tmp_path) -> None:
    import subprocess

    p = tmp_path / "w.bin"
    p.write_bytes(b"x" * 1000)
    code = (
        "import sys; from fastckpt.cli import main; rc = main(['hash', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'numpy' not in sys.modules, 'numpy was imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hash", "/nonexistent/x.pt"], "fastckpt: error: /nonexistent/x.pt: No such file or directory"),
        (["hash", "/"], "fastckpt: error: /: Is a directory"),
        (["hash", "/dev/null", "--leaf-size", "1000"], "fastckpt: error: leaf_size must be a power of two"),
        (["nosuchcommand"], "fastckpt: error: argument COMMAND: invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(cli, args: list[str], message: str) -> None:
    r = cli(args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert message in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("fastckpt: error:")


def test_help_lists_commands_and_exit_codes(cli) -> None:
    r = cli(["--help"])
    assert r.returncode == 0
    assert "hash" in r.stdout and "demo" in r.stdout and "Exit codes" in r.stdout


def test_no_command_is_usage_error(cli) -> None:
    assert cli([]).returncode == 2


def test_demo_runs(cli) -> None:
    r = cli(["demo", "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True
    assert out["damaged_leaves"] == [out["corrupted_offset"] // 65536]
    assert not os.path.exists(out["folder"])
