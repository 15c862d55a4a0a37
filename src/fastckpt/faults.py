"""Fault injection for checkpoints and their sidecars, and the trial that checks fastckpt against it.

This module owns the damage model used by `tests/test_fault_injection.py`,
`benchmarks/fault_campaign.py` and `fastckpt demo`: seeded injectors for the faults that storage,
networks and crashes cause (bit flips, multi-bit bursts, zeroed 4 KiB pages, overwritten ranges,
truncation, appended garbage, a damaged sidecar copy, both copies, damaged parity), sample
checkpoints in four layouts (torch zip, safetensors, DCP folder, opaque bytes), an oracle that says
from the bytes alone (original against damaged, and the parity rule of docs/FORMAT.md 3.6) whether
the damage is within the repair budget, and `run_trial`, which runs `fastckpt verify` and
`fastckpt repair` in-process and checks the promises: damage is always detected; within the budget
the repaired file is byte-identical to the original (SHA-256); beyond it, repair exits non-zero and
leaves every byte and file as it found them. torch is imported only to write torch and DCP samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DATA_FAULTS = ("bit_flip", "burst", "zero_page", "overwrite", "truncate", "append")
SIDECAR_FAULTS = ("sidecar_copy", "sidecar_both", "parity")
FAULT_KINDS = DATA_FAULTS + SIDECAR_FAULTS
FORMATS = ("torch", "safetensors", "dcp", "opaque")
PAGE = 4096


@dataclass(frozen=True)
class Fault:
    """One injected fault: `path` is the damaged file (a checkpoint file or a sidecar); bytes
    [offset, offset + length) were changed (truncate: removed from there on; append: added there)."""

    kind: str
    path: str
    offset: int
    length: int
    note: str = ""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _patch(path: str, offset: int, data: bytes) -> None:
    # The caller's own scratch copy: faults are injected in place on purpose.
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _changed(old: bytes, new: bytes) -> bytes:
    """`new`, altered in its first byte if it equals `old`, so that every fault changes something."""
    if new == old:
        return bytes([new[0] ^ 0xFF]) + new[1:]
    return new


def bit_flip(path: str, rng: random.Random) -> Fault:
    size = os.path.getsize(path)
    off = rng.randrange(size)
    bit = rng.randrange(8)
    _patch(path, off, bytes([_read_byte(path, off) ^ (1 << bit)]))
    return Fault("bit_flip", path, off, 1, f"bit {bit}")


def _read_byte(path: str, off: int) -> int:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(1)[0]


def burst(path: str, rng: random.Random, *, max_bytes: int = 64) -> Fault:
    """2..max_bytes consecutive bytes with several flipped bits; the first and last byte always change."""
    size = os.path.getsize(path)
    n = min(rng.randint(2, max_bytes), size)
    off = rng.randrange(size - n + 1)
    with open(path, "rb") as f:
        f.seek(off)
        old = bytearray(f.read(n))
    for i in range(n):
        if i in (0, n - 1) or rng.random() < 0.3:
            old[i] ^= rng.randint(1, 255)
    _patch(path, off, bytes(old))
    return Fault("burst", path, off, n)


def zero_page(path: str, rng: random.Random, *, page: int = PAGE) -> Fault:
    """Zeroes one page-aligned page that holds a non-zero byte (a lost or unwritten page)."""
    data = _read(path)
    pages = [p for p in range(0, len(data), page) if any(data[p : p + page])]
    if not pages:
        raise ValueError(f"{path}: every page is already zero")
    p = rng.choice(pages)
    n = min(page, len(data) - p)
    _patch(path, p, bytes(n))
    return Fault("zero_page", path, p, n)


def overwrite(path: str, rng: random.Random, *, max_bytes: int = 1 << 17, length: int | None = None) -> Fault:
    """Random bytes over a random range of 1..max_bytes bytes (or exactly `length`)."""
    size = os.path.getsize(path)
    n = min(length if length is not None else rng.randint(1, max_bytes), size)
    off = rng.randrange(size - n + 1)
    with open(path, "rb") as f:
        f.seek(off)
        old = f.read(n)
    _patch(path, off, _changed(old, rng.randbytes(n)))
    return Fault("overwrite", path, off, n)


def truncate(
    path: str, rng: random.Random, *, max_cut: int | None = None, new_size: int | None = None
) -> Fault:
    """Cuts the file short (a crash during a save or a copy): by 1..max_cut bytes, or to `new_size`."""
    size = os.path.getsize(path)
    if new_size is None:
        cut = rng.randint(1, min(max_cut or size, size))
        new_size = size - cut
    os.truncate(path, new_size)
    return Fault("truncate", path, new_size, size - new_size)


def append_garbage(path: str, rng: random.Random, *, max_bytes: int = 1 << 16) -> Fault:
    size = os.path.getsize(path)
    n = rng.randint(1, max_bytes)
    with open(path, "ab") as f:
        f.write(rng.randbytes(n))
    return Fault("append", path, size, n)


def copy_ranges(sidecar: str) -> tuple[tuple[int, int], tuple[int, int], int]:
    """((copy A offset, length), (copy B offset, length), bulk length) from the sidecar's header
    locator (FORMAT.md 2.2), read independently of fastckpt.sidecar."""
    with open(sidecar, "rb") as f:
        head = f.read(64)
    magic, _, _, _, a_off, a_len, b_off, b_len, bulk = struct.unpack("<8sHHIQQQQQ", head[:56])
    if magic != b"FCKPT-SC":
        raise ValueError(f"{sidecar}: no sidecar header")
    return (a_off, a_len), (b_off, b_len), bulk


def _damage_range(path: str, rng: random.Random, lo: int, hi: int, max_bytes: int) -> tuple[int, int]:
    n = rng.randint(1, min(max_bytes, hi - lo))
    off = rng.randrange(lo, hi - n + 1)
    if rng.random() < 0.5 and n == 1:
        _patch(path, off, bytes([_read_byte(path, off) ^ (1 << rng.randrange(8))]))
    else:
        with open(path, "rb") as f:
            f.seek(off)
            old = f.read(n)
        _patch(path, off, _changed(old, rng.randbytes(n)))
    return off, n


def damage_sidecar_copy(
    sidecar: str, rng: random.Random, *, copy: str | None = None, max_bytes: int = 64
) -> Fault:
    """Damages one manifest copy (A or B) of a sidecar."""
    a, b, _ = copy_ranges(sidecar)
    which = copy or rng.choice("AB")
    lo, n = a if which == "A" else b
    off, k = _damage_range(sidecar, rng, lo, lo + n, max_bytes)
    return Fault("sidecar_copy", sidecar, off, k, f"copy {which}")


def damage_both_copies(sidecar: str, rng: random.Random, *, max_bytes: int = 64) -> Fault:
    """Damages both manifest copies, at independent places."""
    a, b, _ = copy_ranges(sidecar)
    off_a, n_a = _damage_range(sidecar, rng, a[0], a[0] + a[1], max_bytes)
    off_b, n_b = _damage_range(sidecar, rng, b[0], b[0] + b[1], max_bytes)
    return Fault(
        "sidecar_both", sidecar, off_a, n_a, json.dumps({"a": [off_a - a[0], n_a], "b": [off_b - b[0], n_b]})
    )


def damage_parity(sidecar: str, rng: random.Random, *, max_bytes: int = 1 << 12) -> Fault:
    """Damages the parity bytes in the sidecar's bulk area (between the two copies)."""
    a, _, bulk = copy_ranges(sidecar)
    if not bulk:
        raise ValueError(f"{sidecar}: has no parity")
    start = -(-(a[0] + a[1]) // PAGE) * PAGE
    off, n = _damage_range(sidecar, rng, start, start + bulk, max_bytes)
    return Fault("parity", sidecar, off, n)


def inject(kind: str, path: str, rng: random.Random, **kw: Any) -> Fault:
    """Injects one fault of `kind` into the file `path` (sidecar kinds: into `path`'s sidecar)."""
    sidecar = path + ".fastckpt"
    table: dict[str, Callable[..., Fault]] = {
        "bit_flip": lambda: bit_flip(path, rng),
        "burst": lambda: burst(path, rng, **kw),
        "zero_page": lambda: zero_page(path, rng, **kw),
        "overwrite": lambda: overwrite(path, rng, **kw),
        "truncate": lambda: truncate(path, rng, **kw),
        "append": lambda: append_garbage(path, rng, **kw),
        "sidecar_copy": lambda: damage_sidecar_copy(sidecar, rng, **kw),
        "sidecar_both": lambda: damage_both_copies(sidecar, rng, **kw),
        "parity": lambda: damage_parity(sidecar, rng, **kw),
    }
    if kind not in table:
        raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
    return table[kind]()


# ---------------------------------------------------------------------------------------------
# The oracle: is the damage within the repair budget? (From the bytes and FORMAT.md alone.)
# ---------------------------------------------------------------------------------------------


def changed_leaves(original: bytes, damaged: bytes, leaf_size: int) -> list[int]:
    """Leaves of `original` whose bytes differ in `damaged` or are not wholly present in it."""
    n = -(-len(original) // leaf_size)
    out = []
    for i in range(n):
        lo, hi = i * leaf_size, min((i + 1) * leaf_size, len(original))
        if hi > len(damaged) or original[lo:hi] != damaged[lo:hi]:
            out.append(i)
    return out


def parity_can_rebuild(leaves: list[int], record: dict[str, int] | None) -> bool:
    """FORMAT.md 3.6 with intact parity: leaf i is in group i mod G; a group survives at most m erasures."""
    if not leaves:
        return True
    if record is None:
        return False
    per_group: dict[int, int] = {}
    for i in leaves:
        g = i % record["groups"]
        per_group[g] = per_group.get(g, 0) + 1
    return max(per_group.values()) <= record["m"]


def parity_record(sidecar_bytes: bytes) -> tuple[int, dict[str, int] | None]:
    """(leaf size, parity record or None) of a sidecar, read with struct from its copy A."""
    (a_off, a_len), _, _ = _ranges_of(sidecar_bytes)
    copy = sidecar_bytes[a_off : a_off + a_len]
    count, body_len = struct.unpack_from("<I", copy, 16)[0], struct.unpack_from("<Q", copy, 24)[0]
    pos, leaf_size, record = 32, 0, None
    for _ in range(count):
        typ, _, length = struct.unpack_from("<IIQ", copy, pos)
        payload = copy[pos + 16 : pos + 16 + length]
        if typ == 2:
            leaf_size = struct.unpack_from("<Q", payload)[0]
        elif typ == 5:
            (n,) = struct.unpack_from("<H", payload)
            record = json.loads(payload[2 : 2 + n])
        pos += 16 + length + (-length % 8)
    assert pos == 32 + body_len
    return leaf_size, record


def _ranges_of(sidecar_bytes: bytes) -> tuple[tuple[int, int], tuple[int, int], int]:
    _, _, _, _, a_off, a_len, b_off, b_len, bulk = struct.unpack("<8sHHIQQQQQ", sidecar_bytes[:56])
    return (a_off, a_len), (b_off, b_len), bulk


def splice_possible(pristine_sidecar: bytes, damaged_sidecar: bytes) -> bool:
    """Both copies damaged: recoverable when no byte offset (relative to its copy) is damaged in both
    copies and at least one copy's checksum is intact."""
    (a_off, n), (b_off, _), _ = _ranges_of(pristine_sidecar)
    da = {i for i in range(n) if pristine_sidecar[a_off + i] != damaged_sidecar[a_off + i]}
    db = {i for i in range(n) if pristine_sidecar[b_off + i] != damaged_sidecar[b_off + i]}
    checksum = set(range(n - 16, n))
    return not (da & db) and not (da & checksum and db & checksum)


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def _sample_bytes(rng: random.Random, nbytes: int) -> bytes:
    """Weights-like content: random bytes with some runs of zeros (so zeroing a page can be a no-op
    only where the oracle can see it)."""
    out = bytearray(rng.randbytes(nbytes))
    for _ in range(nbytes // (1 << 16)):
        p = rng.randrange(nbytes)
        q = min(p + rng.randint(1, 512), nbytes)
        out[p:q] = bytes(q - p)
    return bytes(out)


def write_sample(fmt: str, folder: str, *, nbytes: int = 1 << 20, seed: int = 0) -> str:
    """Writes a sample checkpoint of about `nbytes` in `folder`; returns its path (a folder for dcp)."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    if fmt == "opaque":
        path = os.path.join(folder, "blob.bin")
        with open(path, "wb") as f:
            f.write(_sample_bytes(rng, nbytes))
        return path
    if fmt == "safetensors":
        # The format by hand (8-byte header length, JSON header, data): no library needed.
        path = os.path.join(folder, "model.safetensors")
        sizes = [nbytes // 2 // 4 * 4, nbytes // 3 // 4 * 4, nbytes // 6 // 2 * 2]
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        pos = 0
        blobs = []
        for i, (n, dt, item) in enumerate(zip(sizes, ("F32", "F32", "BF16"), (4, 4, 2), strict=True)):
            header[f"layers.{i}.weight"] = {"dtype": dt, "shape": [n // item], "data_offsets": [pos, pos + n]}
            blobs.append(_sample_bytes(rng, n))
            pos += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
        return path
    import torch

    gen = torch.Generator().manual_seed(seed)
    per = max(nbytes // 4 // 4, 1)
    state = {
        "model": {f"layers.{i}.weight": torch.randn(per // 64, 64, generator=gen) for i in range(3)},
        "opt": {"step": torch.tensor(7), "exp_avg": torch.randn(per // 2, generator=gen).to(torch.bfloat16)},
    }
    if fmt == "torch":
        path = os.path.join(folder, "model.pt")
        torch.save(state, path)
        return path
    if fmt == "dcp":
        import warnings

        import torch.distributed.checkpoint as dcp

        path = os.path.join(folder, "ckpt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save(state, checkpoint_id=path)  # type: ignore[attr-defined]
        return path
    raise ValueError(f"unknown sample format {fmt!r}; one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, dict[str, Any] | None]:
    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None)


def _snapshot(root: str) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under root (or of root itself, when it is a file)."""
    if os.path.isfile(root):
        return {os.path.basename(root): hashlib.sha256(_read(root)).hexdigest()}
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = hashlib.sha256(_read(full)).hexdigest()
    return out


@dataclass
class TrialResult:
    format: str
    kind: str
    seed: int
    fault: Fault
    target: str  # the checkpoint file the fault went into (or whose sidecar it hit)
    expected_repairable: bool
    verify_exit: int
    detected: bool
    repair_exit: int
    exact: bool  # repairable: every file is now byte-identical (SHA-256) to the pristine sample
    clean_failure: bool  # not repairable: exit != 0, nothing changed, no file added
    backup_ok: bool  # the damaged original was kept as PATH.damaged, byte for byte
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def protect_sample(path: str, *, leaf_size: int = 4096, redundancy: float = 5.0) -> None:
    code, _ = _cli(
        "protect", path, "--leaf-size", str(leaf_size), "--redundancy", str(redundancy), "--json", "-q"
    )
    if code != 0:
        raise RuntimeError(f"fastckpt protect {path} exited {code}")


def run_trial(
    fmt: str, sample: str, workdir: str, kind: str, seed: int, *, fault_kw: dict[str, Any] | None = None
) -> TrialResult:
    """Copies the protected `sample` (a file with its sidecar, or a folder) into `workdir`, injects one
    fault of `kind` (seeded), runs `fastckpt verify` and `fastckpt repair` and checks the outcome."""
    rng = random.Random(f"{fmt}/{kind}/{seed}")
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    base = os.path.basename(sample)
    work = os.path.join(workdir, base)
    if os.path.isdir(sample):
        shutil.copytree(sample, work)
        targets = sorted(
            os.path.join(work, n)
            for n in os.listdir(work)
            if not n.endswith(".fastckpt") and n != ".fastckpt-dir"
        )
        target = rng.choice(targets)
        scope = work
    else:
        shutil.copy2(sample, work)
        shutil.copy2(sample + ".fastckpt", work + ".fastckpt")
        target = work
        scope = workdir
    pristine = _snapshot(scope)
    original = _read(target)
    original_sidecar = _read(target + ".fastckpt")
    fault = inject(kind, target, rng, **(fault_kw or {}))
    damaged_state = _snapshot(scope)
    damaged_bytes = _read(target)
    leaf_size, record = parity_record(original_sidecar)
    if kind in DATA_FAULTS:
        expected = parity_can_rebuild(changed_leaves(original, damaged_bytes, leaf_size), record)
    elif kind == "sidecar_both":
        expected = splice_possible(original_sidecar, _read(target + ".fastckpt"))
    else:
        expected = True
    problems: list[str] = []

    v_code, v_out = _cli("verify", work, "--json", "-q")
    if kind in DATA_FAULTS:
        detected = v_code == 1
    elif kind == "sidecar_both":
        detected = v_code == 2
    else:  # the file is intact: verify exits 0 and reports the damaged sidecar
        detected = v_code == 0 and bool(v_out and v_out.get("sidecar_damaged"))
    if not detected:
        problems.append(f"not detected: verify exited {v_code}")

    r_code, r_out = _cli("repair", work, "--json", "-q")
    after = _snapshot(scope)
    exact = clean = backup_ok = False
    if expected:
        backup = target + ".damaged"
        extra = {k for k in after if k not in pristine}
        if kind in DATA_FAULTS:
            backup_ok = os.path.exists(backup) and _read(backup) == damaged_bytes
            extra.discard(os.path.relpath(backup, scope))
        else:
            backup_ok = True
        exact = r_code == 0 and all(after.get(k) == h for k, h in pristine.items()) and not extra
        if not exact:
            diff = sorted(k for k, h in pristine.items() if after.get(k) != h)
            problems.append(
                f"within budget but repair exited {r_code}, differing {diff}, extra {sorted(extra)}"
            )
        if not backup_ok:
            problems.append("the damaged original was not kept as PATH.damaged")
    else:
        clean = r_code != 0 and after == damaged_state
        if not clean:
            problems.append(f"beyond budget: repair exited {r_code}, files changed: {after != damaged_state}")
        if kind in DATA_FAULTS and r_code != 1:
            problems.append(f"beyond budget: repair exited {r_code}, expected 1")
        if kind in DATA_FAULTS and r_out is not None and not r_out.get("unrecoverable"):
            problems.append("beyond budget, but the report lists nothing unrecoverable")
    return TrialResult(
        fmt, kind, seed, fault, target, expected, v_code, detected, r_code, exact, clean, backup_ok, problems
    )


__all__ = [
    "DATA_FAULTS",
    "FAULT_KINDS",
    "FORMATS",
    "SIDECAR_FAULTS",
    "Fault",
    "TrialResult",
    "append_garbage",
    "bit_flip",
    "burst",
    "changed_leaves",
    "copy_ranges",
    "damage_both_copies",
    "damage_parity",
    "damage_sidecar_copy",
    "inject",
    "overwrite",
    "parity_can_rebuild",
    "parity_record",
    "protect_sample",
    "run_trial",
    "splice_possible",
    "truncate",
    "write_sample",
    "zero_page",
]
