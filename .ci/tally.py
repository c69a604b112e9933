"""Adds up the per-suite results in a `make test` log and prints one
closing line: "all suites: N passed, N failed, N skipped"."""

import re
import sys

text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
passed = failed = skipped = 0
for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", text, re.M):
    passed, failed, skipped = passed + int(m[1]), failed + int(m[2]), skipped + int(m[3])
# C tests, install test ("...: N passed, N failed") and pytest ("N passed, N skipped in 3.2s").
for m in re.finditer(r"^(?:[\w/. ()-]+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?", text, re.M):
    passed, failed, skipped = passed + int(m[1]), failed + int(m[2]), skipped + int(m[3] or 0)
for m in re.finditer(r"^(?:=+ )?((?:\d+ \w+(?:, )?)+) in [\d.]+s", text, re.M):
    counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (\w+)", m[1]))
    passed += counts.get("passed", 0)
    failed += counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    skipped += counts.get("skipped", 0)
print(f"all suites: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
