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
    dlbridge.cuda_empty_cache()  # nothing kept, nothing to do: not an error
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


class _Recorder:
    """A producer that records the keywords from_dlpack passes, then refuses."""

    def __init__(self, device):
        self.device, self.kwargs = device, None

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        self.kwargs = kwargs
        raise BufferError("recorded")


@pytest.mark.parametrize("device, stream", [((2, 0), 1), ((13, 0), 1), ((10, 0), 0), ((1, 0), None), ((3, 0), None)])
def test_from_dlpack_passes_the_consumer_stream(device, stream):
    # dlbridge orders its CUDA work on the legacy default stream, so a CUDA
    # producer is asked (stream=1) to make its pending work visible there; the
    # spec says ROCm's default is 0, and host memory takes no stream.
    # A class of its own: from_dlpack learns which types stay on the host.
    p = type("Recorder", (_Recorder,), {})(device)
    with pytest.raises(BufferError, match="recorded"):
        dlbridge.from_dlpack(p)
    assert p.kwargs.get("stream") == stream and p.kwargs["max_version"] == (1, 3)


def test_numpys_own_arrays_are_never_asked_for_their_device_and_others_once():
    class Spy(np.ndarray):  # not NumPy's own type: asked until it has answered host memory
        calls = 0

        def __dlpack_device__(self):
            Spy.calls += 1
            return super().__dlpack_device__()

    a = np.arange(3.0).view(Spy)
    for _ in range(3):
        assert dlbridge.from_dlpack(a).numpy().tolist() == [0.0, 1.0, 2.0]
    assert Spy.calls == 1
    dlbridge.from_dlpack(np.zeros(1))
    host_types = dlbridge._lib.native["host_types"]()
    assert np.ndarray in host_types and Spy not in host_types  # NumPy's own: never asked


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
@pytest.mark.parametrize("direction", ["to device", "to host", "strided to host"])
def test_large_transfers_through_the_staging_buffers(direction, no_leak):
    # Over 4 MiB, pageable memory goes through dlbridge's pinned chunks (8 MiB,
    # two in turn): three chunks and a ragged tail, repeated so the pool is reused.
    n = (3 * (8 << 20) + 4100) // 4
    rng = np.random.default_rng(7)
    for _ in range(2):
        host = rng.standard_normal(n, dtype=np.float32)
        if direction == "to device":
            dev = dlbridge.asarray(host).to_device("cuda:0")
            assert torch.equal(torch.from_dlpack(dev), torch.from_numpy(host).cuda())
        elif direction == "to host":
            back = dlbridge.from_dlpack(torch.from_numpy(host).cuda()).to_device("cpu")
            assert np.array_equal(back.numpy(), host)
        else:
            square = torch.from_numpy(host[: 2048 * 2048]).cuda().reshape(2048, 2048)
            back = dlbridge.from_dlpack(square.T).to_device("cpu")
            assert np.array_equal(back.numpy(), host[: 2048 * 2048].reshape(2048, 2048).T)


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
    dlbridge.cuda_empty_cache()  # what dlbridge kept for reuse goes back too
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 8 << 20  # 200 x 4 MiB went through; none may stay


@gpu
def test_pinned_blocks_are_reused(no_leak):
    dev = dlbridge.from_dlpack(torch.ones(1 << 20, device="cuda"))
    first = dev.to_device("cuda_host")
    address = first.data_ptr
    del first
    second = dev.to_device("cuda_host")  # pinning is slow: the freed block comes back
    assert second.data_ptr == address and second.numpy().sum() == 1 << 20


@gpu
def test_new_device_memory_is_ready_on_the_consumers_stream(no_leak):
    # dlbridge allocates and zero-fills on the legacy default stream; a
    # consumer on another stream is ordered after that by the stream handoff.
    side = torch.cuda.Stream()
    for _ in range(5):
        with torch.cuda.stream(side):
            x = torch.from_dlpack(dlbridge.zeros((1 << 24,), device="cuda"))
            assert int(torch.count_nonzero(x)) == 0


@gpu
def test_jax_cuda_exchange_is_zero_copy(no_leak):
    jax = pytest.importorskip("jax", reason="JAX is not installed on this GPU machine")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("this JAX has no GPU backend")
    x = jax.device_put(jax.numpy.arange(1024, dtype=jax.numpy.float32), gpus[0])
    t = dlbridge.from_dlpack(x)
    assert t.device == "cuda:0" and t.data_ptr == x.unsafe_buffer_pointer()
    assert torch.from_dlpack(t).data_ptr() == x.unsafe_buffer_pointer()
    mine = dlbridge.asarray(np.arange(256, dtype=np.float32)).to_device("cuda:0")
    y = jax.numpy.from_dlpack(mine)
    assert y.unsafe_buffer_pointer() == mine.data_ptr
    assert float(y.sum()) == float(np.arange(256).sum())
    del y  # JAX holds `mine` through its capsule until then


@gpu
def test_managed_memory_is_shared_and_host_accessible(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    pool = cupy.cuda.MemoryPool(cupy.cuda.malloc_managed)
    previous = cupy.cuda.get_allocator()
    cupy.cuda.set_allocator(pool.malloc)
    try:
        c = cupy.arange(64, dtype=cupy.float32)
    finally:
        cupy.cuda.set_allocator(previous)
    cupy.cuda.Device().synchronize()
    t = dlbridge.from_dlpack(c)
    assert t.data_ptr == c.data.ptr
    assert t.__dlpack_device__()[0] in (2, 13)  # CuPy may label managed memory kDLCUDA
    if t.__dlpack_device__()[0] == 13:  # host-accessible: read in place
        assert np.asarray(t).tolist() == list(range(64))
    assert t.to_device("cpu").numpy().tolist() == list(range(64))
    back = cupy.from_dlpack(t)
    assert back.data.ptr == c.data.ptr
    del t, back, c
    pool.free_all_blocks()


@gpu
def test_copies_of_cuda_sources_stay_on_their_device(no_leak):
    # copy=True copies; it never moves data to the CPU unless a device is asked for.
    x = torch.arange(6, dtype=torch.float32, device="cuda")
    for source in (x.__dlpack__(), x):
        t = dlbridge.from_dlpack(source, copy=True)
        assert t.device == "cuda:0" and t.data_ptr != x.data_ptr() and t.is_copied
        assert torch.from_dlpack(t).tolist() == x.tolist()

    class Cai:  # only __cuda_array_interface__
        __cuda_array_interface__ = x.__cuda_array_interface__

    t = dlbridge.asarray(Cai(), copy=True)
    assert t.device == "cuda:0" and t.data_ptr != x.data_ptr()
    u = dlbridge.from_dlpack(x)
    c = torch.from_dlpack(u.__dlpack__(max_version=(1, 3), copy=True))
    assert c.device.type == "cuda" and c.data_ptr() != x.data_ptr() and c.tolist() == x.tolist()
    assert u.copy().device == "cuda:0"
    del t, u, c


@gpu
def test_cuda_device_numbers_are_range_checked(no_leak):
    with pytest.raises(ValueError):
        dlbridge.zeros((2,), device=(2, 2**32))
    with pytest.raises(ValueError):
        dlbridge.zeros((2,), device="cuda:-1")
