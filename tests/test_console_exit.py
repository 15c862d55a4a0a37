"""The console entry (`fastckpt`, `python -m fastckpt`) skips interpreter shutdown after lean commands:
everything printed must still arrive, and exit codes must be exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastckpt.protect import protect_file


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastckpt", *argv], capture_output=True, text=True, timeout=120
    )


def test_output_and_exit_codes_survive_the_fast_exit(tmp_path: Path) -> None:
    f = tmp_path / "blob.bin"
    f.write_bytes(bytes(range(256)) * 4096)
    assert protect_file(f, force=True).written
    ok = _run("verify", "--json", str(f))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True  # the whole JSON document was flushed
    with open(f, "r+b") as fh:
        fh.seek(70000)
        fh.write(b"\x00\x00\x00")
    bad = _run("verify", "--json", str(f))
    assert bad.returncode == 1 and json.loads(bad.stdout)["damaged"], bad.stderr
    # Long output through a pipe: every leaf digest of a 1 MiB file with 64-byte leaves.
    many = _run("hash", "--json", "--leaf-size", "64", str(f))
    assert many.returncode == 0 and len(json.loads(many.stdout)["leaves"]) == (256 * 4096) // 64
    err = _run("verify", str(tmp_path / "missing.pt"))
    assert err.returncode == 2 and err.stderr.startswith("fastckpt: error:") and "Traceback" not in err.stderr


DUTIES = {
    None: "",
    "executor module": "import concurrent.futures\n",
    "live thread": "import threading, time\nthreading.Thread(target=time.sleep, args=(3.0,)).start()\n",
}


@pytest.mark.parametrize("duty", list(DUTIES))
def test_commands_with_exit_duties_exit_normally(tmp_path: Path, duty: str | None) -> None:
    """Executors, threads, torch and multiprocessing keep the normal shutdown (exit handlers run);
    a lean command skips it (so an exit handler does not run: the fast path is really taken)."""
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 1000)
    code = (
        "import sys, atexit\n"
        + DUTIES[duty]
        + "atexit.register(lambda: print('atexit ran'))\n"
        + f"sys.argv = ['fastckpt', 'hash', {str(f)!r}]\n"
        + "from fastckpt.cli import console_main\n"
        + "console_main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "digest:" in r.stdout, r.stderr
    assert ("atexit ran" in r.stdout) == (duty is not None)
