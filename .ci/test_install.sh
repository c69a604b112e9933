#!/usr/bin/env bash
# `pip install .` into a fresh virtual environment, then use the package
# from a directory outside the repository: the bundled library must be found.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "$repo"
cd "$tmp"
env -u DLBRIDGE_LIBRARY -u PYTHONPATH "$tmp/venv/bin/python" - <<'PY'
import array, dlbridge
assert "site-packages" in dlbridge._lib.path, dlbridge._lib.path
t = dlbridge.asarray(array.array("f", [1.0, 2.0, 3.0]))
c = dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3)))
assert c.data_ptr == t.data_ptr and c.dtype == "float32"
del t, c
assert dlbridge.live_tensor_count() == 0
print(f"installed library: {dlbridge._lib.path}")
print("install test: 1 passed, 0 failed")
PY
