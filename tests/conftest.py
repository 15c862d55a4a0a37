"""Shared fixtures. The whole suite runs once per backend: .ci/run repeats it with
FASTCKPT_FORCE_CPU=1 (the crc32c pattern). GPU tests carry the `cuda` marker and skip without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import fastckpt

    usable = fastckpt.backends()["cuda"]["usable"]
    skip = pytest.mark.skip(reason="no usable CUDA GPU (fastckpt.backends()['cuda'])")
    for item in items:
        if "cuda" in item.keywords and not usable:
            item.add_marker(skip)


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m fastckpt ARGS` in a fresh process (the way users run it)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "fastckpt", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def cli():
    return run_cli
