"""Large native calls release the GIL (blake3-py's test_buffers_released idea): while a worker
thread is inside one long leaf-hashing call, the main thread must keep running Python code."""

from __future__ import annotations

import threading
import time

from fastckpt import _native


def test_leaf_hashing_releases_the_gil() -> None:
    buf = bytearray(256 << 20)  # zero-filled, large enough that the call spans many switch intervals
    window: list[float] = []

    def worker() -> None:
        window.append(time.perf_counter())
        _native.leaf_digests(buf, 65536, 1)
        window.append(time.perf_counter())

    ticks: list[float] = []
    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    start, end = window
    # The main thread may run for one switch interval (5 ms) after the worker takes its start time and
    # before it enters native code; past that, a held GIL would block it until the call returns. So
    # require ticks in the last quarter of a call that lasts far longer than one switch interval.
    assert end - start > 0.02, "call too short to tell; enlarge the buffer"
    late = [x for x in ticks if start + 0.75 * (end - start) < x < end]
    assert late, (len(ticks), end - start)


def test_small_calls_are_still_correct_without_release() -> None:
    # Below the 64 KiB threshold the GIL is kept; results must not depend on that choice.
    data = bytes(range(256)) * 100
    assert _native.leaf_digests(data, 1024, 1) == _native.leaf_digests(bytes(data), 1024, 4)
