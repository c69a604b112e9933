"""Adversarial tests: what a hostile or careless user can do from pure Python.

Every object dlbridge hands out must keep its memory alive on its own, every
integer from outside is range-checked, every odd keyword value gets the
spec's exception. Cases that could crash run in a fresh interpreter
(`run_isolated`), so a crash is a test failure, not the end of the run; the
large tensors there (64 MiB, above glibc's largest mmap threshold) are
unmapped when freed, so a use-after-free faults instead of reading stale
memory by luck. `make test-python-asan` runs this file again against an
AddressSanitizer build of the library.
"""

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dlbridge

# 64 MiB of float64: allocated with mmap, unmapped on free.
BIG = 1 << 23


def run_isolated(code: str, timeout: int = 300) -> str:
    """Runs `code` in a fresh interpreter (same sys.path, same library);
    fails the test when it crashes, hangs or does not print "ok"."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (
        f"exit {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-4000:]}")
    return r.stdout


# -- 1. every derived object keeps the memory alive, its source dropped first --

DERIVED = {
    "__array_struct__ capsule alone": """
        class Holder: pass
        h = Holder()
        h.__array_struct__ = t.__array_struct__
        del t; churn()
        a = np.asarray(h)
        a[:] = 1.0
        check(a)
    """,
    "__array_interface__ dict alone": """
        class Holder: pass
        h = Holder()
        h.__array_interface__ = t.__array_interface__
        del t; churn()
        a = np.asarray(h)
        a[:] = 1.0
        check(a)
    """,
    "versioned DLPack capsule alone": """
        capsule = t.__dlpack__(max_version=(1, 3))
        del t; churn()
        back = dlbridge.from_dlpack(capsule)
        a = np.from_dlpack(back); del back; churn()
        check(a, written=False)
    """,
    "legacy DLPack capsule alone": """
        capsule = t.__dlpack__()
        del t; churn()
        a = np.from_dlpack(dlbridge.from_dlpack(capsule)); churn()
        check(a, written=False)
    """,
    "numpy() view": """
        a = t.numpy()
        del t; churn()
        a[:] = 1.0
        check(a)
    """,
    "np.asarray view": """
        a = np.asarray(t)
        del t; churn()
        a[:] = 1.0
        check(a)
    """,
    "np.from_dlpack view": """
        a = np.from_dlpack(t)
        del t; churn()
        a[:] = 1.0
        check(a)
    """,
    "torch.from_dlpack view": """
        import torch
        p = torch.from_dlpack(t)
        del t; churn()
        p[:] = 1.0
        check(p.numpy())
    """,
    "a view of a view (dlbridge.asarray of a NumPy slice of the tensor)": """
        v = dlbridge.asarray(np.asarray(t)[::2])
        del t; churn()
        a = v.numpy()
        check(a, written=False, n=BIG // 2, step=2)
    """,
}


@pytest.mark.parametrize("name", list(DERIVED))
def test_derived_objects_keep_memory_after_the_source_is_dropped(name):
    if "torch" in name:
        pytest.importorskip("torch", reason="PyTorch is not installed in this environment")
    run_isolated(textwrap.dedent(f"""
        import gc, numpy as np, dlbridge
        BIG = {BIG}
        def churn():
            gc.collect()
            junk = [np.ones(BIG // 8) for _ in range(4)]  # reuse what was freed
            del junk
        def check(a, written=True, n=BIG, step=1):
            assert a.shape == (n,), a.shape
            want = 1.0 if written else 3.0
            assert a[0] == want and a[-1] == want and float(a.sum()) == want * n, (a[:4], a[-4:])
        t = dlbridge.asarray(np.full(BIG, 3.0))
        del_source = t  # the NumPy array is gone already; t holds it
        del del_source
    """) + textwrap.dedent(DERIVED[name]) + textwrap.dedent("""
        gc.collect()
        print("live", dlbridge.live_tensor_count())
        print("ok")
    """))


def test_capsule_outlives_the_tensor_in_process(no_leak):
    t = dlbridge.asarray(np.arange(16.0))
    s = t.__array_struct__
    d = t.__array_interface__
    assert d["__ref"] is not None
    del t
    gc.collect()

    class Holder:
        pass

    h1, h2 = Holder(), Holder()
    h1.__array_struct__, h2.__array_interface__ = s, d
    del s, d
    assert np.asarray(h1).sum() == np.asarray(h2).sum() == 120.0
    del h1, h2


# -- 2. array-interface dicts are parsed completely, with NumPy's rules ---------

GOOD = {"shape": (2, 2, 2, 2), "typestr": "<f8", "version": 3}


def interface(**fields):
    """An object exposing an array interface over fresh memory (kept by it)."""
    backing = np.zeros(64)

    class Exposed:
        pass

    e = Exposed()
    d = dict(GOOD, data=(backing.ctypes.data, False))
    for k, v in fields.items():
        if v is KeyError:
            d.pop(k, None)
        else:
            d[k] = v
    e.__array_interface__ = d
    e.backing = backing
    return e


MALFORMED = [
    # (what, fields, dlbridge's exception, NumPy also refuses)
    ("too few strides", dict(strides=(64, 32, 16)), ValueError, True),
    ("too many strides", dict(strides=(64, 32, 16, 8, 8)), ValueError, True),
    ("empty strides for 4-d", dict(strides=()), ValueError, True),
    ("strides not a tuple", dict(strides=[64, 32, 16, 8]), TypeError, True),
    ("stride not an int", dict(strides=(64, 32, 16, 8.0)), TypeError, True),
    ("stride >= 2**63", dict(strides=(2**63, 32, 16, 8)), ValueError, True),
    ("missing shape", dict(shape=KeyError), ValueError, True),
    ("missing typestr", dict(typestr=KeyError), ValueError, True),
    ("shape not a tuple", dict(shape=[2, 2]), TypeError, True),
    ("negative dimension", dict(shape=(2, -2)), ValueError, True),
    ("dimension >= 2**63", dict(shape=(2**63,)), ValueError, True),
    ("data a 1-tuple", dict(data=(1,)), TypeError, True),
    ("data a 3-tuple", dict(data=(1, False, 0)), TypeError, True),
    ("data pointer a float", dict(data=(1.5, False)), TypeError, True),
    ("data pointer >= 2**64", dict(data=(2**64, False)), OverflowError, True),
    ("datetime typestr", dict(typestr="<M8[D]"), BufferError, False),
    ("timedelta typestr", dict(typestr="<m8[ns]"), BufferError, False),
    ("object typestr", dict(typestr="|O"), BufferError, False),
    ("typestr not a string", dict(typestr=4), TypeError, True),
    ("garbage typestr", dict(typestr="<q4"), ValueError, True),
    ("not a dict", None, ValueError, True),
]


@pytest.mark.parametrize("what,fields,exc,numpy_refuses", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_array_interfaces_are_refused_like_numpy(what, fields, exc, numpy_refuses, no_leak):
    if fields is None:
        obj = interface()
        obj.__array_interface__ = [("shape", (2,))]
    else:
        obj = interface(**fields)
    with pytest.raises(exc):
        dlbridge.asarray(obj)
    if numpy_refuses:
        with pytest.raises(Exception):
            np.asarray(obj)


def test_array_interface_parsing_accepts_what_numpy_accepts(no_leak):
    # No byte-order character, offset ignored with a tuple (as NumPy), int-like values.
    backing = np.arange(16.0)
    obj = interface(data=(backing.ctypes.data, np.False_), typestr="f8", shape=(np.int64(4), 4),
                    strides=None, offset=8)
    obj.backing = backing
    t = dlbridge.asarray(obj)
    np.testing.assert_array_equal(np.asarray(t), np.asarray(obj))
    assert t.dtype == "float64" and not t.readonly


def test_numpy_scalars_keep_the_memory_they_describe(no_leak):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for scalar in (np.float64(3.5), np.float32(-2.25), np.int16(-7), ml_dtypes.bfloat16(1.5)):
        t = dlbridge.asarray(scalar)
        gc.collect()
        junk = [np.full(8, 99.0) for _ in range(1000)]  # reuse any freed temporary
        del junk
        assert t.readonly, scalar  # a scalar is immutable
        value = t.numpy()
        assert value.shape == () and value == scalar, (scalar, value)
        del t, value


# -- 7. copy= takes bools and NumPy bools, nothing else -------------------------


def test_copy_accepts_numpy_bools(no_leak):
    a = np.arange(6.0)
    t = dlbridge.asarray(a)
    copied = np.from_dlpack(t, copy=np.True_)
    assert copied.ctypes.data != a.ctypes.data
    shared = np.from_dlpack(t, copy=np.False_)
    assert shared.ctypes.data == a.ctypes.data
    assert dlbridge.from_dlpack(a, copy=np.True_).data_ptr != a.ctypes.data
    assert dlbridge.asarray(a, copy=np.True_).data_ptr != a.ctypes.data
    assert dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3)), copy=np.True_).data_ptr != a.ctypes.data


@pytest.mark.parametrize("odd", ["yes", b"yes", np.array([True, False])], ids=["str", "bytes", "array"])
def test_copy_refuses_values_without_a_clear_truth(odd, no_leak):
    t = dlbridge.asarray(np.arange(3.0))
    with pytest.raises(ValueError, match="copy must be"):
        t.__dlpack__(max_version=(1, 3), copy=odd)
    with pytest.raises(ValueError, match="copy must be"):
        dlbridge.from_dlpack(np.arange(3.0), copy=odd)
    with pytest.raises(ValueError, match="copy must be"):
        dlbridge.asarray(np.arange(3.0), copy=odd)
    if not isinstance(odd, bytes):  # NumPy 2.4 reads bytes by truth value
        with pytest.raises(ValueError):
            np.from_dlpack(t, copy=odd)  # through NumPy too


@pytest.mark.parametrize("value,copies", [(1, True), (0, False), (np.array(True), True), (0.0, False)],
                         ids=["1", "0", "0-d array", "0.0"])
def test_copy_takes_other_values_by_truth_as_numpy_does(value, copies, no_leak):
    a = np.arange(3.0)
    for t in (dlbridge.from_dlpack(a, copy=value), dlbridge.asarray(a, copy=value),
              dlbridge.from_dlpack(np.from_dlpack(dlbridge.asarray(a), copy=value))):
        assert (t.data_ptr != a.ctypes.data) == copies
        del t


# -- 8. device numbers: range-checked, never truncated -------------------------


def test_device_numbers_are_range_checked(no_leak):
    t = dlbridge.asarray(np.arange(3.0))
    for device in [(1, 2**32), (1, -1), (2**32 + 1, 7), (1, 2**31), (-1, 0), (1.0, 0), (1, "0"), (True, 0)]:
        with pytest.raises(ValueError):
            t.to_device(device)
        with pytest.raises(ValueError):
            dlbridge.zeros((2,), device=device)
        with pytest.raises(ValueError):
            t.__dlpack__(max_version=(1, 3), dl_device=device)
        with pytest.raises(ValueError):
            dlbridge.from_dlpack(np.arange(3.0), device=device)
    for bad_name in ("cuda:-1", "cuda:4294967296", "cpu:", "cuda:x"):
        with pytest.raises(ValueError):
            t.to_device(bad_name)
    for shape in [(2**64 + 3,), (2**63,), (2, 2.0)]:  # ctypes would have truncated 2**64 + 3 to 3
        with pytest.raises((ValueError, TypeError)):
            dlbridge.zeros(shape)
    for stream in (-2, 2**64, -(2**64) + 5):
        with pytest.raises(ValueError):
            t.__dlpack__(stream=stream)


def test_jax_cpu_tensors_of_other_cpu_devices_are_imported():
    pytest.importorskip("jax", reason="JAX is not installed in this environment")
    # JAX labels a tensor on its CPU device 1 with device_id 1 (its
    # __dlpack_device__ says 0): host memory, read as device 0, as NumPy does.
    run_isolated("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np, dlbridge
        x = jax.device_put(jnp.arange(4.0), jax.devices()[1])
        t = dlbridge.from_dlpack(x)
        assert t.device == "cpu" and np.asarray(t).tolist() == [0.0, 1.0, 2.0, 3.0]
        assert dlbridge.asarray(x).device == "cpu"
        print("ok")
    """)


def test_cpu_device_ids_other_than_zero_are_refused(no_leak):
    t = dlbridge.asarray(np.arange(3.0))
    with pytest.raises(BufferError):
        t.__dlpack__(max_version=(1, 3), dl_device=(1, 5))
    with pytest.raises(BufferError):
        t.to_device((1, 3))
    with pytest.raises(BufferError):
        dlbridge.zeros((2,), device=(1, 7))
    # A host device's id may be None (PaddlePaddle's __dlpack_device__): 0.
    assert t.to_device((1, None)) is t


# -- 9. legacy imports cannot make a framework's immutable data writable --------


def test_jax_arrays_stay_immutable(no_leak):
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.arange(4.0)
    t = dlbridge.from_dlpack(x)
    assert t.readonly
    view = np.asarray(t)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 42.0
    assert float(x[0]) == 0.0
    # Legacy in, legacy out: dlbridge -> JAX still works (JAX asks for legacy capsules).
    back = jnp.from_dlpack(t)
    assert back.tolist() == [0.0, 1.0, 2.0, 3.0]
    del t, view, back


def test_tensorflow_to_dlbridge_to_jax_chain(no_leak):
    tf = pytest.importorskip("tensorflow")
    jnp = pytest.importorskip("jax.numpy")
    x = tf.constant([1.0, 2.0, 3.0])
    t = dlbridge.from_dlpack(tf.experimental.dlpack.to_dlpack(x))
    assert t.readonly
    assert jnp.from_dlpack(t).tolist() == [1.0, 2.0, 3.0]
    del t


# -- 15. one rule per situation ------------------------------------------------


def _no_cuda():
    return dlbridge.cuda_device_count() == 0


@pytest.mark.skipif(not _no_cuda(), reason="checks the no-driver error; this machine has CUDA")
def test_device_requests_without_a_driver_are_buffer_errors_on_every_path(no_leak):
    class KeywordLess:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self):
            return self.a.__dlpack__()

        def __dlpack_device__(self):
            return (1, 0)

    a = np.arange(3.0)
    for source in (a, KeywordLess(a), a.__dlpack__(), dlbridge.asarray(a)):
        with pytest.raises(BufferError):
            dlbridge.from_dlpack(source, device="cuda:0")


def test_a_producer_refusing_dl_device_is_followed_by_dlbridges_copy(no_leak):
    calls = []

    class Refuses:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            calls.append(sorted(kwargs))
            if kwargs.get("dl_device") is not None:
                raise BufferError("I only export where my data is")
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return (1, 0)

    t = dlbridge.from_dlpack(Refuses(np.arange(3.0)), device="cpu")  # same device: no request made
    assert t.numpy().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(Refuses(np.arange(3.0)), device="cuda_host")
    # Asked with dl_device, refused, asked again without it, then moved by dlbridge
    # (which fails here without a driver, or succeeds with one).
    assert calls[-2] == ["dl_device", "max_version"] and calls[-1] == ["max_version"], calls


def test_copy_false_with_a_refusing_producer_on_the_same_device(no_leak):
    class PaddleLike:  # refuses any dl_device with NotImplementedError
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            if kwargs.get("dl_device") is not None:
                raise NotImplementedError("only where my data is")
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return (1, 0)

    a = np.arange(3.0)
    t = dlbridge.from_dlpack(PaddleLike(a), device="cpu", copy=False)  # no move needed: shared
    assert t.data_ptr == a.ctypes.data
    c = dlbridge.from_dlpack(PaddleLike(a), device="cpu", copy=True)
    assert c.data_ptr != a.ctypes.data and c.numpy().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(PaddleLike(a), device="cuda_host", copy=False)
    del t, c


def test_strings_with_a_nul_are_refused(no_leak):
    # C reads a string only up to its first NUL: "<f8\0zz" would be "<f8".
    with pytest.raises(ValueError):
        dlbridge.asarray(interface(typestr="<f8\x00zz"))
    with pytest.raises(ValueError):
        dlbridge.zeros((2,), "float32\x00junk")
    with pytest.raises(ValueError):
        dlbridge.zeros((2,)).astype("int8\x00")
    assert dlbridge.zeros((2,), np.float16).dtype == "float16"  # dtypes accepted as astype accepts them


def test_stream_minus_one_is_refused_for_cpu_memory(no_leak):
    t = dlbridge.asarray(np.arange(3.0))
    with pytest.raises(ValueError):
        t.__dlpack__(stream=-1)
    with pytest.raises(ValueError):
        t.__dlpack__(stream=-1, max_version=(1, 3))


def test_paddle_style_device_tuples_are_understood(no_leak):
    class PaddleLike:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return (1, None)

    p = PaddleLike(np.arange(3.0))
    assert dlbridge.from_dlpack(p).numpy().tolist() == [0.0, 1.0, 2.0]
    assert dlbridge.from_dlpack(p, device="cpu").numpy().tolist() == [0.0, 1.0, 2.0]
    t = dlbridge.asarray(np.arange(2.0))
    assert t.to_device(p) is t


# -- capsules and producers that lie ------------------------------------------


def test_capsules_consumed_twice_or_misnamed_are_errors(no_leak):
    import ctypes

    capsule = np.arange(3.0).__dlpack__()
    dlbridge.from_dlpack(capsule)
    with pytest.raises(ValueError, match="already consumed"):
        dlbridge.from_dlpack(capsule)
    PyCapsule_New = ctypes.pythonapi.PyCapsule_New
    PyCapsule_New.restype = ctypes.py_object
    PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    for name in (b"dltensor_v", b"tensor", None):
        with pytest.raises(TypeError):
            dlbridge.from_dlpack(PyCapsule_New(ctypes.c_void_p(8).value, name, None))


def test_producers_that_return_garbage_are_errors(no_leak):
    class Liar:
        def __init__(self, value):
            self.value = value

        def __dlpack__(self, **kwargs):
            return self.value

        def __dlpack_device__(self):
            return (1, 0)

    for value in (None, 3, "capsule", np.arange(2)):
        with pytest.raises(TypeError):
            dlbridge.from_dlpack(Liar(value))


# -- 4. fork after large copies -------------------------------------------------


def test_large_copies_work_in_forked_children():
    run_isolated("""
        import multiprocessing as mp, os, numpy as np, dlbridge
        def big_copy():
            t = dlbridge.asarray(np.arange(1 << 22, dtype=np.float32).reshape(2048, 2048).T)
            c = t.copy()  # 16 MiB, transposed: split across threads
            assert np.asarray(c)[1, 0] == 1.0
            return float(np.asarray(c)[0, 1])
        big_copy()  # the parent's worker threads are running now
        pid = os.fork()
        if pid == 0:
            os._exit(0 if big_copy() == 2048.0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        with mp.get_context("fork").Pool(2) as pool:
            assert pool.starmap(big_copy, [()] * 2, chunksize=1) == [2048.0, 2048.0]
        assert big_copy() == 2048.0
        print("ok")
    """, timeout=120)


def test_the_package_leaves_ctypes_pythonapi_alone():
    # Another module declaring Py_IncRef for raw addresses must not break
    # dlbridge (nor dlbridge it): the package uses private function objects.
    run_isolated("""
        import ctypes, sys
        ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.c_void_p]
        ctypes.pythonapi.Py_DecRef.argtypes = [ctypes.c_void_p]
        import numpy as np, dlbridge
        assert ctypes.pythonapi.Py_IncRef.argtypes == [ctypes.c_void_p]
        a = np.arange(4.0)
        class Exposed:
            __array_interface__ = a.__array_interface__
        t = dlbridge.asarray(Exposed())  # keeps the object through Py_IncRef
        assert np.asarray(t).tolist() == [0.0, 1.0, 2.0, 3.0]
        o = object(); n = sys.getrefcount(o)
        ctypes.pythonapi.Py_IncRef(id(o)); ctypes.pythonapi.Py_DecRef(id(o))
        assert sys.getrefcount(o) == n
        del t
        print("ok")
    """)


def test_producers_with_odd_device_answers_or_module_names(no_leak):
    # from_dlpack's C path asks __dlpack_device__ and reads the type's
    # __module__ (to remember NumPy): odd answers take the Python path or
    # raise there, never crash.
    def producer(device, module="somewhere"):
        class Odd:
            def __init__(self, a):
                self.a = a

            def __dlpack__(self, **kwargs):
                return self.a.__dlpack__(**kwargs)

            def __dlpack_device__(self):
                if isinstance(device, Exception):
                    raise device
                return device

        Odd.__module__ = module
        return Odd(np.arange(3.0))

    for device, module in [((1, 0), 5), ((1, 0), None), ([1, 0], "x"), ((1, 0, 0), "x"), ((1, None), "x")]:
        assert dlbridge.from_dlpack(producer(device, module)).numpy().tolist() == [0.0, 1.0, 2.0], (device, module)
    with pytest.raises(RuntimeError, match="no device"):
        dlbridge.from_dlpack(producer(RuntimeError("no device")))
