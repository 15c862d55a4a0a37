"""fastckpt.distributed.check_replicas with real gloo process groups on the CPU: 3 ranks (one
perturbed in one element), all-equal, no-majority, differing key sets, DTensor placements; every
rank must get the same report."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastckpt.errors import UsageError


def base_state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(42)
    return {
        "embed.weight": torch.randn(50, 16, generator=g),
        "layers": {
            "0": {"weight": torch.randn(16, 16, generator=g), "bias": torch.zeros(16)},
            "1": {"weight": torch.randn(16, 16, generator=g).to(torch.bfloat16), "bias": torch.zeros(16)},
        },
        "step": torch.tensor(7),
        "empty": torch.empty(0, 3),
        "ids": torch.arange(1000, dtype=torch.int64),
        "big": torch.randn(300_000, generator=g),  # several 64 KiB leaves
        "not_a_tensor": 3.5,
    }


def flip_one_bit(t: torch.Tensor, index: int) -> None:
    """Flips the lowest bit of one element, in place: the smallest possible perturbation."""
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    t.view(-1).view(as_int)[index] ^= 1


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)
        self.bn = torch.nn.BatchNorm1d(4)


def scenarios(rank: int, world: int) -> dict[str, Any]:
    from fastckpt.distributed import check_replicas

    out: dict[str, Any] = {}
    out["equal"] = check_replicas(base_state())

    sd = base_state()
    if rank == 2:
        flip_one_bit(sd["layers"]["1"]["weight"], 37)
    out["perturbed"] = check_replicas(sd)

    sd = base_state()
    if rank == 1:
        flip_one_bit(sd["big"], 299_999)  # last element of the last, partial leaf
    out["perturbed_last_leaf"] = check_replicas(sd)

    net = Net()
    if rank == 1:
        net.bn.running_var[2] += 1e-6
    out["module"] = check_replicas(net)

    sd = {"x": torch.full((4,), float(rank)), "y": torch.ones(3)}
    out["no_majority"] = check_replicas(sd)

    sd = {"x": torch.full((4,), 1.0 if rank == 0 else 2.0), "y": torch.ones(3)}
    out["rank0_outvoted"] = check_replicas(sd)

    sd = {"w": torch.ones(3), "v": torch.zeros(2)}
    if rank == 1:
        sd["extra"] = torch.ones(1)
    if rank == 2:
        del sd["w"]
    out["key_sets_differ"] = check_replicas(sd)

    sd = {"x": torch.ones(4)}
    if rank == 0:
        sd["x"] = torch.ones(4, dtype=torch.float64)  # same values, other dtype: a different tensor
    out["dtype_differs"] = check_replicas(sd)

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    local = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    if rank == 1:
        local = local.clone()
        local[2, 3] = -1.0
    state = {
        "rep": DTensor.from_local(local, mesh, [Replicate()], run_check=False),
        "shard": distribute_tensor(torch.arange(30.0).reshape(6, 5), mesh, [Shard(0)]),
        "plain": torch.ones(5),
    }
    out["dtensor"] = check_replicas(state)
    state["rep"] = distribute_tensor(torch.arange(12.0).reshape(3, 4), mesh, [Replicate()])
    out["dtensor_equal"] = check_replicas(state)
    return {k: v.to_json() for k, v in out.items()}


def worker(rank: int, world: int, store: str, out_dir: str, fn_name: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        result = globals()[fn_name](rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, world: int, fn_name: str) -> dict[str, Any]:
    mp.spawn(worker, args=(world, str(tmp_path / "store"), str(tmp_path), fn_name), nprocs=world, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for r in range(1, world):
        assert reports[r] == reports[0], f"rank {r} got a different report than rank 0"
    return reports[0]


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_ranks(tmp_path_factory.mktemp("replicas"), 3, "scenarios")


def mism(report: dict[str, Any]) -> list[tuple[str, list[int]]]:
    return [(m["key"], m["ranks"]) for m in report["mismatches"]]


def test_all_equal(three_ranks: dict[str, Any]) -> None:
    r = three_ranks["equal"]
    assert r["ok"] and r["mismatches"] == [] and r["skipped"] == []
    assert r["compared"] == 9  # every tensor, none of the non-tensor entries
    assert r["ranks"] == [0, 1, 2]


def test_one_rank_perturbed(three_ranks: dict[str, Any]) -> None:
    r = three_ranks["perturbed"]
    assert not r["ok"]
    assert mism(r) == [("layers.1.weight", [2])]
    assert mism(three_ranks["perturbed_last_leaf"]) == [("big", [1])]


def test_module_buffer_perturbed(three_ranks: dict[str, Any]) -> None:
    assert mism(three_ranks["module"]) == [("bn.running_var", [1])]
    assert three_ranks["module"]["compared"] == 7  # 4 params + running_mean, running_var, num_batches_tracked


def test_no_majority_compares_with_rank0(three_ranks: dict[str, Any]) -> None:
    assert mism(three_ranks["no_majority"]) == [("x", [1, 2])]
    assert mism(three_ranks["rank0_outvoted"]) == [("x", [0])]


def test_key_sets_differ(three_ranks: dict[str, Any]) -> None:
    assert mism(three_ranks["key_sets_differ"]) == [("w", [2]), ("extra", [1])]


def test_dtype_is_part_of_the_digest(three_ranks: dict[str, Any]) -> None:
    assert mism(three_ranks["dtype_differs"]) == [("x", [0])]


def test_dtensor_replicated_compared_sharded_skipped(three_ranks: dict[str, Any]) -> None:
    r = three_ranks["dtensor"]
    assert mism(r) == [("rep", [1])]
    assert r["skipped"] == ["shard"]
    assert r["compared"] == 2
    assert three_ranks["dtensor_equal"]["ok"]


def mixed_placements(rank: int, world: int) -> dict[str, Any]:
    """2x2 mesh, (Replicate, Shard(0)): ranks {0, 2} hold one shard, {1, 3} the other."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from fastckpt.distributed import check_replicas

    mesh = init_device_mesh("cpu", (2, 2))
    w = distribute_tensor(torch.arange(16.0).reshape(4, 4), mesh, [Replicate(), Shard(0)])
    equal = check_replicas({"w": w})
    if rank == 3:
        w.to_local()[0, 0] += 1
    perturbed = check_replicas({"w": w})
    sub = check_replicas({"w": w}, group=mesh.get_group(0))  # the replicate dimension's group
    return {"equal": equal.to_json(), "perturbed": perturbed.to_json(), "sub": sub.to_json()}


