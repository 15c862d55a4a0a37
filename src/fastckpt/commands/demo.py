"""`fastckpt demo`: the main job, end to end, on a sample checkpoint made in a temporary folder."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Any

from ._common import add_json_flag, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run hash -> corrupt -> locate on a generated sample checkpoint",
        description="Writes a sample checkpoint (torch.save of a small model when torch is installed, "
        "raw bytes otherwise) into a temporary folder, hashes it, flips one bit, and shows how the "
        "leaf digests pinpoint the damaged 64 KiB leaf. Nothing outside the temporary folder is touched.",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    add_json_flag(p)
    return p


def _write_sample(folder: str) -> tuple[str, str]:
    path = os.path.join(folder, "sample_checkpoint.pt")
    try:
        import torch
    except ImportError:
        import random

        rng = random.Random(0)
        with open(path, "wb") as f:
            f.write(rng.randbytes(8 << 20))
        return path, "8 MiB of random bytes (torch is not installed)"
    gen = torch.Generator().manual_seed(0)
    state = {
        f"layers.{i}.{name}": torch.randn(shape, generator=gen)
        for i in range(4)
        for name, shape in (("weight", (512, 512)), ("bias", (512,)))
    }
    torch.save({"model": state, "step": 1000}, path)
    return path, "torch.save of a 4-layer MLP state_dict (4 x 512x512 float32)"


def run(args: argparse.Namespace) -> int:
    from ..digest import hash_file

    folder = tempfile.mkdtemp(prefix="fastckpt-demo-")
    report: dict[str, Any] = {"folder": folder}
    try:
        path, what = _write_sample(folder)
        clean = hash_file(path)
        say = (lambda *a: None) if args.json else print
        say(f"1. wrote sample checkpoint: {path}\n   {what}, {clean.nbytes} bytes")
        say(f"2. hashed it: {len(clean.leaves)} leaves of {clean.leaf_size} bytes, digest {clean.hex()}")
        offset = clean.nbytes // 2 + 12345
        before = os.path.join(folder, "before_corruption.pt")
        shutil.copyfile(path, before)
        with open(path, "r+b") as f:  # our own temporary file, never a user's
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x10]))
        damaged = hash_file(path)
        bad = [i for i, (a, b) in enumerate(zip(clean.leaves, damaged.leaves, strict=True)) if a != b]
        say(f"3. flipped one bit at offset {offset}; digest is now {damaged.hex()}")
        for i in bad:
            lo = i * clean.leaf_size
            hi = min(lo + clean.leaf_size, clean.nbytes)
            say(f"4. damaged leaf {i}: bytes [{lo}, {hi}) -- the flip is inside it")
        if what.startswith("torch.save"):
            from ..diff import diff

            changed = [t for t in diff(before, path).tensors if t.status != "equal"]
            report["diff"] = [{"key": t.key, "first_diff_index": t.first_diff_index} for t in changed]
            for t in changed:
                say(
                    f"5. fastckpt diff before/after: {t.key} differs at element {t.first_diff_index} "
                    f"(max |B-A| {t.max_abs_diff:.3g})"
                )
        report.update(
            path=path,
            size=clean.nbytes,
            digest=clean.hex(),
            corrupted_offset=offset,
            damaged_digest=damaged.hex(),
            damaged_leaves=bad,
            ok=bad == [offset // clean.leaf_size],
        )
        if args.json:
            print_json(report)
        return 0 if report["ok"] else 1
    finally:
        if args.keep:
            if not args.json:
                print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
