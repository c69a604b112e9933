"""DLPack 1.3's C exchange API per tensor, measured in C (benches/exchange_table.c,
built here against the official dlpack.h 1.3 that apache-tvm-ffi's wheel ships):
dlbridge's table against PyTorch's, same loop, same run. Medians of 9 runs."""

import pathlib
import statistics
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
import torch
import tvm_ffi

import dlbridge

HERE = pathlib.Path(__file__).resolve().parent
N, REPEAT = 200_000, 9


def build():
    out = pathlib.Path(tempfile.mkdtemp())
    target = out / f"exchange_table{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = pathlib.Path(tvm_ffi.__file__).parent / "include"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-I{sysconfig.get_paths()['include']}",
                    f"-I{include}", str(HERE / "exchange_table.c"), "-o", str(target)], check=True)
    sys.path.insert(0, str(out))
    import exchange_table
    return exchange_table


def median(f, x):
    return statistics.median(f(x, N) for _ in range(REPEAT))


if __name__ == "__main__":
    bench = build()
    a = np.arange(256, dtype=np.float32)
    ours, theirs = dlbridge.from_dlpack(a), torch.from_numpy(a)
    print(f"torch {torch.__version__}, dlbridge {dlbridge.__version__}; median of {REPEAT} x {N}, ns per tensor\n")
    print("| C exchange API (1 KiB float32) | dlbridge ns | PyTorch ns | ratio |")
    print("|---|---:|---:|---:|")
    for name, f in (("export + import (managed_tensor_from/to_py_object)", bench.round_trip),
                    ("kernel argument (dltensor_from_py_object)", bench.argument)):
        d, t = median(f, ours), median(f, theirs)
        print(f"| {name} | {d:.1f} | {t:.1f} | {d / t:.2f} |")
