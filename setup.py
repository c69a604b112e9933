"""Builds libdlbridge with cargo and places it inside the dlbridge package."""

from setuptools import setup
from setuptools_rust import Binding, RustExtension

setup(
    rust_extensions=[
        RustExtension("dlbridge.libdlbridge", path="Cargo.toml", binding=Binding.NoBinding, debug=False),
    ],
)
