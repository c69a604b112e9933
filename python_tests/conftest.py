import gc
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
try:
    import dlbridge  # an installed package wins
except ImportError:
    sys.path.insert(0, str(ROOT / "python"))
    import dlbridge  # noqa: F401


@pytest.fixture
def no_leak():
    """Asserts that dlbridge's live-tensor count is back to its baseline
    once everything the test made is gone."""
    gc.collect()
    before = dlbridge.live_tensor_count()
    yield
    gc.collect()
    assert dlbridge.live_tensor_count() == before


def pytest_report_header(config):
    import importlib

    versions = []
    for name in ("numpy", "torch", "jax", "ml_dtypes", "cupy"):
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            versions.append(f"{name} absent")
    return f"dlbridge {dlbridge.__version__} ({dlbridge._lib.path}); " + ", ".join(versions)
