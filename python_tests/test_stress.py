"""Python stress: 100k producer/consumer round trips with NumPy and PyTorch;
resident memory must stay flat (within 16 MiB after warm-up) and nothing may
be left alive."""

import gc
import os

import numpy as np

import dlbridge
from _optional import needs_torch, torch

ROUND_TRIPS = int(os.environ.get("DLB_STRESS_ROUND_TRIPS", "100000"))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_torch
def test_round_trips_keep_memory_flat(no_leak):
    a = np.arange(4096, dtype=np.float32)

    def hop(i):
        t = dlbridge.from_dlpack(a)
        pt = torch.from_dlpack(t)
        b = np.from_dlpack(dlbridge.from_dlpack(pt))
        c = np.asarray(dlbridge.asarray(b))
        capsule = dlbridge.from_dlpack(c).__dlpack__(max_version=(1, 3))  # produced, never consumed
        if i % 4 == 0:
            torch.from_dlpack(capsule)
        return b

    for i in range(ROUND_TRIPS // 10):  # warm-up: allocator pools, caches
        hop(i)
    gc.collect()
    before = rss_bytes()
    for i in range(ROUND_TRIPS):
        b = hop(i)
    assert b.ctypes.data == a.ctypes.data
    del b
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 16 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over {ROUND_TRIPS} round trips"
