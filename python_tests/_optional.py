"""Frameworks an environment may lack: the CPython 3.12 and 3.13 runs of
`make test` have NumPy and ml_dtypes only (PyTorch's PyPI wheels pull 7 GB
of CUDA libraries per interpreter). Tests that need one say so and skip,
with the reason, where it is absent."""

import importlib

import pytest


def optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


torch = optional("torch")
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed in this environment "
                                 "(the CPython 3.12/3.13 runs have NumPy and ml_dtypes only)")
