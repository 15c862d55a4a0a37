"""`fastckpt demo`: the main job, end to end, on a sample checkpoint made in a temporary folder."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from ._common import add_json_flag, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run protect -> corrupt -> verify on a generated sample checkpoint",
        description="Writes a sample checkpoint (torch.save of a small model when torch is installed, "
        "raw bytes otherwise) into a temporary folder, protects it (sidecar manifest), flips one bit, and "
        "shows how verify pinpoints the damaged 64 KiB leaf and the tensor elements in it. Nothing "
        "outside the temporary folder is touched.",
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
    from ..protect import protect_file
    from ..verify import verify_path

    folder = tempfile.mkdtemp(prefix="fastckpt-demo-")
    report: dict[str, Any] = {"folder": folder}
    try:
        path, what = _write_sample(folder)
        say = (lambda *a: None) if args.json else print
        say(f"1. wrote sample checkpoint: {path}\n   {what}, {os.path.getsize(path)} bytes")
        prot = protect_file(path)
        say(
            f"2. protect: wrote {os.path.basename(prot.sidecar or '')} ({prot.format}, {prot.tensors} tensor "
            f"digests, {-(-prot.size // prot.leaf_size)} leaf digests of {prot.leaf_size} bytes, two copies)"
        )
        clean = verify_path(path)
        say(f"3. verify: {'OK' if clean['ok'] else 'DAMAGED'} ({clean['leaves_checked']} leaves checked)")
        offset = prot.size // 2 + 12345
        with open(path, "r+b") as f:  # our own temporary file, never a user's
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x10]))
        say(f"4. flipped one bit at offset {offset}")
        damaged = verify_path(path)
        for d in damaged["damaged"]:
            hit = (
                ", ".join(f"{e['tensor']}[{e['start']}:{e['stop']}]" for e in d["elements"])
                or "no tensor data"
            )
            say(f"5. verify: DAMAGED bytes [{d['offset']}, {d['offset'] + d['length']}): {hit}")
        bad = [d["offset"] // prot.leaf_size for d in damaged["damaged"]]
        report.update(
            path=path,
            size=prot.size,
            digest=f"{prot.digest:032x}",
            sidecar=prot.sidecar,
            corrupted_offset=offset,
            damaged_leaves=bad,
            damaged_tensors=sorted({k for d in damaged["damaged"] for k in d["tensors"]}),
            verify=damaged,
            ok=clean["ok"] and not damaged["ok"] and bad == [offset // prot.leaf_size],
        )
        say(
            f"6. report: exit code 1 from 'fastckpt verify {os.path.basename(path)}'; tensors hit: "
            f"{', '.join(report['damaged_tensors']) or 'none'}"
        )
        if args.json:
            print_json(report)
        return 0 if report["ok"] else 1
    finally:
        if args.keep:
            if not args.json:
                print(f"kept {folder}")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
