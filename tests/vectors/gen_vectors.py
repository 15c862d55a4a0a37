"""Generates tests/vectors/digest_v1.json from the pure-Python reference (fastckpt._reference).

Inputs use the BLAKE3 test-vector pattern: byte i is i % 251, so any implementation can rebuild
them without the file. Run `python tests/vectors/gen_vectors.py` to regenerate and
`--check` to verify that the checked-in file is what the reference produces. Never hand-edit it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
# Load the reference module by path: it must not need the compiled package (nor the package itself).
_spec = importlib.util.spec_from_file_location(
    "fastckpt_reference", HERE.parents[1] / "src" / "fastckpt" / "_reference.py"
)
assert _spec is not None and _spec.loader is not None
_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reference)

OUT = HERE / "digest_v1.json"
LENGTHS = [
    0,
    1,
    3,
    4,
    8,
    9,
    16,
    17,
    128,
    129,
    240,
    241,
    1023,
    1024,
    1025,
    4095,
    4096,
    4097,
    65536,
    65537,
    200003,
]
LEAF_SIZES = [64, 1024, 65536]
TENSORS = [
    # (dtype, shape): the input is the first nbytes of the pattern.
    ("float32", [2, 3]),
    ("bfloat16", [5]),
    ("int64", []),
    ("bool", [0]),
    ("float8_e4m3fn", [4, 4, 4]),
    ("complex64", [3, 1]),
]
ITEMSIZE = {"float32": 4, "bfloat16": 2, "int64": 8, "bool": 1, "float8_e4m3fn": 1, "complex64": 8}


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def build() -> dict[str, object]:
    bytes_cases = []
    for n in LENGTHS:
        data = pattern(n)
        for leaf in LEAF_SIZES:
            if leaf == 64 and n > 5000:
                continue  # keeps the file small; long inputs are covered with larger leaves
            bytes_cases.append(
                {
                    "input_len": n,
                    "leaf_size": leaf,
                    "leaves": [f"{v:016x}" for v in _reference.leaf_digests(data, leaf)],
                    "digest": f"{_reference.bytes_digest(data, leaf):032x}",
                }
            )
    tensor_cases = []
    for dtype, shape in TENSORS:
        numel = 1
        for s in shape:
            numel *= s
        data = pattern(numel * ITEMSIZE[dtype])
        if dtype == "bool":
            data = bytes(b & 1 for b in data)
        tensor_cases.append(
            {
                "dtype": dtype,
                "shape": shape,
                "input_len": len(data),
                "leaf_size": 1024,
                "digest": f"{_reference.tensor_digest(data, 1024, dtype, shape):032x}",
            }
        )
    sd = {"a.weight": _reference.tensor_digest(pattern(16), 1024, "float32", [4]), "b": 0}
    return {
        "format": "fastckpt digest v1",
        "input": "byte i of an input of length n is i % 251",
        "bytes": bytes_cases,
        "tensors": tensor_cases,
        "state_dict": {
            "leaf_size": 1024,
            "entries": {k: f"{v:032x}" for k, v in sd.items()},
            "digest": f"{_reference.state_dict_digest(sd, 1024):032x}",
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if the checked-in file differs")
    args = ap.parse_args()
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run python {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
