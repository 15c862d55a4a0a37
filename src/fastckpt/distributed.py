"""Cross-rank consistency of data-parallel replicas: `check_replicas`.

This module owns the replica check: every rank hashes its tensors with `hash_state_dict` (on the
GPU when they live there and the CUDA backend is usable), the 128-bit digests are all-gathered as
one packed int64 tensor, and every rank derives the same report from the same gathered data.
Sharded DTensor/FSDP parameters are compared only where they are replicated. torch is imported
only when the function is called.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _native
from .digest import DEFAULT_LEAF_SIZE
from .errors import UsageError

if TYPE_CHECKING:
    import torch
    import torch.distributed as dist

__all__ = ["ReplicaReport", "check_replicas"]

_KEYS_TAG = b"FCKPT-R1"


@dataclass(frozen=True)
class ReplicaReport:
    """The outcome of `check_replicas`; identical on every rank of the group.

    `mismatches` lists ``(key, ranks)`` for each tensor where some ranks hold different bytes:
    `ranks` (global ranks, ascending) are those that differ from the majority of the ranks that
    should hold the same data, or from the lowest of those ranks when no value has a strict
    majority. A rank that lacks a key the others have (or has one they lack) counts as differing.
    `skipped` names tensors with nothing replicated to compare (fully sharded DTensors, FSDP flat
    parameters). `compared` counts the tensors compared.
    """

    mismatches: list[tuple[str, tuple[int, ...]]]
    skipped: list[str]
    compared: int
    ranks: tuple[int, ...]
    nbytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return {
            "ok": self.ok,
            "mismatches": [{"key": k, "ranks": list(r)} for k, r in self.mismatches],
            "skipped": list(self.skipped),
            "compared": self.compared,
            "ranks": list(self.ranks),
        }

    def format_text(self) -> str:
        head = (
            f"replicas consistent: {self.compared} tensors compared across {self.world_size} ranks"
            if self.ok
            else f"replicas DIVERGE: {len(self.mismatches)} of {self.compared} tensors differ across {self.world_size} ranks"
        )
        lines = [head + (f" ({len(self.skipped)} sharded tensors skipped)" if self.skipped else "")]
        for key, ranks in self.mismatches:
            lines.append(f"  {key}: rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} differ")
        return "\n".join(lines)


# ---------------------------------------------------------------- what each rank compares


@dataclass
class _Item:
    key: str
    tensor: torch.Tensor
    kind: bytes  # enters the key-list hash: identical on ranks that should compare this tensor
    group_tag: int  # ranks compare with each other only within one tag (DTensor replica groups)


def _dtensor_class() -> Any:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed tensor support
        return None
    return DTensor


def _tag64(data: bytes) -> int:
    """A signed 64-bit tag (fits an int64 tensor element)."""
    tag: int = struct.unpack("<q", struct.pack("<Q", _native.xxh3_64(data)))[0]
    return tag


def _classify(key: str, t: torch.Tensor, dtensor_cls: Any) -> _Item | None:
    """None when the tensor has nothing replicated to compare."""
    import torch

    if type(t).__name__ == "FlatParameter":  # FSDP1: each rank holds a different flat shard
        return None
    if dtensor_cls is not None and isinstance(t, dtensor_cls):
        placements = tuple(t.placements)
        mesh = t.device_mesh
        if not any(p.is_replicate() for p in placements):
            return None
        coord = mesh.get_coordinate()
        if coord is None:  # this rank is not part of the tensor's mesh
            return None
        mesh_ranks = [int(r) for r in mesh.mesh.reshape(-1).tolist()]
        # Ranks hold the same local tensor when they sit in the same mesh and at the same
        # coordinate on every mesh dimension that is not replicated (Shard, Partial, ...).
        split = [(dim, int(coord[dim])) for dim, p in enumerate(placements) if not p.is_replicate()]
        kind = repr((tuple(mesh.mesh.shape), mesh_ranks, [str(p) for p in placements])).encode()
        tag = _tag64(kind + repr(split).encode())
        with torch.no_grad():
            local = t.to_local()
        return _Item(key, local, kind, tag)
    return _Item(key, t, b"plain", 0)


def _collect(obj: Any) -> tuple[list[_Item], list[str]]:
    import torch

    from .digest import iter_tensors

    if isinstance(obj, torch.nn.Module):
        pairs: list[tuple[str, torch.Tensor]] = [*obj.named_parameters(), *obj.named_buffers()]
    elif isinstance(obj, Mapping):
        pairs = list(iter_tensors(obj))
    else:
        raise UsageError(
            f"check_replicas expects an nn.Module or a state_dict (a dict of tensors), got {type(obj).__name__}"
        )
    dtensor_cls = _dtensor_class()
    items, skipped = [], []
    for key, t in pairs:
        item = _classify(key, t, dtensor_cls)
        if item is None:
            skipped.append(key)
        else:
            items.append(item)
    return items, skipped


# ---------------------------------------------------------------- gathering


def _device_for(group: Any) -> torch.device:
    import torch
    import torch.distributed as dist

    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _i64_pair(value: int) -> tuple[int, int]:
    lo, hi = struct.unpack("<qq", value.to_bytes(16, "little"))
    return lo, hi


def _all_gather(local: torch.Tensor, group: Any, world: int) -> torch.Tensor:
    import torch
    import torch.distributed as dist

    out = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(out, local, group=group)
    return torch.stack(out).cpu()


def _majority_outliers(values: Sequence[Any], ranks: Sequence[int]) -> list[int]:
    """Ranks whose value differs from the strict majority, or from the first rank's value."""
    counts = Counter(values)
    value, count = counts.most_common(1)[0]
    reference = value if 2 * count > len(values) else values[0]
    return [r for r, v in zip(ranks, values, strict=True) if v != reference]


