"""dlbridge.capi: the C API from Python through ctypes, as the mission's
"ctypes from Python" users reach it: every public function of the header
declared, the README example, a release callback written in Python."""

import ctypes
import pathlib
import re

import numpy as np
import pytest

import dlbridge
from dlbridge import capi

HEADER = pathlib.Path(__file__).resolve().parent.parent / "include" / "dlbridge.h"


def test_every_public_function_of_the_header_is_declared():
    declared = set(re.findall(r"\b(dlb_[a-z0-9_]+)\(", HEADER.read_text()))
    functions = {name for name in declared if not name.endswith("_fn")}
    assert functions == set(capi._DECLARATIONS), functions ^ set(capi._DECLARATIONS)


def test_dlpack_struct_sizes_match_the_abi():
    sizes = {capi.DLTensor: 48, capi.DLManagedTensor: 64, capi.DLManagedTensorVersioned: 80, capi.DLDevice: 8,
             capi.DLDataType: 4, capi.DLPackVersion: 8}
    for struct, size in sizes.items():
        assert ctypes.sizeof(struct) == size, struct
    assert capi.DLManagedTensorVersioned.dl_tensor.offset == 32


def test_the_module_docstring_example(no_leak):
    capsule = np.arange(6.0).__dlpack__(max_version=(1, 3))
    handle = ctypes.c_void_p()
    capi.check(capi.lib.dlb_tensor_from_dlpack_versioned(capi.take_capsule(capsule), ctypes.byref(handle)))
    assert capi.lib.dlb_tensor_dltensor(handle).contents.shape[0] == 6
    t = capi.to_tensor(handle)
    assert isinstance(t, dlbridge.Tensor) and t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="already consumed|unused DLPack capsule"):
        capi.take_capsule(capsule)  # taken once
    del t


def test_errors_and_a_python_release_callback(no_leak):
    out = ctypes.c_void_p(0x5A5A)
    shape = (ctypes.c_int64 * 1)(-1)
    with pytest.raises(capi.DLBError, match="DLB_ERR_INVALID_SHAPE: shape\\[0\\] is -1") as e:
        capi.check(capi.lib.dlb_tensor_new(capi.DLDevice(1, 0), capi.DLDataType(2, 32, 1), 1, shape,
                                           ctypes.byref(out)))
    assert e.value.status == 4 and out.value == 0x5A5A  # untouched on failure
    assert capi.STATUS[0] == "DLB_OK" and capi.STATUS[18] == "DLB_ERR_PANIC"

    buffer = (ctypes.c_float * 4)(1, 2, 3, 4)
    released = []
    release = capi.dlb_release_fn(lambda ctx: released.append(ctx))
    shape = (ctypes.c_int64 * 1)(4)
    capi.check(capi.lib.dlb_tensor_wrap(buffer, capi.DLDevice(1, 0), capi.DLDataType(2, 32, 1), 1, shape, None, 0,
                                        0, release, 7, ctypes.byref(out)))
    t = capi.to_tensor(out)
    assert t.numpy().tolist() == [1.0, 2.0, 3.0, 4.0] and released == []
    del t
    import gc

    gc.collect()
    assert released == [7]


def test_a_source_checkout_loads_its_own_build_not_a_stale_copy(tmp_path):
    # `pip install -e .` leaves a library inside python/dlbridge/; in a
    # checkout the package must load target/release's (the one cargo
    # rebuilds), or DLBRIDGE_LIBRARY when it is set.
    import shutil
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parent.parent
    package = tmp_path / "python" / "dlbridge"
    shutil.copytree(repo / "python" / "dlbridge", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (package / "libdlbridge.so").write_bytes(b"not a library: a stale editable-install copy")
    (tmp_path / "Cargo.toml").write_text("[package]\n")
    built = tmp_path / "target" / "release" / "libdlbridge.so"
    built.parent.mkdir(parents=True)
    shutil.copy(capi.path, built)
    code = "import dlbridge; print(dlbridge._lib.path)"
    env = {"PYTHONPATH": str(tmp_path / "python"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(built)
    env["DLBRIDGE_LIBRARY"] = capi.path
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == capi.path


def test_new_entry_points_refuse_bad_arguments(no_leak):
    # dlb_tensor_repack: NULL handle, NULL out, a dtype without sub-byte forms.
    out = ctypes.c_void_p(0x5A5A)
    with pytest.raises(capi.DLBError, match="DLB_ERR_NULL_ARGUMENT"):
        capi.check(capi.lib.dlb_tensor_repack(None, True, ctypes.byref(out)))
    assert out.value == 0x5A5A
    t = dlbridge.zeros((4,), "int8")
    with pytest.raises(capi.DLBError, match="DLB_ERR_NULL_ARGUMENT"):
        capi.check(capi.lib.dlb_tensor_repack(t._handle, True, None))
    with pytest.raises(capi.DLBError, match="DLB_ERR_UNSUPPORTED_DTYPE: int8 is not a sub-byte"):
        capi.check(capi.lib.dlb_tensor_repack(t._handle, False, ctypes.byref(out)))
    assert out.value == 0x5A5A
    # dlb_tensor_to_pyobject / from_pyobject through PyDLL: a failure comes
    # with a Python exception (ctypes raises it), and out is untouched.
    result = ctypes.py_object()
    with pytest.raises(ValueError, match="t is NULL"):
        capi.pylib.dlb_tensor_to_pyobject(None, ctypes.byref(result))
    with pytest.raises(TypeError, match="cannot share memory with int"):
        capi.pylib.dlb_tensor_from_pyobject(3, 0, ctypes.byref(out))
    assert out.value == 0x5A5A
    del t
