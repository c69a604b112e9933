"""Copy throughput: dlbridge against NumPy / ml_dtypes on the same data, in
one process. Prints medians (GB/s of output) and ratios (time dlbridge /
time peer; below 1.0 means dlbridge is faster).

    make bench-copies        (or: PYTHONPATH=python .venv/bin/python benches/copies.py)
"""

import os
import platform
import statistics
import sys
import time

import ml_dtypes
import numpy as np

import dlbridge

REPEATS = int(os.environ.get("DLB_BENCH_REPEATS", "15"))


def median_seconds(fn):
    fn()  # warm up (page faults of the first output are paid once)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name, ours, peer, out_bytes):
    a, b = median_seconds(ours), median_seconds(peer)
    print(f"| {name:44s} | {out_bytes / a / 1e9:7.2f} | {out_bytes / b / 1e9:7.2f} | {a / b:5.2f} |")


def main():
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}, "
          f"dlbridge {dlbridge.__version__}, {os.cpu_count()} cores, {platform.machine()}")
    print(f"median of {REPEATS} runs; GB/s of output written; ratio = dlbridge time / peer time\n")
    print(f"| {'operation (dlbridge vs peer)':44s} | dlb GB/s | peer GB/s | ratio |")
    print(f"|{'-' * 46}|---------:|----------:|------:|")
    for mb in (1, 64):
        n = mb * (1 << 20) // 4
        side = int(n**0.5)
        a = np.random.default_rng(0).standard_normal(side * side).astype(np.float32).reshape(side, side)
        t = dlbridge.asarray(a)
        tt, ts = dlbridge.asarray(a.T), dlbridge.asarray(a[:, ::2])
        nbytes = a.nbytes
        tag = f"{mb} MiB f32"
        row(f"copy contiguous ({tag}) vs np.array(copy)", t.copy, lambda: np.array(a, copy=True), nbytes)
        row(f"copy transposed ({tag}) vs ascontiguousarray", tt.copy, lambda: np.ascontiguousarray(a.T), nbytes)
        row(f"copy a[:, ::2] ({tag}) vs ascontiguousarray", ts.copy, lambda: np.ascontiguousarray(a[:, ::2]),
            nbytes // 2)
        row(f"astype f32->f16 ({tag}) vs astype", lambda: t.astype("float16"), lambda: a.astype(np.float16),
            nbytes // 2)
        h = a.astype(np.float16)
        th = dlbridge.asarray(h)
        row(f"astype f16->f32 ({tag}) vs astype", lambda: th.astype("float32"), lambda: h.astype(np.float32),
            nbytes)
        row(f"astype f32->bf16 ({tag}) vs ml_dtypes", lambda: t.astype("bfloat16"),
            lambda: a.astype(ml_dtypes.bfloat16), nbytes // 2)
        b = a.astype(ml_dtypes.bfloat16)
        tb = dlbridge.asarray(b)
        row(f"astype bf16->f32 ({tag}) vs ml_dtypes", lambda: tb.astype("float32"), lambda: b.astype(np.float32),
            nbytes)
        row(f"astype f32->f64 ({tag}) vs astype", lambda: t.astype("float64"), lambda: a.astype(np.float64),
            nbytes * 2)
        be = a.astype(">f4")
        row(f"byte-swap >f4 ({tag}) vs astype('<f4')", lambda: dlbridge.asarray(be),
            lambda: be.astype("<f4"), nbytes)


if __name__ == "__main__":
    main()
