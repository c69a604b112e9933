"""Ownership: sources outlive their last user, capsules are freed once,
nothing leaks (dlbridge's live-tensor count returns to its baseline)."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import dlbridge
from _optional import needs_torch, torch


@needs_torch
def test_source_dropped_data_still_right(no_leak):
    a = np.arange(1000, dtype=np.float32)
    t = dlbridge.from_dlpack(a)
    del a
    gc.collect()
    assert np.asarray(t)[999] == 999.0
    pt = torch.from_dlpack(t)
    del t
    gc.collect()
    assert pt[10].item() == 10.0


@needs_torch
def test_torch_source_dropped_numpy_view_keeps_memory(no_leak):
    a = np.from_dlpack(dlbridge.from_dlpack(torch.full((3,), 4.0)))
    gc.collect()
    assert a.tolist() == [4.0, 4.0, 4.0]


def test_unconsumed_capsules_are_freed(no_leak):
    t = dlbridge.from_dlpack(np.ones(3))
    before = dlbridge.live_tensor_count()
    capsules = [t.__dlpack__(max_version=(1, 3)) for _ in range(10)]
    capsules += [t.__dlpack__() for _ in range(10)]
    del t
    gc.collect()
    # The capsules hold the tensor's view (exports share it, so the count
    # counts views, not holders) ...
    assert dlbridge.live_tensor_count() == before
    del capsules
    gc.collect()
    # ... and freeing the last one frees it.
    assert dlbridge.live_tensor_count() == before - 1


@needs_torch
def test_a_capsule_is_consumed_once(no_leak):
    capsule = np.arange(3).__dlpack__(max_version=(1, 3))
    t = dlbridge.from_dlpack(capsule)
    with pytest.raises(ValueError, match="already consumed"):
        dlbridge.from_dlpack(capsule)
    assert np.asarray(t).tolist() == [0, 1, 2]
    ours = t.__dlpack__(max_version=(1, 3))
    torch.from_dlpack(ours)
    with pytest.raises(ValueError, match="already consumed"):
        dlbridge.from_dlpack(ours)


def test_non_capsules_are_refused(no_leak):
    import datetime

    with pytest.raises(TypeError, match="DLPack capsule"):
        dlbridge.from_dlpack(datetime.datetime_CAPI)
    with pytest.raises(TypeError, match="no __dlpack__"):
        dlbridge.from_dlpack(object())


@needs_torch
def test_many_round_trips_leave_nothing_behind(no_leak):
    a = np.arange(16, dtype=np.uint8)
    for _ in range(2000):
        t = dlbridge.from_dlpack(a)
        b = np.from_dlpack(dlbridge.from_dlpack(torch.from_dlpack(t)))
    assert b.ctypes.data == a.ctypes.data


@needs_torch
def test_buffer_protocol_objects_stay_alive(no_leak):
    import array

    buf = bytearray(b"abcdef")
    t = dlbridge.asarray(buf)
    assert t.dtype == "uint8" and t.shape == (6,) and not t.readonly
    del buf
    gc.collect()
    assert bytes(np.asarray(t)) == b"abcdef"
    arr = array.array("d", [1.5, 2.5])
    t2 = dlbridge.asarray(arr)
    assert t2.dtype == "float64"
    torch.from_dlpack(t2)[0] = 8.0
    assert arr[0] == 8.0
    ro = dlbridge.asarray(memoryview(b"xyz"))
    assert ro.readonly
    strided = dlbridge.asarray(memoryview(bytearray(range(10)))[::3])
    assert strided.strides == (3,) and np.asarray(strided).tolist() == [0, 3, 6, 9]


def test_array_interface_objects_stay_alive(no_leak):
    class Exporter:
        def __init__(self):
            self.array = np.arange(4, dtype=np.int32)
            self.__array_interface__ = self.array.__array_interface__

    e = Exporter()
    t = dlbridge.asarray(e)
    assert t.data_ptr == e.array.ctypes.data
    del e
    gc.collect()
    assert np.asarray(t).tolist() == [0, 1, 2, 3]


def test_masked_array_interface_is_refused(no_leak):
    class Masked:
        __array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3,
                               "mask": np.array([True, False])}

    with pytest.raises(BufferError, match="masked"):
        dlbridge.asarray(Masked())


@needs_torch
def test_interpreter_exits_cleanly_with_live_tensors_and_capsules():
    import os
    import subprocess
    import sys

    code = """
import builtins, threading, numpy as np, torch, dlbridge
t = dlbridge.from_dlpack(np.arange(10.0))
exported = torch.from_dlpack(t)
imported = dlbridge.from_dlpack(torch.ones(3))
capsules = [t.__dlpack__(max_version=(1, 3)), t.__dlpack__()]
buffered = dlbridge.asarray(bytearray(16))
builtins.keep = (t, exported, imported, capsules, buffered)
threading.Thread(target=lambda: builtins.keep, daemon=True).start()
print("exiting with", dlbridge.live_tensor_count(), "live tensors")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # Three views (t, imported, buffered); the exports of t share its view.
    assert "exiting with 3 live tensors" in r.stdout


def test_bfloat16_without_ml_dtypes_is_a_clear_error():
    # In a fresh interpreter where ml_dtypes cannot be imported at all.
    code = (
        "import sys; sys.modules['ml_dtypes'] = None\n"
        "import numpy as np, dlbridge\n"
        "t = dlbridge.zeros((2,), 'bfloat16')\n"
        "try:\n    t.numpy()\nexcept TypeError as e:\n    assert 'install ml_dtypes' in str(e), e\n"
        "else:\n    raise AssertionError('numpy() without ml_dtypes')\n"
        "assert np.asarray(t).dtype == np.dtype('V2')  # the raw bytes are still reachable\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_bfloat16_and_fp8_keep_their_type_through_np_asarray(no_leak):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        t = dlbridge.asarray(np.arange(4, dtype=np.float32).astype(getattr(ml_dtypes, name)))
        assert t.dtype == name
        for convert in (np.asarray, np.array):
            a = convert(t)
            assert a.dtype == np.dtype(getattr(ml_dtypes, name)), (name, convert)
            assert a.astype(np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
        # ... and dlbridge takes that array back.
        assert dlbridge.asarray(np.asarray(t)).dtype == name
