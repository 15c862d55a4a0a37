"""docs/guide/auditing.md stays true: every example block marked `<!-- example: NAME -->` runs as
written (the pytest example under pytest, the torchrun example under torchrun with 3 gloo ranks,
the shell examples under bash with `fastckpt` on the PATH) and prints what the guide shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "auditing.md"


def examples() -> dict[str, str]:
    text = GUIDE.read_text()
    found = dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, flags=re.S))
    assert set(found) == {
        "test_resume.py",
        "check_optimizer.py",
        "replicas.py",
        "make_checkpoints.py",
        "make_ddp_checkpoint.py",
        "load_migrated.py",
    }
    return found


def shell_examples() -> dict[str, tuple[str, str]]:
    """NAME -> (bash script, the text block the guide shows after it)."""
    text = GUIDE.read_text()
    found = re.findall(
        r"<!-- example: (\S+\.sh) -->\n```bash\n(.*?)```.*?```text\n(.*?)```", text, flags=re.S
    )
    assert {name for name, _, _ in found} == {"check_optimizer.sh", "migrate.sh"}
    return {name: (script, printed) for name, script, printed in found}


def run_shell(name: str, cwd: Path) -> str:
    """Runs a shell example with `fastckpt` and `python` on the PATH (this interpreter), stderr
    merged into stdout in program order; returns what it printed."""
    script, _ = shell_examples()[name]
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, cmd in (("fastckpt", f"{sys.executable} -m fastckpt"), ("python", sys.executable)):
        (bin_dir / tool).write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        (bin_dir / tool).chmod(0o755)
    (cwd / name).write_text(script)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    res = subprocess.run(
        ["bash", name],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout
    return res.stdout


def assert_printed(want: str, got: str) -> None:
    """Line by line; `...` in the guide stands for any text (sizes, elided hyperparameters)."""
    want_lines, got_lines = want.splitlines(), got.splitlines()
    assert len(want_lines) == len(got_lines), got
    for w, g in zip(want_lines, got_lines, strict=True):
        pattern = ".*".join(re.escape(part) for part in w.split("..."))
        assert re.fullmatch(pattern, g), (w, g)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_resume_example(tmp_path: Path) -> None:
    (tmp_path / "test_resume.py").write_text(examples()["test_resume.py"])
    res = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_resume.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout


def test_check_optimizer_example(tmp_path: Path) -> None:
    (tmp_path / "check_optimizer.py").write_text(examples()["check_optimizer.py"])
    res = run([sys.executable, "check_optimizer.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    printed = (
        GUIDE.read_text()
        .split("<!-- example: check_optimizer.py -->")[1]
        .split("```text\n")[1]
        .split("```")[0]
    )
    # The printed report matches the guide line by line (the guide elides the hyperparameter list).
    for want, got in zip(printed.splitlines(), res.stdout.splitlines(), strict=True):
        head = want.split("...")[0]
        assert got.startswith(head), (want, got)


@pytest.mark.slow
def test_replicas_example_under_torchrun(tmp_path: Path) -> None:
    (tmp_path / "replicas.py").write_text(examples()["replicas.py"])
    res = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "replicas.py"],
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replicas DIVERGE: 1 of 4 tensors differ across 3 ranks\n  0.weight: rank 2 differ" in res.stdout


def test_check_optimizer_cli_example(tmp_path: Path) -> None:
    (tmp_path / "make_checkpoints.py").write_text(examples()["make_checkpoints.py"])
    res = run([sys.executable, "make_checkpoints.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_printed(shell_examples()["check_optimizer.sh"][1], run_shell("check_optimizer.sh", tmp_path))


def test_migrate_example(tmp_path: Path) -> None:
    for name in ("make_ddp_checkpoint.py", "load_migrated.py"):
        (tmp_path / name).write_text(examples()[name])
    res = run([sys.executable, "make_ddp_checkpoint.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_printed(shell_examples()["migrate.sh"][1], run_shell("migrate.sh", tmp_path))
    assert not (tmp_path / "out.pt").exists()  # the refused run and the dry run wrote nothing
    res = run([sys.executable, "load_migrated.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "both load with strict=True\n"
