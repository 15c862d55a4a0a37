"""The native backend where threads cannot be started (a process limit, a container's pids.max).

Every pool starts its workers through cpu::run_workers (csrc/cpu/workers.hpp), and protect's parity
writer falls back to writing from the workers: results must be exactly those of a normal run. The
child process runs with an LD_PRELOAD shim whose pthread_create fails with EAGAIN after the first N
calls (N from FAIL_PTHREAD_AFTER), which is what glibc reports at such a limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zlib

import pytest
import xxhash

from fastckpt import _native
from fastckpt import _parity_reference as ref
from fastckpt.parity import ParityParams, n_leaves_of

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="needs Linux and a C compiler for the pthread_create shim",
)

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg) {
  static create_fn real;
  static int left = -1;
  if (!real) real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
  if (left < 0) {
    const char *e = getenv("FAIL_PTHREAD_AFTER");
    left = e ? atoi(e) : 1 << 30;
  }
  if (__atomic_fetch_sub(&left, 1, __ATOMIC_RELAXED) <= 0) return EAGAIN;
  return real(t, a, f, arg);
}
"""

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    from fastckpt import _native
    path, out, k, m, groups = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    try:
        threading.Thread(target=lambda: None).start()
        shim = "inactive"
    except RuntimeError:
        shim = "active"
    data = open(path, "rb").read()
    res = {"shim": shim}
    res["hash_file"] = _native.hash_file(path, 65536, 4)[1].hex()
    res["leaf_digests"] = _native.leaf_digests(data, 65536, 4).hex()
    res["crc32"] = _native.crc32(data, threads=4)
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        r = _native.rs_scan_file(path, 65536, k, m, groups, [(100, len(data) - 200)], [(0, len(data))], 4, "", fd, 4096)
    finally:
        os.close(fd)
    res["scan_leaves"] = r[1].hex()
    res["scan_span_leaves"] = r[3].hex()
    res["scan_crcs"] = list(r[4])
    res["scan_parity_leaves"] = r[5].hex()
    res["rs_protect_parity_crc"] = __import__("zlib").crc32(_native.rs_protect(data, 65536, k, m, groups, 4)[1])
    print(json.dumps(res))
    """
)


def leaves(data: bytes) -> str:
    return b"".join(
        xxhash.xxh3_64_intdigest(data[i : i + 65536]).to_bytes(8, "little")
        for i in range(0, len(data), 65536)
    ).hex()


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("shim")
    src, lib = d / "shim.c", d / "libfailthreads.so"
    src.write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src), "-ldl"], check=True)
    return str(lib)


@pytest.mark.parametrize("allowed", [0, 1])
def test_native_pools_survive_failed_thread_starts(tmp_path, shim: str, allowed: int) -> None:
    data = os.urandom(40 * 65536 * 16 + 12345)  # ~40 MiB: every pool wants threads
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    out = tmp_path / "parity.out"
    params = ParityParams.from_redundancy(25.0, n_leaves_of(len(data), 65536))  # >= 8 MiB of parity
    env = dict(os.environ, LD_PRELOAD=shim, FAIL_PTHREAD_AFTER=str(allowed), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(out), str(params.k), str(params.m), str(params.groups)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    if allowed == 0:
        assert got["shim"] == "active"  # the limit is real in the child: no thread could start
    want_leaves = leaves(data)
    assert got["hash_file"] == want_leaves
    assert got["leaf_digests"] == want_leaves
    assert got["crc32"] == zlib.crc32(data)
    assert got["scan_leaves"] == want_leaves
    assert got["scan_span_leaves"] == leaves(data[100 : len(data) - 100])
    assert got["scan_crcs"] == [zlib.crc32(data)]
    parity = ref.encode(data, 65536, params.k, params.m, params.groups)
    assert got["scan_parity_leaves"] == leaves(parity)
    assert out.read_bytes() == bytes(4096) + parity
    assert got["rs_protect_parity_crc"] == zlib.crc32(parity)
    # And the same calls with threads, in this process, agree (the oracle above is not vacuous).
    assert _native.leaf_digests(data, 65536, 4).hex() == want_leaves
