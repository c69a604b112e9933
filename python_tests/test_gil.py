"""Long work runs without the GIL: another Python thread keeps running while
dlbridge copies, converts or byte-swaps a large tensor (issue 13: a 256 MiB
transposed copy used to freeze every other thread for its whole duration)."""

import threading
import time

import numpy as np
import pytest

import dlbridge

# 128 MiB of float32, transposed: a strided copy that takes a while.
N = 1 << 13


@pytest.fixture(scope="module")
def big():
    return dlbridge.asarray(np.ones((N, N // 2), dtype=np.float32).T)


def ticks_during(work):
    """How often another thread got to run (each tick needs the GIL) while
    `work` ran, and how long `work` took."""
    ticks, stop = [0], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.0005)  # sleeping releases the GIL; waking needs it

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.05)  # the ticker is running
    start_ticks, start = ticks[0], time.perf_counter()
    result = work()
    elapsed, during = time.perf_counter() - start, ticks[0] - start_ticks
    stop.set()
    thread.join()
    return during, elapsed, result


@pytest.mark.parametrize("name,work", [
    ("copy()", lambda t: t.copy()),
    ("astype(float16)", lambda t: t.astype("float16")),
    ("__dlpack__(copy=True)", lambda t: np.from_dlpack(t, copy=True)),
    ("asarray(big-endian)", lambda t: dlbridge.asarray(np.asarray(t).astype(">f4"))),
])
def test_other_threads_run_during_long_work(big, name, work, no_leak):
    # The big-endian source is made before the timing starts.
    if name.startswith("asarray"):
        source = np.asarray(big).astype(">f4")
        work = lambda _t: dlbridge.asarray(source)  # noqa: E731
    during, elapsed, result = ticks_during(lambda: work(big))
    del result
    # With the GIL held the ticker gets at most a tick or two; released, it
    # ticks about every half millisecond (asked: one tick per 50 ms, for a
    # loaded machine where both cores copy).
    assert elapsed < 0.02 or during >= max(3, elapsed * 20), (name, during, elapsed)
