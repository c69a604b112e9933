"""Host<->device throughput: dlbridge's explicit transfers against torch's
.cuda() / .cpu() / .to(non_blocking=True) on the same buffers, in one run.
Needs a CUDA device (run by `make test-gpu`). Prints medians in GB/s and
ratios (dlbridge time / torch time; below 1.0 means dlbridge is faster)."""

import statistics
import sys
import time

import numpy as np

import dlbridge

try:
    import torch
except ImportError:
    sys.exit("gpu_transfers: torch is needed")
if not torch.cuda.is_available() or dlbridge.cuda_device_count() == 0:
    print("gpu_transfers: skipped, no CUDA device")
    sys.exit(0)

REPEATS = 7


def median(fn):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


import os
staging = os.environ.get("DLBRIDGE_STAGING_MIB", "32 (default)")
print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; dlbridge {dlbridge.__version__}; "
      f"DLBRIDGE_STAGING_MIB={staging}")
print("| size | direction | memory | dlbridge GB/s | torch GB/s | ratio |")
print("|---:|---|---|---:|---:|---:|")
for mib in (1, 16, 256, 1024):
    n = mib << 18  # float32 elements
    host = np.ones(n, dtype=np.float32)
    pageable = dlbridge.asarray(host)
    pinned = pageable.to_device("cuda_host")
    torch_pageable = torch.from_numpy(host)
    torch_pinned = torch_pageable.pin_memory()
    dev = torch.ones(n, device="cuda")
    dev_dlb = dlbridge.from_dlpack(dev)
    rows = [
        ("H->D", "pageable", lambda: pageable.to_device("cuda:0"), lambda: torch_pageable.cuda()),
        ("H->D", "pinned", lambda: pinned.to_device("cuda:0"), lambda: torch_pinned.to("cuda", non_blocking=True)),
        ("D->H", "pageable", lambda: dev_dlb.to_device("cpu"), lambda: dev.cpu()),
        ("D->H", "pinned", lambda: dev_dlb.to_device("cuda_host"),
         lambda: torch.empty(n, pin_memory=True).copy_(dev, non_blocking=True)),
    ]
    for direction, memory, ours, theirs in rows:
        a, b = median(ours), median(theirs)
        print(f"| {mib} MiB | {direction} | {memory} | {host.nbytes / a / 1e9:.2f} | {host.nbytes / b / 1e9:.2f} | {a / b:.2f} |")

# The cost of a free with GPU work queued: `del` of a torch tensor borrowed
# from dlbridge (the free is ordered on the GPU, the host does not wait)
# against `del` of torch's own tensor (its caching allocator), with 40
# 4096x4096 matmuls queued on a side stream that uses the tensor.
side = torch.cuda.Stream()
a = torch.randn(4096, 4096, device="cuda")


def free_cost(make):
    times = []
    for _ in range(REPEATS):
        t = make()
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            x = torch.from_dlpack(t) if not isinstance(t, torch.Tensor) else t
            outs = [a @ a for _ in range(40)]
            x.sum()
        del t
        t0 = time.perf_counter()
        del x
        times.append(time.perf_counter() - t0)
        side.synchronize()
        del outs
    return statistics.median(times)


ours = free_cost(lambda: dlbridge.zeros((4096, 4096), device="cuda:0"))
theirs = free_cost(lambda: torch.zeros(4096, 4096, device="cuda"))
print()
print("| free with 40 matmuls queued | dlbridge us | torch us | ratio |")
print("|---|---:|---:|---:|")
print(f"| `del` of a 64 MiB tensor in use on a side stream | {ours * 1e6:.1f} | {theirs * 1e6:.1f} | {ours / theirs:.2f} |")
