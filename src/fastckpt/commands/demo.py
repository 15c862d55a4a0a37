"""`fastckpt demo`: the main job, end to end, on a sample checkpoint made in a temporary folder."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Any

from ..errors import FastckptError
from ._common import add_json_flag, print_json


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run protect -> corrupt -> verify -> repair on a generated sample checkpoint",
        description="Writes a sample checkpoint (torch.save of a small model when torch is installed, "
        "raw bytes otherwise) into a temporary folder, protects it (sidecar manifest with 5%% parity), "
        "flips one bit, shows how verify pinpoints the damaged 64 KiB leaf and the tensor elements in it, "
        "then repairs it from the parity and checks that it is byte-identical to the original (SHA-256). "
        "Nothing outside the temporary folder is touched.",
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
    import hashlib

    from ..protect import protect_file
    from ..repair import repair_path
    from ..verify import verify_path

    folder = tempfile.mkdtemp(prefix="fastckpt-demo-")
    report: dict[str, Any] = {"folder": folder}
    try:
        path, what = _write_sample(folder)
        say = (lambda *a: None) if args.json else print
        say(f"1. wrote sample checkpoint: {path}\n   {what}, {os.path.getsize(path)} bytes")
        with open(path, "rb") as f:
            original_sha = hashlib.sha256(f.read()).hexdigest()
        prot = protect_file(path)
        par = prot.parity
        parity_note = (
            f", {prot.redundancy:g}% parity: {par.parity_nbytes(prot.leaf_size)} bytes"
            if par is not None
            else ""
        )
        say(
            f"2. protect: wrote {os.path.basename(prot.sidecar or '')} ({prot.format}, {prot.tensors} tensor "
            f"digests, {-(-prot.size // prot.leaf_size)} leaf digests of {prot.leaf_size} bytes, two copies"
            f"{parity_note})"
        )
        clean = verify_path(path)
        say(f"3. verify: {'OK' if clean['ok'] else 'DAMAGED'} ({clean['leaves_checked']} leaves checked)")
        offset = prot.size // 2 + 12345
        before = os.path.join(folder, "before_corruption.pt")
        shutil.copyfile(path, before)
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
        fixed = repair_path(path)
        say(
            f"6. repair: rebuilt {fixed['rebuilt_from_parity']} leaf from parity, verified it against the "
            f"sidecar, renamed it over the file; damaged original kept as {os.path.basename(fixed['backup'] or '')}"
        )
        after = verify_path(path)
        with open(path, "rb") as f:
            restored = hashlib.sha256(f.read()).hexdigest() == original_sha
        say(
            f"7. verify: {'OK' if after['ok'] else 'DAMAGED'}; SHA-256 "
            f"{'identical to' if restored else 'DIFFERENT from'} the original"
        )
        report.update(
            path=path,
            size=prot.size,
            digest=f"{prot.digest:032x}",
            sidecar=prot.sidecar,
            corrupted_offset=offset,
            damaged_leaves=bad,
            damaged_tensors=sorted({k for d in damaged["damaged"] for k in d["tensors"]}),
            verify=damaged,
            repair=fixed,
            restored=restored,
            ok=clean["ok"]
            and not damaged["ok"]
            and bad == [offset // prot.leaf_size]
            and fixed["ok"]
            and after["ok"]
            and restored,
        )
        say(
            f"8. report: 'fastckpt verify {os.path.basename(path)}' exited 1 (tensors hit: "
            f"{', '.join(report['damaged_tensors']) or 'none'}); 'fastckpt repair' exited 0 and restored it bit-exact"
        )
        if what.startswith("torch.save"):
            from ..diff import diff

            changed = [t for t in diff(before, path).tensors if t.status != "equal"]
            report["diff"] = [{"key": t.key, "first_diff_index": t.first_diff_index} for t in changed]
            for t in changed:
                say(
                    f"7. fastckpt diff before/after: {t.key} differs at element {t.first_diff_index} "
                    f"(max |B-A| {t.max_abs_diff:.3g})"
                )
        # ---- run report (report issue): a small run, then its HTML report outside the temp folder.
        try:
            report["html_report"] = _demo_run_report(folder, say)
        except FastckptError as e:  # the run report's optional dependencies (numpy) are missing
            report["html_report"] = None
            say(f"9. report skipped: {e}")
        # ---- end run report
        if args.json:
            print_json(report)
        return 0 if report["ok"] else 1
    finally:
        if args.keep:
            if not args.json:
                print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


# ---- run report (report issue) ----------------------------------------------------------------


def _demo_run_report(folder: str, say: Any) -> str:
    """Writes three checkpoints of a tiny run (one layer frozen) and their `fastckpt report` page."""
    from .._report_html import render_html
    from ..report import build_report
    from .report import write_html_atomic

    run = os.path.join(folder, "run")
    os.makedirs(run)
    try:
        import torch
    except ImportError:
        import random

        rng = random.Random(1)
        frozen = rng.randbytes(1 << 20)
        for step in (100, 200, 300):
            with open(os.path.join(run, f"step_{step}.pt"), "wb") as f:
                f.write(frozen + rng.randbytes(1 << 20))
    else:
        gen = torch.Generator().manual_seed(1)
        state = {f"layers.{i}.weight": torch.randn(256, 256, generator=gen) for i in range(4)}
        for step in (100, 200, 300):
            for i in range(1, 4):  # layers.0 stays frozen
                state[f"layers.{i}.weight"] += 1e-3 * i * torch.randn(256, 256, generator=gen)
            torch.save({"model": state, "step": step}, os.path.join(run, f"step_{step}.pt"))
    r = build_report(run, save_seconds=30.0, mtbf_hours=24.0)
    fd, html = tempfile.mkstemp(prefix="fastckpt-demo-report-", suffix=".html")
    os.close(fd)
    write_html_atomic(html, render_html(r))
    say(
        f"9. report: 3 checkpoints, {r['dedup']['shared_fraction'] * 100:.0f}% of their bytes shared, "
        f"checkpoint every {r['interval']['recommended_seconds'] / 60:.0f} min; wrote {html}"
    )
    return html