@pytest.mark.slow
def test_dtensor_mixed_placements(tmp_path: Path) -> None:
    mp.spawn(
        worker, args=(4, str(tmp_path / "store"), str(tmp_path), "mixed_placements"), nprocs=4, join=True
    )
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert all(r["equal"] == reports[0]["equal"] for r in reports)
    assert all(r["perturbed"] == reports[0]["perturbed"] for r in reports)
    # The shards differ between {0, 2} and {1, 3} by design; only rank 3's perturbation counts.
    assert reports[0]["equal"]["ok"] and reports[0]["equal"]["compared"] == 1
    assert mism(reports[0]["perturbed"]) == [("w", [3])]
    # Within the replicate group {1, 3} (no majority of two), rank 3 is the one that differs from 1.
    assert mism(reports[1]["sub"]) == [("w", [3])] and reports[1]["sub"]["ranks"] == [1, 3]
    assert reports[0]["sub"]["ok"] and reports[0]["sub"]["ranks"] == [0, 2]


def test_needs_an_initialized_process_group() -> None:
    from fastckpt.distributed import check_replicas

    assert not dist.is_initialized()
    with pytest.raises(UsageError, match="init_process_group"):
        check_replicas({"x": torch.ones(2)})


def test_compare_groups_reference() -> None:
    """The majority rule on its own: strict majority wins, else the first rank is the reference."""
    from fastckpt.distributed import _compare_groups

    a, b, c = (0, 1, 1), (0, 2, 2), (0, 3, 3)
    assert _compare_groups([a, a, a], [0, 1, 2]) == []
    assert _compare_groups([a, b, a], [0, 1, 2]) == [1]
    assert _compare_groups([b, a, a, a], [0, 1, 2, 3]) == [0]
    assert _compare_groups([a, a, b, b], [0, 1, 2, 3]) == [2, 3]
    assert _compare_groups([a, b, c], [4, 5, 6]) == [5, 6]
    assert _compare_groups([a, None, a], [0, 1, 2]) == [1]
    assert _compare_groups([None, a, None], [0, 1, 2]) == [1]
    # Different tags never compare: each is its own replica group.
    assert _compare_groups([(1, 1, 1), (2, 2, 2), (1, 1, 1), (2, 9, 9)], [0, 1, 2, 3]) == [3]
