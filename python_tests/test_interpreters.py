"""Which interpreters dlbridge runs on: CPython 3.11, 3.12 and 3.13 with the
GIL, main interpreter only. Others are refused at import with a message
that says why, never a crash."""

import glob
import os
import subprocess
import sys

import pytest

import dlbridge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyenv_python(version):
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if _has_pyenv() else ""
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python"))) if root else []
    return found[-1] if found else None


def _has_pyenv():
    return any(os.access(os.path.join(d, "pyenv"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def test_cpython_3_10_is_refused_with_a_clear_message():
    python = _pyenv_python("3.10")
    if python is None:
        pytest.skip("no CPython 3.10 on this machine (pyenv) to try the refusal with")
    r = subprocess.run([python, "-c", "import dlbridge"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")), timeout=120)
    assert r.returncode != 0
    assert "ImportError: dlbridge needs CPython 3.11 or newer; this is 3.10" in r.stderr, r.stderr


def test_subinterpreters_are_refused_and_the_main_one_keeps_working(no_leak):
    try:
        import _interpreters as subinterpreters  # 3.13
    except ImportError:
        import _xxsubinterpreters as subinterpreters  # 3.11, 3.12
    interp = subinterpreters.create()
    try:
        failure = None
        try:
            out = subinterpreters.run_string(interp, "import dlbridge")
            if out is not None:  # 3.13 returns the exception instead of raising
                failure = out
        except Exception as e:  # noqa: BLE001 - whatever the version raises
            failure = e
        assert failure is not None, "a subinterpreter imported dlbridge"
        # dlbridge's own refusal, or (3.12's isolated subinterpreters) ctypes'.
        message = str(getattr(failure, "msg", failure))
        assert "ImportError" in message + repr(failure) or isinstance(failure, ImportError), failure
        assert "main interpreter only" in message or "_ctypes does not support" in message, failure
    finally:
        subinterpreters.destroy(interp)
    t = dlbridge.zeros((3,))
    assert t.numpy().tolist() == [0.0, 0.0, 0.0]
    del t


def test_this_interpreter_is_a_supported_one():
    assert sys.implementation.name == "cpython" and sys.version_info >= (3, 11)
