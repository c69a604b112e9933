"""Tensors made in one thread and freed in another, many at once."""

import gc
import queue
import threading

import numpy as np

import dlbridge
from _optional import needs_torch, torch


@needs_torch
def test_created_in_one_thread_freed_in_another(no_leak):
    handoff = queue.Queue()
    sums = []

    def producer():
        for i in range(500):
            handoff.put(dlbridge.from_dlpack(np.full(8, i, dtype=np.int64)))
        handoff.put(None)

    def consumer():
        total = 0
        while (t := handoff.get()) is not None:
            total += int(torch.from_dlpack(t).sum())
            del t
        sums.append(total)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sums == [8 * sum(range(500))]


@needs_torch
def test_many_threads_exchange_at_once(no_leak):
    shared = np.arange(1024, dtype=np.float32)
    errors = []

    def work():
        try:
            for _ in range(300):
                t = dlbridge.from_dlpack(shared)
                a = np.from_dlpack(torch.from_dlpack(t))
                assert a.ctypes.data == shared.ctypes.data
                capsule = t.__dlpack__(max_version=(1, 3))
                del capsule, t, a
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    gc.collect()
    assert not errors
