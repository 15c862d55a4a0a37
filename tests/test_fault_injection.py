"""Fault-injection suite: every fault in fastckpt.faults, injected into torch zip files, safetensors
files, DCP folders and opaque files. Damage is always detected; within the parity budget repair is
exact (SHA-256 of every file equals the pristine sample's); beyond it, repair exits non-zero and
leaves every byte and file as it found them. The budget oracle works from the bytes and the parity
rule of docs/FORMAT.md 3.6, not from repair's own plan."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from fastckpt import faults

LEAF = 4096
SIZE = 1 << 20
# 1 MiB at 4 KiB leaves and 5% redundancy: 256 leaves, k=52, m=3, 5 groups: any run of 15 leaves
# (60 KiB) is within the budget; these ranges straddle it so both outcomes occur.
FAULT_KW = {
    "overwrite": {"max_bytes": 1 << 17},
    "truncate": {"max_cut": 1 << 17},
    "append": {"max_bytes": 1 << 14},
}
FAST_SEEDS = 6
SLOW_SEEDS = 40


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("samples")
    out = {}
    for fmt in faults.FORMATS:
        if fmt in ("torch", "dcp"):
            pytest.importorskip("torch")
        path = faults.write_sample(fmt, str(root / fmt), nbytes=SIZE, seed=1)
        faults.protect_sample(path, leaf_size=LEAF)
        out[fmt] = path
    return out


def _trials(samples: dict[str, str], tmp: str, fmt: str, kind: str, seeds: range) -> list[faults.TrialResult]:
    return [
        faults.run_trial(fmt, samples[fmt], os.path.join(tmp, "w"), kind, seed, fault_kw=FAULT_KW.get(kind))
        for seed in seeds
    ]


@pytest.mark.parametrize("kind", faults.FAULT_KINDS)
@pytest.mark.parametrize("fmt", faults.FORMATS)
def test_fault(samples: dict[str, str], tmp_path, fmt: str, kind: str) -> None:
    results = _trials(samples, str(tmp_path), fmt, kind, range(FAST_SEEDS))
    bad = [(r.seed, r.fault, r.problems) for r in results if not r.ok]
    assert not bad, bad
    assert all(r.detected for r in results)


def test_both_outcomes_occur(samples: dict[str, str], tmp_path) -> None:
    """The suite is only meaningful if it exercises both sides of the budget."""
    outcomes = Counter()
    for kind in ("overwrite", "truncate"):
        for r in _trials(samples, str(tmp_path), "opaque", kind, range(12)):
            assert r.ok, r.problems
            outcomes[r.expected_repairable] += 1
    assert outcomes[True] and outcomes[False]


def test_burst_at_budget_edge(samples: dict[str, str], tmp_path) -> None:
    """A run of exactly m*G damaged leaves is repaired; one leaf more puts m+1 in one group."""
    from fastckpt.cli import main

    src = samples["opaque"]
    _, record = faults.parity_record(Path(src + ".fastckpt").read_bytes())
    assert record is not None
    burst = record["m"] * record["groups"]
    original = Path(src).read_bytes()
    for n_leaves, repairable in ((burst, True), (burst + 1, False)):
        path = str(tmp_path / f"edge{n_leaves}.bin")
        start = 7 * LEAF
        damaged = bytearray(original)
        damaged[start : start + n_leaves * LEAF] = bytes(
            b ^ 0xFF for b in original[start : start + n_leaves * LEAF]
        )
        Path(path).write_bytes(damaged)
        Path(path + ".fastckpt").write_bytes(Path(src + ".fastckpt").read_bytes())
        code = main(["repair", path, "--no-backup", "-q"])
        assert code == (0 if repairable else 1)
        assert Path(path).read_bytes() == (original if repairable else bytes(damaged))


def test_oracle_independent_of_repair() -> None:
    """changed_leaves/parity_can_rebuild on hand-made cases."""
    rng = random.Random(0)
    orig = rng.randbytes(10 * 64)
    dam = bytearray(orig)
    dam[64 * 3] ^= 1
    dam[64 * 8 + 63] ^= 0x80
    assert faults.changed_leaves(orig, bytes(dam), 64) == [3, 8]
    assert faults.changed_leaves(orig, orig[: 64 * 7 + 1], 64) == [7, 8, 9]
    rec = {"k": 5, "m": 1, "groups": 2}
    assert faults.parity_can_rebuild([3, 8], rec)  # groups 1 and 0
    assert not faults.parity_can_rebuild([3, 5], rec)  # both in group 1
    assert not faults.parity_can_rebuild([3], None)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", faults.FORMATS)
def test_fault_sweep(samples: dict[str, str], tmp_path, fmt: str) -> None:
    """The big sweep: SLOW_SEEDS trials per fault kind and format."""
    failures = []
    for kind in faults.FAULT_KINDS:
        for r in _trials(samples, str(tmp_path), fmt, kind, range(FAST_SEEDS, FAST_SEEDS + SLOW_SEEDS)):
            if not r.ok:
                failures.append((kind, r.seed, r.fault, r.problems))
    assert not failures, failures[:5]
