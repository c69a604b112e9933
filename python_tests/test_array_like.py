"""What array libraries probe a foreign array for: len(), copy / deepcopy and
pickle (by copying the data, as NumPy does), objects that offer only
``__array__``, dtypes given the same way everywhere."""

import copy
import pickle

import numpy as np
import pytest

import dlbridge


def test_len_is_the_first_dimension(no_leak):
    assert len(dlbridge.zeros((3, 2))) == 3
    assert len(dlbridge.zeros((0, 5))) == 0
    with pytest.raises(TypeError, match="0-d"):
        len(dlbridge.zeros(()))


@pytest.mark.parametrize("make", [
    lambda: dlbridge.asarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    lambda: dlbridge.asarray(np.arange(12, dtype=np.int64).reshape(3, 4).T),  # strided
    lambda: dlbridge.asarray(np.arange(12.0)[::-3]),  # negative stride
    lambda: dlbridge.zeros((), "float64"),
    lambda: dlbridge.zeros((0, 3), "int8"),
    lambda: dlbridge.asarray(np.array([True, False])),
    lambda: dlbridge.zeros((2, 2), "bfloat16"),
], ids=["f32", "transposed", "negative", "0-d", "empty", "bool", "bfloat16"])
def test_pickle_and_copies_carry_the_data(make, no_leak):
    t = make()
    expected = np.asarray(t).copy()
    for other in (pickle.loads(pickle.dumps(t)), copy.copy(t), copy.deepcopy(t)):
        assert (other.shape, other.dtype, other.device) == (t.shape, t.dtype, t.device)
        assert other.nbytes == 0 or other.data_ptr != t.data_ptr
        np.testing.assert_array_equal(np.asarray(other), expected)
        assert not other.readonly
        del other
    del t


def test_pickling_a_read_only_view_gives_a_writable_copy(no_leak):
    a = np.arange(4.0)
    a.flags.writeable = False
    t = dlbridge.asarray(a)
    assert t.readonly
    back = pickle.loads(pickle.dumps(t))
    np.asarray(back)[0] = 7.0
    assert a[0] == 0.0 and np.asarray(back).tolist() == [7.0, 1.0, 2.0, 3.0]
    del t, back


def test_objects_with_only_array_are_taken(no_leak):
    class OnlyArray:
        def __array__(self, dtype=None, copy=None):
            return np.arange(3.0)

    assert dlbridge.asarray(OnlyArray()).numpy().tolist() == [0.0, 1.0, 2.0]

    class Itself:
        def __array__(self, dtype=None, copy=None):
            return self

    with pytest.raises(TypeError):
        dlbridge.asarray(Itself())


def test_dtypes_are_accepted_alike_by_zeros_and_astype(no_leak):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for dtype, name in [(np.float32, "float32"), (np.dtype("int16"), "int16"), ("float16", "float16"),
                        (ml_dtypes.bfloat16, "bfloat16")]:
        assert dlbridge.zeros((2,), dtype).dtype == name
        assert dlbridge.zeros((2,)).astype(dtype).dtype == name
