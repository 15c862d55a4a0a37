"""Crash safety of fastckpt.save: a child saving in a loop is SIGKILLed at random points.

After every kill the final path must hold a complete checkpoint, the old one or a new one, that
passes verify (with its sidecar, or structurally when the kill fell between the rename and the
sidecar), whose contents are exactly one version; and nothing but recognisable temp files may be
left beside it.
"""

from __future__ import annotations

import os
import random
import select
import signal
import time

import pytest

import fastckpt
from fastckpt._writer import is_temp_name
from fastckpt.verify import verify_file

torch = pytest.importorskip("torch")

KILLS = 60


def _state(version: int) -> dict:
    # ~6 MB over a few tensors, every byte determined by the version. Built with numpy: torch's
    # OpenMP pool does not survive fork, and the children are forked.
    import numpy as np

    bf16 = np.full(4096, 0x3F80 + version % 7, dtype=np.int16)  # bfloat16 bit patterns
    return {
        "version": version,
        "model": {
            "w": torch.from_numpy(np.full((1024, 1024), float(version), dtype=np.float32)),
            "b": torch.from_numpy(np.arange(300_000, dtype=np.int64) + version),
            "h": torch.from_numpy(bf16).view(torch.bfloat16),
        },
    }


def _child(path: str, start: int, redundancy: float, done_fd: int) -> None:
    try:
        v = start
        while True:
            fastckpt.save(_state(v), path, redundancy=redundancy)
            os.write(done_fd, b"s")  # one save committed
            v += 1
    finally:
        os._exit(0)


def _check(path: str) -> int:
    report = verify_file(path)
    assert report["ok"], report
    loaded = fastckpt.load(path)
    v = loaded["version"]
    want = _state(v)
    for k in want["model"]:
        assert torch.equal(loaded["model"][k], want["model"][k]), (v, k)
    return v


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_save_never_leaves_a_partial_checkpoint(tmp_path) -> None:
    rng = random.Random(1234)
    path = str(tmp_path / "step.pt")
    fastckpt.save(_state(0), path)
    t0 = time.perf_counter()
    fastckpt.save(_state(0), path)
    one_save = time.perf_counter() - t0
    versions = {0}
    with_sidecar = 0
    start, prev = 1, 0
    for i in range(KILLS):
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(done_r)
            _child(path, start, 5.0 if i % 2 else 0.0, done_w)
        os.close(done_w)
        # Kill anywhere in a save: inside torch.save, the parity pass, an fsync, between the
        # renames, or while the sidecar is written. Every other kill waits until the child has
        # committed one save first, so that kills land after commits too however slow the machine
        # is (a fixed delay made that depend on the load).
        if i % 4 >= 2:
            ready, _, _ = select.select([done_r], [], [], 120)
            assert ready and os.read(done_r, 1) == b"s", "the child never completed a save"
        time.sleep(rng.uniform(0, 2 * one_save))
        os.kill(pid, signal.SIGKILL)
        os.close(done_r)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        v = _check(path)
        assert v == prev or v >= start  # the old checkpoint, or one this child completed
        versions.add(v)
        prev = v
        start = max(start, v) + 1000  # versions of different children never collide
        with_sidecar += os.path.exists(path + ".fastckpt")
        for name in os.listdir(tmp_path):
            assert name in ("step.pt", "step.pt.fastckpt") or is_temp_name(name), name
    # The kills landed both before and after commits: new versions did reach the final path.
    assert len(versions) >= 5
    assert with_sidecar > 0
    # A later save cleans up the temps of the killed processes.
    fastckpt.save(_state(1), path)
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".step.pt.fastckpt.tmp-")]
    assert leftovers == []
    assert _check(path) == 1
