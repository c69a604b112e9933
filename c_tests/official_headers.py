"""Fetches the official dlpack/dlpack.h of DLPack 1.0, 1.1, 1.2 and 1.3 from
wheels on PyPI that ship it, into <dest>/<version>/dlpack/dlpack.h (at test
time; never committed). Each header's own version macros are checked."""

import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

# version: (wheel requirement, platform tag, path of the header in the wheel)
SOURCES = {
    "1.0": ("cupy-cuda12x==13.4.1", "manylinux2014_x86_64", "cupy/_core/include/cupy/_dlpack/dlpack.h"),
    "1.1": ("tensorflow-cpu==2.20.0", "manylinux2014_x86_64",
            "tensorflow/include/external/dlpack/include/dlpack/dlpack.h"),
    "1.2": ("apache-tvm-ffi==0.1.0", "manylinux_2_28_x86_64", "tvm_ffi/include/dlpack/dlpack.h"),
    "1.3": ("apache-tvm-ffi==0.1.15.post2", "manylinux_2_28_x86_64", "tvm_ffi/include/dlpack/dlpack.h"),
}


def main(dest: str) -> None:
    for version, (requirement, platform, member) in SOURCES.items():
        target = pathlib.Path(dest, version, "dlpack", "dlpack.h")
        if target.is_file():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.11", "--platform", platform, "-d", tmp, requirement], check=True)
            (wheel,) = pathlib.Path(tmp).glob("*.whl")
            text = zipfile.ZipFile(wheel).read(member)
        found = re.findall(rb"#define DLPACK_(MAJOR|MINOR)_VERSION (\d+)", text)
        got = ".".join(v.decode() for _, v in found[:2])
        if got != version:
            sys.exit(f"{requirement}: {member} is DLPack {got}, expected {version}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text)
        print(f"official dlpack.h {version}: from {requirement}")


if __name__ == "__main__":
    main(sys.argv[1])