def _compare_groups(rows: Sequence[tuple[int, int, int] | None], ranks: Sequence[int]) -> list[int]:
    """Outlier ranks for one key, given each rank's (tag, digest lo, digest hi) or None if absent."""
    present = [r for r, row in zip(ranks, rows, strict=True) if row is not None]
    outliers = set(_majority_outliers([row is not None for row in rows], ranks))
    if outliers and set(present) & outliers:
        return sorted(outliers)  # the majority lacks this key: the ranks holding it are the odd ones
    by_tag: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for r, row in zip(ranks, rows, strict=True):
        if row is not None:
            by_tag.setdefault(row[0], []).append((r, (row[1], row[2])))
    for members in by_tag.values():
        if len(members) > 1:
            outliers.update(_majority_outliers([d for _, d in members], [r for r, _ in members]))
    return sorted(outliers)


def check_replicas(
    module_or_state_dict: Any,
    group: dist.ProcessGroup | None = None,
    *,
    leaf_size: int = DEFAULT_LEAF_SIZE,
    threads: int = 0,
) -> ReplicaReport:
    """Checks that data-parallel replicas hold bit-identical tensors. Collective: every rank of
    `group` (default: the world) must call it, with the same kind of argument.

    `module_or_state_dict` is an `nn.Module` (its parameters and buffers) or a possibly nested
    state_dict. Each rank hashes its tensors with `hash_state_dict` (on the GPU for CUDA tensors
    when the CUDA backend is usable), then the digests are all-gathered: one 32-byte all-gather
    checks that every rank holds the same keys, one all-gather of 24 bytes per tensor carries the
    digests (when key lists differ, a slower `all_gather_object` fallback runs instead). DTensors
    are compared through their local tensors among the ranks that should hold the same data:
    all ranks of the mesh for Replicate placements, ranks at the same Shard coordinate for mixed
    placements; DTensors with no Replicate placement and FSDP1 flat parameters are skipped.
    """
    import torch
    import torch.distributed as dist

    from .digest import hash_state_dict

    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError(
            "check_replicas needs torch.distributed: call torch.distributed.init_process_group first"
        )
    items, skipped = _collect(module_or_state_dict)
    pg = group if group is not None else dist.group.WORLD
    assert pg is not None  # initialized above
    world = dist.get_world_size(pg)
    ranks = tuple(dist.get_global_rank(pg, i) for i in range(world))  # all_gather's order
    digests = hash_state_dict({it.key: it.tensor for it in items}, leaf_size=leaf_size, threads=threads)
    nbytes = sum(d.nbytes for d in digests.values())
    device = _device_for(group)

    names = b"".join(
        struct.pack("<I", len(k)) + k + struct.pack("<I", len(it.kind)) + it.kind
        for it in items
        for k in [it.key.encode("utf-8")]
    )
    skipped_names = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in skipped)
    key_hash = _native.xxh3_128(
        _KEYS_TAG + struct.pack("<II", len(items), len(skipped)) + names + skipped_names
    )
    header = torch.tensor([len(items), len(skipped), *_i64_pair(key_hash)], dtype=torch.int64, device=device)
    headers = _all_gather(header, group, world)

    if bool((headers == headers[0]).all()):
        payload = torch.tensor(
            [v for it in items for v in (it.group_tag, *_i64_pair(digests[it.key].value))],
            dtype=torch.int64,
            device=device,
        ).reshape(len(items), 3)
        if not items:
            return ReplicaReport([], skipped, 0, ranks, nbytes)
        gathered = _all_gather(payload, group, world)  # [world, items, 3]
        differs = (gathered != gathered[0]).any(dim=2).any(dim=0).nonzero().flatten().tolist()
        mismatches = []
        for i in differs:
            rows = [tuple(int(v) for v in gathered[r, i].tolist()) for r in range(world)]
            outliers = _compare_groups(rows, ranks)  # type: ignore[arg-type]
            if outliers:
                mismatches.append((items[i].key, tuple(outliers)))
        return ReplicaReport(mismatches, skipped, len(items), ranks, nbytes)

    # Ranks disagree on which tensors exist: exchange keyed records instead.
    local = (
        [(it.key, it.group_tag, *_i64_pair(digests[it.key].value)) for it in items],
        skipped,
    )
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, local, group=group)
    order: dict[str, None] = {}
    per_rank: list[dict[str, tuple[int, int, int]]] = []
    for records, _ in everyone:
        per_rank.append({key: (tag, lo, hi) for key, tag, lo, hi in records})
        order.update(dict.fromkeys(key for key, *_ in records))
    all_skipped = list(dict.fromkeys(s for _, sk in everyone for s in sk))
    mismatches = []
    for key in order:
        outliers = _compare_groups([held.get(key) for held in per_rank], ranks)
        if outliers:
            mismatches.append((key, tuple(outliers)))
    note = "ranks hold different sets of tensors"
    return ReplicaReport(mismatches, all_skipped, len(order), ranks, nbytes, [note])
