"""Builds libdlbridge with cargo and places it inside the dlbridge package.

The package is pure Python plus a library it loads with ctypes (no CPython
extension module, no Python ABI: the library finds the CPython functions it
calls by name at import), so one wheel serves every CPython version the
package supports: it is tagged py3-none-<platform>. `make wheel` then has
auditwheel give it its manylinux platform tag.
"""

import os

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools_rust import Binding, RustExtension


class AnyPython(bdist_wheel):
    """py3-none-<platform>: any CPython 3, this platform."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


class PlainLibraryName(build_ext):
    """The library is not an extension module: dlbridge/libdlbridge.so,
    without the interpreter's suffix (.cpython-311-x86_64-linux-gnu.so)."""

    def get_ext_filename(self, fullname):
        if fullname.rpartition(".")[2] == "libdlbridge":  # asked with or without the package
            return fullname.replace(".", os.sep) + ".so"
        return super().get_ext_filename(fullname)


setup(
    rust_extensions=[
        RustExtension("dlbridge.libdlbridge", path="Cargo.toml", binding=Binding.NoBinding, debug=False),
    ],
    cmdclass={"bdist_wheel": AnyPython, "build_ext": PlainLibraryName},
)
