"""Builds a CPython extension module written in C for a test (with -Wall
-Werror against this interpreter's Python.h) and imports it."""

import importlib
import pathlib
import subprocess
import sys
import sysconfig


def build_extension(name, source, directory, *flags):
    """Compiles `source` into module `name` under `directory` (extra
    compiler and linker `flags` after the source) and imports it."""
    target = pathlib.Path(directory) / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", f"-I{sysconfig.get_paths()['include']}",
                    str(source), *flags, "-o", str(target)], check=True)
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
