"""NumPy's own installed DLPack and array-interface tests, with dlbridge in
the exchange path. Run with ``python_tests/peer_numpy/run.py`` (which loads
this file as a pytest plugin and sets DLBRIDGE_PEER_NUMPY); when pytest
merely passes by this directory (``pytest python_tests``) every hook here is
inert.

Routing (nothing of NumPy's test code is copied or edited; the installed
files run in place):

* DLPack: in every selected test module the global ``np`` is replaced by a
  proxy of the numpy module whose ``from_dlpack`` is
  ``np.from_dlpack(dlbridge.from_dlpack(x, device=d, copy=c), device=d,
  copy=False if c is False else None)``: the producer's capsule is consumed
  and validated by dlbridge, and NumPy imports dlbridge's re-export (the
  outer call also exercises dlbridge's ``__dlpack__`` with ``dl_device``).
* Array interface: the proxy's ``array`` / ``asarray`` / ``asanyarray`` /
  ``may_share_memory`` / ``shares_memory`` replace every argument that NumPy
  would read through ``__array_interface__`` (an object whose attribute is a
  dict, or whose attribute lookup raises something other than
  AttributeError), also inside nested lists and tuples, by
  ``dlbridge.asarray(obj)`` (``copy=False`` when NumPy was asked for
  copy=False / NEVER). NumPy then consumes dlbridge's export:
    mode "struct":    the Tensor itself (NumPy reads ``__array_struct__``);
    mode "interface": a plain object exposing only the Tensor's
                      ``__array_interface__`` dict.
  test_array_coercion's ``arraylike`` parameter with id
  ``__array_interface__`` (a factory NumPy's tests nest into lists) is
  wrapped the same way: ``arraylike(a)`` -> routed ``ArrayInterface(a)``.
* Every selected test must send at least one object through dlbridge: a test
  that passed without doing so is reported as an error (teardown), so no test
  passes silently outside the path. Tests whose subject cannot be routed are
  deselected below with their reason; known deliberate differences are
  strict xfails with theirs.

Grep hits for ``__array_interface__`` in numpy/_core/tests that are NOT
selected, since NumPy is no consumer of an array interface there: they read
an ndarray's own interface (its data address or descr: test_multiarray
_aligned_zeros, test_no_dgemv, test_accelerate_framework_sgemv_fix,
TestAlignment, test_array_interface_itemsize, test_readonly_flag_protocols
(consumes __array_struct__); test_mem_overlap check_may_share_memory_exact;
test_regression test_astype_copy, test__array_interface__descr), or use it as a private
helper for views of NumPy-internal layouts (test_mem_overlap
view_element_first_byte, test_stringdtype get_view, stride_tricks'
DummyArray). test_array_interface.py consumes ``__array_struct__`` from a C
extension compiled at test time (dlbridge.asarray takes no __array_struct__).
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

MODE = os.environ.get("DLBRIDGE_PEER_NUMPY")  # "struct" | "interface" | None (inert)

ROOT = pathlib.Path(__file__).resolve().parents[2]
try:
    import dlbridge
except ImportError:
    sys.path.insert(0, str(ROOT / "python"))
    import dlbridge

import numpy

TESTS = pathlib.Path(numpy.__file__).resolve().parent / "_core" / "tests"

# ---------------------------------------------------------------------------
# What runs. Node ids relative to TESTS (run.py passes them as paths).

DLPACK = ["test_dlpack.py"]

ARRAY_INTERFACE = [
    "test_multiarray.py::TestArrayInterface::test_scalar_interface",
    "test_multiarray.py::test_interface_empty_shape",
    "test_multiarray.py::test_interface_no_shape_error",
    "test_multiarray.py::test_interface_nullptr",
    "test_multiarray.py::test_interface_nullptr_size_check",
    "test_multiarray.py::test_array_interface_empty_shape",
    "test_multiarray.py::test_array_interface_offset",
    "test_multiarray.py::test_array_interface_unicode_typestr",
    "test_multiarray.py::test_array_interface_excess_dimensions_raises",
    "test_multiarray.py::TestArrayCreationCopyArgument::test_array_interfaces",
    "test_multiarray.py::TestFlags::test_writeable_any_base",
    "test_array_coercion.py::TestStringDiscovery::test_unpack_first_level[__array_interface__]",
    "test_array_coercion.py::TestNested::test_nested_arraylikes[__array_interface__]",
    "test_array_coercion.py::TestNested::test_uneven_depth_ragged[__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_0d_object_special_case[__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_object_assignment_special_case[arr0-__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_object_assignment_special_case[arr1-__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_bad_array_like_attributes[RecursionError-__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_bad_array_like_attributes[MemoryError-__array_interface__]",
    "test_array_coercion.py::TestArrayLikes::test_array_interface_descr_optional",
    "test_array_coercion.py::TestSpecialAttributeLookupFailure::test_deprecated",
    "test_api.py::test_array_array",
    "test_half.py::TestHalf::test_half_array_interface",
    "test_mem_overlap.py::test_non_ndarray_inputs",
    "test_regression.py::TestRegression::test_bad_array_interface",
    "test_function_base.py::TestLinspace::test_array_interface",
]

# Selected tests whose subject dlbridge cannot be put in front of. Keys match
# a node id up to "[" (all parameters) or exactly.
DESELECT = {
    "test_dlpack.py::TestDLPack::test_dunder_dlpack_refcount":
        "only NumPy's producer: refcount of a capsule from ndarray.__dlpack__, nothing is imported",
    "test_dlpack.py::TestDLPack::test_dunder_dlpack_stream":
        "only NumPy's producer: ndarray.__dlpack__(stream=...) argument checking",
    "test_dlpack.py::TestDLPack::test_dunder_dlpack_copy":
        "only NumPy's producer: ndarray.__dlpack__(copy=...) argument parsing",
    "test_dlpack.py::TestDLPack::test_dlpack_destructor_exception":
        "only NumPy's producer: an unconsumed capsule destroyed while an exception unwinds",
    "test_multiarray.py::TestFlags::test_writeable_any_base":
        "passes the class `frominterface`, whose __array_interface__ exists only on instances: no interface is read",
    "test_function_base.py::TestLinspace::test_array_interface":
        "coercion happens inside np.linspace (NumPy-internal, not routable); its data is a buffer object anyway",
}

# Known deliberate differences (strict: an XPASS fails, so a change shows).
_NO_DATA = ("dlbridge shares memory only: an interface whose 'data' is missing, None or a buffer object "
            "(NumPy then reads the object's buffer or its __float__) is refused with BufferError")
XFAIL = {
    # val4 (shape None -> TypeError) and val8 (strides (2,) -> ValueError) pass: dlbridge checks those first.
    **{f"test_multiarray.py::TestArrayInterface::test_scalar_interface[{p}]": _NO_DATA
       for p in ("val0-iface0-0.5", "val1-iface1-expected1", "val2-iface2-expected2", "val3-iface3-0.5",
                 "val5-iface5-expected5", "val6-iface6-ValueError", "val7-iface7-0.5", "val9-iface9-TypeError",
                 "val10-iface10-TypeError")},
    "test_multiarray.py::test_array_interface_empty_shape": _NO_DATA + " (here data=bytes)",
    "test_multiarray.py::test_array_interface_offset": _NO_DATA + " (here data=memoryview)",
    "test_multiarray.py::test_interface_nullptr_size_check":
        "NULL data with 1 element is a BufferError in dlbridge (DLB_ERR_NULL_DATA); NumPy raises ValueError",
    "test_multiarray.py::test_interface_nullptr[iface1]":
        "structured/subarray typestr '(0,)f8,' has no DLPack dtype (ValueError)",
    "test_array_coercion.py::TestArrayLikes::test_array_interface_descr_optional":
        "void typestr '|V10' has no DLPack dtype (BufferError)",
    "test_array_coercion.py::TestStringDiscovery::test_unpack_first_level":
        "object dtype '|O' cannot be exchanged (BufferError)",
    "test_multiarray.py::test_array_interface_unicode_typestr":
        "a malformed typestr is a ValueError in dlbridge; NumPy raises TypeError ('data type not understood')",
    "test_multiarray.py::test_array_interface_excess_dimensions_raises":
        "ValueError as NumPy, but dlbridge's message ('ndim is 136: must be between 0 and 64') fails match=",
    "test_multiarray.py::TestArrayCreationCopyArgument::test_array_interfaces":
        "inherent to routing: with copy=False the array's base is the dlbridge object, not the producer",
}


def _lookup(table: dict, nodeid: str):
    rel = nodeid.split("numpy/_core/tests/")[-1]
    return table.get(rel, table.get(rel.split("[")[0]))


# ---------------------------------------------------------------------------
# Routing.

_numpy_from_dlpack = numpy.from_dlpack
_calls = {"dlpack": 0, "array_interface": 0}


class _Relay:
    """Mode "interface": what NumPy sees is dlbridge's own __array_interface__
    dict; the Tensor (and through it the producer) stays alive with it."""

    __slots__ = ("tensor", "__array_interface__")

    def __init__(self, tensor):
        self.tensor = tensor
        self.__array_interface__ = tensor.__array_interface__

    def __repr__(self):
        return f"_Relay({self.tensor!r})"


def _reads_interface(obj) -> bool:
    """Would NumPy take `obj` through __array_interface__ (and not through
    something dlbridge has no part in)?"""
    if isinstance(obj, (numpy.ndarray, numpy.generic, dlbridge.Tensor, _Relay, list, tuple, str, bytes)):
        return False
    try:
        iface = obj.__array_interface__
    except AttributeError:
        return False
    except Exception:
        return True  # a raising lookup: dlbridge must meet (and pass on) the error
    if not isinstance(iface, dict):
        return False  # a property seen on the class, or junk: NumPy's own business
    try:
        memoryview(obj).release()
        return False  # NumPy would take the buffer first
    except TypeError:
        pass
    return not hasattr(obj, "__array_struct__")  # NumPy reads __array_struct__ first


def _to_dlbridge(obj, copy=None):
    _calls["array_interface"] += 1
    t = dlbridge.asarray(obj, copy=False if copy is False else None)
    return t if MODE == "struct" else _Relay(t)


def _route(obj, copy=None, depth=0):
    if isinstance(obj, (list, tuple)) and depth < 70:
        items = [_route(x, copy, depth + 1) for x in obj]
        if any(a is not b for a, b in zip(items, obj)):
            return type(obj)(items) if type(obj) in (list, tuple) else obj
        return obj
    return _to_dlbridge(obj, copy) if _reads_interface(obj) else obj


def _no_copy(copy) -> bool:
    return copy is False or copy is numpy._CopyMode.NEVER


def _routing_array(fn, default_copy):
    """np.array / asarray / asanyarray, their first argument routed."""
    def routed(*args, **kwargs):
        copy = False if _no_copy(kwargs.get("copy", default_copy)) else None
        if args:
            args = (_route(args[0], copy),) + args[1:]
        else:
            for name in ("object", "a"):
                if name in kwargs:
                    kwargs[name] = _route(kwargs[name], copy)
        return fn(*args, **kwargs)

    routed.__name__ = fn.__name__
    return routed


def _routing_pair(fn):
    def routed(a, b, *args, **kwargs):
        return fn(_route(a), _route(b), *args, **kwargs)

    routed.__name__ = fn.__name__
    return routed


def from_dlpack(x, /, *, device=None, copy=None):
    """producer -> dlbridge -> NumPy."""
    _calls["dlpack"] += 1
    t = dlbridge.from_dlpack(x, device=device, copy=copy)
    return _numpy_from_dlpack(t, device=device, copy=False if copy is False else None)


class _RoutedNumPy(type(numpy)):
    """The numpy module as the selected test modules see it."""

    def __getattr__(self, name):
        return getattr(numpy, name)


np_proxy = _RoutedNumPy("numpy")
np_proxy.__dict__.update(
    from_dlpack=from_dlpack,
    array=_routing_array(numpy.array, True),
    asarray=_routing_array(numpy.asarray, None),
    asanyarray=_routing_array(numpy.asanyarray, None),
    may_share_memory=_routing_pair(numpy.may_share_memory),
    shares_memory=_routing_pair(numpy.shares_memory),
    __file__=numpy.__file__,
    __version__=numpy.__version__,
)


def _wrap_arraylike(factory):
    def arraylike(a):
        return _to_dlbridge(factory(a))

    arraylike.__name__ = f"dlbridge_{factory.__name__}"
    return arraylike


# ---------------------------------------------------------------------------
# Hooks (all inert unless run.py set DLBRIDGE_PEER_NUMPY).


def pytest_configure(config):
    if not MODE:
        return
    if MODE not in ("struct", "interface"):
        raise pytest.UsageError(f"DLBRIDGE_PEER_NUMPY={MODE!r}: expected 'struct' or 'interface'")
    # Markers NumPy's own conftest (not loaded: it needs hypothesis) and pytest-run-parallel register.
    for marker in ("slow", "slow_pypy", "valgrind_error", "leaks_references", "limited_api",
                   "thread_unsafe(reason)", "parallel_threads(n)", "iterations(n)"):
        config.addinivalue_line("markers", marker)


def pytest_report_header(config):
    if MODE:
        return (f"dlbridge {dlbridge.__version__} ({dlbridge._lib.path}) in front of NumPy {numpy.__version__}; "
                f"array-interface mode: {MODE}; tests: {TESTS}")


def pytest_collection_modifyitems(session, config, items):
    if not MODE:
        return
    keep, dropped = [], []
    for item in items:
        reason = _lookup(DESELECT, item.nodeid)
        if reason:
            dropped.append(item)
            continue
        reason = _lookup(XFAIL, item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "np", None) is numpy:
            module.np = np_proxy
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    config._dlbridge_deselected = [(i.nodeid, _lookup(DESELECT, i.nodeid)) for i in dropped]
    items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not MODE:
        return None
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is not None and "__array_interface__" in callspec.id and "arraylike" in pyfuncitem.funcargs:
        pyfuncitem.funcargs["arraylike"] = _wrap_arraylike(pyfuncitem.funcargs["arraylike"])
    return None


@pytest.fixture(autouse=True)
def _dlbridge_on_path(request):
    """Fails (at teardown) a test that never sent anything through dlbridge."""
    if not MODE:
        yield
        return
    before = sum(_calls.values())
    yield
    if sum(_calls.values()) == before:
        pytest.fail("harness: nothing in this test went through dlbridge (route it or deselect it with a reason)",
                    pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not MODE:
        return
    tr = terminalreporter
    tr.section("dlbridge peer run")
    tr.write_line(f"mode {MODE}: {_calls['dlpack']} from_dlpack calls and "
                  f"{_calls['array_interface']} array-interface objects went through dlbridge")
    for nodeid, reason in getattr(config, "_dlbridge_deselected", []):
        tr.write_line(f"deselected {nodeid.split('numpy/_core/tests/')[-1]}: {reason}")
