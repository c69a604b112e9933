"""Builds libdlbridge with cargo and places it inside the dlbridge package.

The package is pure Python plus a library it loads with ctypes (no CPython
extension module, no Python ABI: the library finds the CPython functions it
calls by name at import), so one wheel serves every CPython version the
package supports: it is tagged py3-none-<platform>. `make wheel` then has
auditwheel give it its manylinux platform tag.
"""

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools_rust import Binding, RustExtension


class AnyPython(bdist_wheel):
    """py3-none-<platform>: any CPython 3, this platform."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    rust_extensions=[
        RustExtension("dlbridge.libdlbridge", path="Cargo.toml", binding=Binding.NoBinding, debug=False),
    ],
    cmdclass={"bdist_wheel": AnyPython},
)
