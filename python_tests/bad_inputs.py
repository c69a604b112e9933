"""The Python half of the bad-input catalogue: each malformed input to the
package, the exception it must raise, and a live-tensor count back at its
baseline afterwards. Prints the Markdown table docs/bad-inputs.md contains;
exits non-zero if any case misbehaves."""

import ctypes
import datetime
import gc
import sys

import numpy as np

import dlbridge

cases = []


def case(description, exception):
    def register(fn):
        cases.append((description, exception, fn))
        return fn

    return register


t = dlbridge.asarray(np.arange(6.0))


@case("`from_dlpack` of a capsule with another name", TypeError)
def _():
    dlbridge.from_dlpack(datetime.datetime_CAPI)


@case("`from_dlpack` of a NumPy capsule consumed before", ValueError)
def _():
    capsule = np.arange(3.0).__dlpack__(max_version=(1, 3))
    dlbridge.from_dlpack(capsule)
    dlbridge.from_dlpack(capsule)


@case("`from_dlpack` of a dlbridge capsule consumed by PyTorch", ValueError)
def _():
    import torch

    capsule = t.__dlpack__(max_version=(1, 3))
    torch.from_dlpack(capsule)
    dlbridge.from_dlpack(capsule)


@case("`from_dlpack` of an object without `__dlpack__`", TypeError)
def _():
    dlbridge.from_dlpack(object())


@case("`asarray` of an object that shares no memory", TypeError)
def _():
    dlbridge.asarray(object())


@case("`asarray` of a masked `__array_interface__`", BufferError)
def _():
    class Masked:
        __array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (t.data_ptr, False), "version": 3,
                               "mask": np.array([True, False])}

    dlbridge.asarray(Masked())


@case("`asarray` of an `__array_interface__` whose data is a buffer object", BufferError)
def _():
    class BufferData:
        __array_interface__ = {"shape": (2,), "typestr": "|u1", "data": bytearray(2), "version": 3}

    dlbridge.asarray(BufferData())


@case("`asarray` of a malformed typestr `\"<q4\"`", ValueError)
def _():
    class Bad:
        __array_interface__ = {"shape": (1,), "typestr": "<q4", "data": (t.data_ptr, False), "version": 3}

    dlbridge.asarray(Bad())


@case("`asarray(big-endian array, copy=False)`", BufferError)
def _():
    dlbridge.asarray(np.arange(3, dtype=">f4"), copy=False)


@case("`asarray` of a buffer in an unsupported format (`array('u')`)", BufferError)
def _():
    import array

    dlbridge.asarray(array.array("u", "ab"))


@case("`__dlpack__()` (legacy) of a read-only tensor", BufferError)
def _():
    ro = np.arange(2.0)
    ro.flags.writeable = False
    dlbridge.from_dlpack(ro).__dlpack__()


@case("`__dlpack__(stream=5)` on a CPU tensor", ValueError)
def _():
    t.__dlpack__(stream=5, max_version=(1, 3))


@case("`__dlpack__(stream=\"default\")`", TypeError)
def _():
    t.__dlpack__(stream="default")


@case("`__dlpack__(max_version=\"1.0\")`", TypeError)
def _():
    t.__dlpack__(max_version="1.0")


@case("`__dlpack__(dl_device=(2, 0), copy=False)`", BufferError)
def _():
    t.__dlpack__(dl_device=(2, 0), copy=False)


@case("`zeros((2, -1))`", ValueError)
def _():
    dlbridge.zeros((2, -1))


@case("`zeros((2,), \"float31\")`", ValueError)
def _():
    dlbridge.zeros((2,), "float31")


@case("`astype(\"float8_e4m3fn\")` (not numeric)", BufferError)
def _():
    t.astype("float8_e4m3fn")


@case("`to_device(\"tpu:0\")`", ValueError)
def _():
    t.to_device("tpu:0")


def _exposing(**interface):
    class Exposed:
        __array_interface__ = dict({"shape": (2, 2), "typestr": "<f8", "data": (8, False)}, **interface)

    return Exposed()


@case("`asarray` of an `__array_interface__` with 1 stride for 2 dimensions", ValueError)
def _():
    dlbridge.asarray(_exposing(strides=(8,)))


@case("`asarray` of an `__array_interface__` without `shape`", ValueError)
def _():
    obj = _exposing()
    del obj.__array_interface__["shape"]
    dlbridge.asarray(obj)


@case("`asarray` of an `__array_interface__` whose data pointer is 2**64", OverflowError)
def _():
    dlbridge.asarray(_exposing(data=(2**64, False)))


@case("`asarray` of an `__array_interface__` whose data is a 1-tuple", TypeError)
def _():
    dlbridge.asarray(_exposing(data=(8,)))


@case("`asarray` of an `__array_interface__` with typestr `\"<M8[D]\"`", BufferError)
def _():
    dlbridge.asarray(_exposing(typestr="<M8[D]"))


@case("`__dlpack__(copy=\"yes\")`", ValueError)
def _():
    t.__dlpack__(max_version=(1, 3), copy="yes")


@case("`__dlpack__(stream=-1)` on a CPU tensor", ValueError)
def _():
    t.__dlpack__(stream=-1)


@case("`__dlpack__(dl_device=(1, 5))` (CPU ids are 0)", BufferError)
def _():
    t.__dlpack__(max_version=(1, 3), dl_device=(1, 5))


@case("`to_device((1, 2**32))`", ValueError)
def _():
    t.to_device((1, 2**32))


@case("`from_dlpack(x, device=\"cuda:0\")` of a raw capsule without a CUDA driver", BufferError)
def _():
    if dlbridge.cuda_device_count():
        raise BufferError("(skipped: this machine has CUDA)")
    dlbridge.from_dlpack(np.arange(2.0).__dlpack__(), device="cuda:0")


@case("`Tensor()` constructed directly", TypeError)
def _():
    dlbridge.Tensor()


def main():
    print("| # | Python input | exception | message |\n|---:|---|---|---|")
    failures = 0
    gc.collect()
    baseline = dlbridge.live_tensor_count()
    for i, (description, exception, fn) in enumerate(cases, 1):
        try:
            fn()
            got, message = None, "(no exception)"
        except Exception as e:  # the case says which one it must be
            got, message = type(e), str(e).splitlines()[0]
        gc.collect()
        ok = got is exception and dlbridge.live_tensor_count() == baseline
        failures += not ok
        if not ok:
            print(f"FAILED: {description}: {got} ({message}), {dlbridge.live_tensor_count()} live", file=sys.stderr)
        print(f"| {i} | {description} | `{got.__name__ if got else None}` | {message.replace('|', '/')} |")
    print(f"bad-input catalogue (Python): {len(cases) - failures} passed, {failures} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
