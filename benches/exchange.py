"""Per-call cost of exchange in Python: each dlbridge path against the peers
doing the same hop, on the same arrays, in one process. Medians of timeit
repeats (us per call), at 1 KiB and 1 GiB (zero copy: the size must not
matter). Ratio = dlbridge / peer: below 1.0 means dlbridge is faster."""

import statistics
import timeit

import jax
import jax.numpy as jnp
import numpy as np
import torch
import tvm_ffi

import dlbridge

NUMBER, REPEAT = 20000, 9


def us(stmt, env):
    runs = timeit.repeat(stmt, number=NUMBER, repeat=REPEAT, globals=env)
    return statistics.median(runs) / NUMBER * 1e6


def table(size_bytes):
    n = size_bytes // 4
    a = np.asarray(dlbridge.zeros((n,), "float32"))  # 256-byte aligned, so JAX never copies
    env = {
        "a": a, "np": np, "torch": torch, "jnp": jnp, "dlbridge": dlbridge, "tvm_ffi": tvm_ffi,
        "d": dlbridge.from_dlpack(a), "pt": torch.from_numpy(a), "tv": tvm_ffi.from_dlpack(a),
    }
    rows = [
        ("import: dlbridge.from_dlpack(np)", "dlbridge.from_dlpack(a)",
         [("tvm_ffi.from_dlpack(np)", "tvm_ffi.from_dlpack(a)"), ("torch.from_dlpack(np)", "torch.from_dlpack(a)"),
          ("torch.from_numpy(np)", "torch.from_numpy(a)")]),
        ("export: torch.from_dlpack(dlb)", "torch.from_dlpack(d)",
         [("torch.from_dlpack(tvm)", "torch.from_dlpack(tv)"), ("torch.from_dlpack(np)", "torch.from_dlpack(a)")]),
        ("export: np.from_dlpack(dlb)", "np.from_dlpack(d)",
         [("np.from_dlpack(tvm)", "np.from_dlpack(tv)"), ("np.from_dlpack(torch)", "np.from_dlpack(pt)")]),
        ("export: jnp.from_dlpack(dlb)", "jnp.from_dlpack(d)",
         [("jnp.from_dlpack(tvm)", "jnp.from_dlpack(tv)"), ("jnp.from_dlpack(np)", "jnp.from_dlpack(a)")]),
        ("array interface: np.asarray(dlb)", "np.asarray(d)",
         [("np.asarray(torch)", "np.asarray(pt)"), ("torch_tensor.numpy()", "pt.numpy()")]),
        # DLPack 1.3's C exchange API: PyTorch publishes a table, and so does dlbridge.
        ("exchange API: dlbridge.from_dlpack(torch)", "dlbridge.from_dlpack(pt)",
         [("tvm_ffi.from_dlpack(torch)", "tvm_ffi.from_dlpack(pt)"), ("torch.from_dlpack(torch)", "torch.from_dlpack(pt)")]),
        ("exchange API: tvm_ffi.from_dlpack(dlb)", "tvm_ffi.from_dlpack(d)",
         [("tvm_ffi.from_dlpack(tvm)", "tvm_ffi.from_dlpack(tv)"), ("tvm_ffi.from_dlpack(torch)", "tvm_ffi.from_dlpack(pt)")]),
        ("full hop: np -> dlbridge -> torch", "torch.from_dlpack(dlbridge.from_dlpack(a))",
         [("np -> torch (from_dlpack)", "torch.from_dlpack(a)"), ("np -> torch (from_numpy)", "torch.from_numpy(a)")]),
    ]
    label = f"{size_bytes // 1024} KiB" if size_bytes < 1 << 30 else f"{size_bytes >> 30} GiB"
    out = [f"| {label}: dlbridge path | us | peer | us | ratio |", "|---|---:|---|---:|---:|"]
    for name, stmt, peers in rows:
        ours = us(stmt, env)
        for i, (peer_name, peer_stmt) in enumerate(peers):
            theirs = us(peer_stmt, env)
            lead = f"{name} | {ours:.2f}" if i == 0 else " | "
            out.append(f"| {lead} | {peer_name} | {theirs:.2f} | {ours / theirs:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(f"numpy {np.__version__}, torch {torch.__version__}, jax {jax.__version__}, "
          f"apache-tvm-ffi {tvm_ffi.__version__}, dlbridge {dlbridge.__version__}; "
          f"median of {REPEAT} x {NUMBER} calls\n")
    print(table(1024))
    print()
    print(table(1 << 30))
