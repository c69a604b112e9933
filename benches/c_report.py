"""Runs the C round-trip harness: median ns per round trip (7 runs) and
callgrind instructions per round trip (the difference between N and 2N
iterations, so start-up cancels), dlbridge against tvm-ffi."""

import re
import subprocess
import sys

binary = sys.argv[1]


def ns(mode):
    return float(subprocess.run([binary, mode, "1000000"], check=True, capture_output=True, text=True).stdout)


def instructions(mode):
    def total(n):
        r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", binary, mode, str(n)],
                           check=True, capture_output=True, text=True)
        return int(re.search(r"Collected : (\d+)", r.stderr)[1])

    n = 2000
    return (total(2 * n) - total(n)) / (7 * n)  # the harness runs each mode 7 times


rows = [("import versioned + export versioned + deleter + free", "roundtrip", "tvm-roundtrip"),
        ("wrap + export versioned + import + free (dlbridge only)", "wrap", None)]
print("| C round trip | dlbridge ns | tvm-ffi ns | ratio | dlbridge instr | tvm-ffi instr | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, ours, peer in rows:
    a, ia = ns(ours), instructions(ours)
    if peer:
        b, ib = ns(peer), instructions(peer)
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} | {ia:.0f} | {ib:.0f} | {ia / ib:.2f} |")
    else:
        print(f"| {name} | {a:.1f} | - | - | {ia:.0f} | - | - |")
