"""CUDA: zero-copy exchange, explicit transfers, stream handoff, the CUDA
array interface, no leaked device memory. The GPU tests run with
`make test-gpu` on a machine with a CUDA device and skip elsewhere, saying
why; the tests at the top check the behaviour without a driver."""

import gc

import numpy as np
import pytest

import dlbridge

try:
    import torch

    HAVE_GPU = torch.cuda.is_available() and dlbridge.cuda_device_count() > 0
except ImportError:  # the GPU machine may lack some frameworks
    torch = None
    HAVE_GPU = False

gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device here; run `make test-gpu` on a GPU machine")
no_gpu = pytest.mark.skipif(HAVE_GPU, reason="checks the behaviour without a CUDA driver")


@no_gpu
def test_without_a_driver_cuda_requests_are_clear_errors(no_leak):
    assert dlbridge.cuda_device_count() == 0
    t = dlbridge.asarray(np.arange(4.0))
    assert t.to_device("cpu") is t
    with pytest.raises(RuntimeError, match="CUDA|libcuda"):
        t.to_device("cuda:0")
    with pytest.raises(RuntimeError, match="CUDA|libcuda"):
        dlbridge.zeros((2,), device="cuda")
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))

    class FakeCuda:  # a host pointer claiming to be CUDA memory
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (t.data_ptr, False), "version": 3}

    with pytest.raises(RuntimeError, match="CUDA|libcuda"):
        dlbridge.asarray(FakeCuda())


def test_cpu_tensors_have_no_cuda_array_interface(no_leak):
    t = dlbridge.zeros((2,))
    assert not hasattr(t, "__cuda_array_interface__")
    assert np.array(t, dtype=np.float64).dtype == np.float64  # __array__ / interface with a dtype


@gpu
def test_torch_cuda_to_cupy_and_back_is_zero_copy(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    t = dlbridge.from_dlpack(x)
    assert t.device == "cuda:0" and t.data_ptr == x.data_ptr()
    c = cupy.from_dlpack(t)
    assert c.data.ptr == x.data_ptr()
    c[5] = -1
    assert x[5].item() == -1
    back = torch.from_dlpack(dlbridge.from_dlpack(c))
    assert back.data_ptr() == x.data_ptr()
    via_cai = cupy.asarray(t)  # __cuda_array_interface__
    assert via_cai.data.ptr == x.data_ptr()


@gpu
def test_cuda_tensor_needs_to_device_for_numpy(no_leak):
    t = dlbridge.from_dlpack(torch.ones(3, device="cuda"))
    with pytest.raises(TypeError, match=r"to_device\('cpu'\)"):
        t.numpy()
    with pytest.raises(TypeError, match=r"to_device\('cpu'\)"):
        np.asarray(t)
    assert t.to_device("cpu").numpy().tolist() == [1.0, 1.0, 1.0]


@gpu
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "stepped", "reversed"])
def test_transfers_match_torch(layout, no_leak):
    base = torch.arange(48 * 64, dtype=torch.float64).reshape(48, 64)
    views = {
        "contiguous": lambda a: a,
        "transposed": lambda a: a.T,
        "stepped": lambda a: a[::3, 1::2],
        "reversed": lambda a: a.flip(0),
    }
    host = views[layout](base)
    if layout == "reversed":
        host = host.contiguous()  # torch cannot export negative strides; build them in NumPy below
        src = dlbridge.asarray(base.numpy()[::-1])
    else:
        src = dlbridge.from_dlpack(host)
    on_gpu = src.to_device("cuda:0")
    assert on_gpu.is_copied and on_gpu.is_contiguous and on_gpu.device == "cuda:0"
    assert torch.equal(torch.from_dlpack(on_gpu).cpu(), host.contiguous())
    dev = views[layout](base.cuda()) if layout != "reversed" else base.cuda().flip(0)
    back = dlbridge.from_dlpack(dev).to_device("cpu")
    assert np.array_equal(back.numpy(), dev.cpu().numpy())
    pinned = dlbridge.from_dlpack(dev).to_device("cuda_host")
    assert pinned.device == "cuda_host" and np.array_equal(pinned.numpy(), dev.cpu().numpy())
    d2d = dlbridge.from_dlpack(dev).to_device("cuda:0")
    assert torch.equal(torch.from_dlpack(d2d), dev.contiguous())


@gpu
def test_stream_handoff_orders_producer_work_before_the_consumer(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    n = 1 << 26
    producer = torch.cuda.Stream()
    for _ in range(3):
        with torch.cuda.stream(producer):
            x = torch.zeros(n, device="cuda")
            for _ in range(20):  # long work still running on the producer's stream
                x.add_(1.0)
            t = dlbridge.from_dlpack(x)  # asks torch to order its work before the legacy stream
        consumer = cupy.cuda.Stream(non_blocking=True)
        with consumer:
            c = cupy.from_dlpack(t)  # dlbridge: consumer waits on the legacy stream (event)
            total = float(c.sum())
        assert total == 20.0 * n


@gpu
def test_cuda_array_interface_import_syncs_and_finds_the_device(no_leak):
    x = torch.arange(10, device="cuda", dtype=torch.int32)

    class Exporter:
        def __init__(self):
            self.ref = x
            self.__cuda_array_interface__ = {
                "shape": (10,), "typestr": "<i4", "data": (x.data_ptr(), False), "version": 3,
                "strides": None, "stream": torch.cuda.current_stream().cuda_stream or 1,
            }

    t = dlbridge.asarray(Exporter())
    assert t.device == "cuda:0" and t.data_ptr == x.data_ptr()
    assert t.to_device("cpu").numpy().tolist() == list(range(10))


@gpu
def test_no_device_memory_leaks_after_many_round_trips(no_leak):
    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    a = np.ones((1024, 1024), dtype=np.float32)
    for _ in range(200):
        d = dlbridge.asarray(a).to_device("cuda:0")
        back = d.to_device("cpu")
        del d, back
    gc.collect()
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 64 << 20  # 200 x 4 MiB went through; none may stay
