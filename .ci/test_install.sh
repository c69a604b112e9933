#!/usr/bin/env bash
# `pip wheel .` builds a wheel (the library inside); it is installed into a
# fresh virtual environment and used from a directory outside the
# repository: the bundled library must be found, type information shipped.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m pip wheel --quiet --no-deps -w "$tmp/dist" "$repo"
wheel=$(ls "$tmp"/dist/dlbridge-*.whl)
echo "built $(basename "$wheel")"
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "$wheel"
cd "$tmp"
env -u DLBRIDGE_LIBRARY -u PYTHONPATH "$tmp/venv/bin/python" - <<'PY'
import array, inspect, pathlib
import dlbridge
checks = 0
assert "site-packages" in dlbridge._lib.path, dlbridge._lib.path
checks += 1
t = dlbridge.asarray(array.array("f", [1.0, 2.0, 3.0]))
c = dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3)))
assert c.data_ptr == t.data_ptr and c.dtype == "float32"
del t, c
assert dlbridge.live_tensor_count() == 0
checks += 1
package = pathlib.Path(dlbridge.__file__).parent
assert (package / "py.typed").is_file(), "py.typed missing"
for name in dlbridge.__all__:  # every public function and method is annotated
    obj = getattr(dlbridge, name)
    if inspect.isfunction(obj):
        members = [obj]
    elif inspect.isclass(obj):
        members = [m for n, m in vars(obj).items() if inspect.isfunction(m) and (n == "__dlpack__" or n[0] != "_")]
    else:
        continue
    for f in members:
        signature = inspect.signature(f)
        assert signature.return_annotation is not signature.empty, f"{f.__qualname__} has no return annotation"
        for p in signature.parameters.values():
            assert p.name == "self" or p.annotation is not p.empty, f"{f.__qualname__}({p.name}) is not annotated"
checks += 1
print(f"installed library: {dlbridge._lib.path}")
print(f"install test (wheel): {checks} passed, 0 failed")
PY
