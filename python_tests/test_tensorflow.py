"""TensorFlow (tensorflow-cpu from PyPI) through tf.experimental.dlpack:
legacy capsules both ways, zero copy. TensorFlow 2.20 takes only legacy
("dltensor") capsules, not objects with __dlpack__, and refuses layouts that
are not row-major; what it does and does not share is pinned down here and
in docs/frameworks.md."""

import numpy as np
import pytest

import dlbridge

tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu is not installed (python_tests/requirements.txt)")
dlpack = tf.experimental.dlpack


def test_dlbridge_to_tensorflow_shares_memory(no_leak):
    t = dlbridge.zeros((4, 3))
    x = dlpack.from_dlpack(t.__dlpack__())  # a legacy capsule: what TensorFlow takes
    np.asarray(t)[1, 2] = 5.0  # written after the hand-over: seen, so shared
    assert x.shape == (4, 3) and x.dtype == tf.float32
    assert x.numpy()[1, 2] == 5.0
    assert dlbridge.from_dlpack(dlpack.to_dlpack(x)).data_ptr == t.data_ptr  # and back, still the same memory
    del x


def test_tensorflow_to_dlbridge_is_zero_copy(no_leak):
    y = tf.constant(np.arange(6.0).reshape(2, 3))
    a = dlbridge.from_dlpack(dlpack.to_dlpack(y))
    b = dlbridge.from_dlpack(dlpack.to_dlpack(y))
    assert a.data_ptr == b.data_ptr  # both views of TensorFlow's buffer
    assert a.shape == (2, 3) and a.dtype == "float64"
    assert a.numpy().tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    import torch  # a full hop: TensorFlow -> dlbridge -> PyTorch, one buffer

    assert torch.from_dlpack(a).data_ptr() == a.data_ptr


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "bool", "int8", "uint64", "complex64"])
def test_dtypes_cross_both_ways(dtype, no_leak):
    t = dlbridge.asarray(np.arange(3, dtype=np.float32)).astype(dtype)
    x = dlpack.from_dlpack(t.__dlpack__())
    assert x.dtype.name == dtype
    back = dlbridge.from_dlpack(dlpack.to_dlpack(x))
    assert back.dtype == dtype and back.data_ptr == t.data_ptr


def test_what_tensorflow_refuses_is_a_clear_error(no_leak):
    strided = dlbridge.asarray(np.arange(12.0).reshape(3, 4).T)
    with pytest.raises(tf.errors.InvalidArgumentError, match="strides"):
        dlpack.from_dlpack(strided.__dlpack__())  # TensorFlow wants row-major...
    x = dlpack.from_dlpack(strided.copy().__dlpack__())  # ...which copy() gives
    assert x.numpy().tolist() == np.arange(12.0).reshape(3, 4).T.tolist()
    with pytest.raises(tf.errors.InvalidArgumentError, match="dltensor"):
        dlpack.from_dlpack(strided.__dlpack__(max_version=(1, 3)))  # no versioned capsules
    frozen = np.arange(3.0)
    frozen.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):  # a legacy capsule cannot say read-only
        dlpack.from_dlpack(dlbridge.asarray(frozen).__dlpack__())
