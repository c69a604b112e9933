"""CUDA: zero-copy exchange, explicit transfers, stream handoff, the CUDA
array interface, no leaked device memory. The GPU tests run with
`make test-gpu` on a machine with a CUDA device and skip elsewhere, saying
why; the tests at the top check the behaviour without a driver."""

import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

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
    torch.cuda.synchronize()  # a freed block is reused once the work queued before its free is done
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


def test_to_device_of_a_strided_tensor_already_there_is_a_compact_copy(no_leak):
    t = dlbridge.asarray(np.arange(12.0).reshape(3, 4)[:, ::2])
    u = t.to_device("cpu")
    assert u is not t and u.is_contiguous and u.is_copied and u.numpy().tolist() == [[0, 2], [4, 6], [8, 10]]
    compact = dlbridge.asarray(np.arange(4.0))
    assert compact.to_device("cpu") is compact


def _run_alone(code):
    """Runs `code` in a fresh interpreter (no torch: nothing else touches CUDA)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


@gpu
def test_counting_devices_makes_no_context_and_first_use_makes_one():
    _run_alone("""
        import ctypes, dlbridge
        n = dlbridge.cuda_device_count()
        cuda = ctypes.CDLL("libcuda.so.1")
        def active(d):
            flags, on = ctypes.c_uint(), ctypes.c_int(-1)
            assert cuda.cuDevicePrimaryCtxGetState(d, ctypes.byref(flags), ctypes.byref(on)) == 0
            return on.value
        assert n > 0 and [active(d) for d in range(n)] == [0] * n, [active(d) for d in range(n)]
        last = n - 1
        t = dlbridge.zeros((4,), device=f"cuda:{last}")
        assert [active(d) for d in range(n)] == [0] * last + [1]
        print("ok")
    """)


@gpu
def test_forked_child_gets_a_clean_error_and_never_touches_inherited_memory():
    _run_alone("""
        import os, dlbridge
        pinned = dlbridge.zeros((4,), device="cuda_host")  # CUDA initialised here
        device = dlbridge.zeros((4,), device="cuda:0")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                dlbridge.zeros((4,), device="cuda_host")
            except RuntimeError as e:
                code = 0 if "fork" in str(e) else 2
            del pinned, device  # inherited: forgotten, no driver call
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert device.to_device("cpu").numpy().tolist() == [0.0] * 4  # the parent's are fine
        print("ok")
    """)


@gpu
def test_a_free_does_not_wait_for_queued_work_and_memory_is_not_reused_early(no_leak):
    # A torch tensor borrowed from dlbridge dies while 40 large matmuls are
    # queued on torch's side stream, before a kernel that reads it: `del`
    # must not wait for them, and the memory, handed out again at once and
    # zero-filled on the legacy stream, must not be overwritten before the
    # side stream has read it (the free is ordered after the side stream,
    # which torch named as the consumer's stream in __dlpack__).
    n = 4096
    side = torch.cuda.Stream()
    a = torch.randn(n, n, device="cuda")
    ones = np.ones((n, n), np.float32)
    timings, queued = [], []
    for _ in range(7):
        t = dlbridge.asarray(ones).to_device("cuda:0")
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            x = torch.from_dlpack(t)
            outs = [a @ a for _ in range(40)]
            total = x.sum()
        assert not side.query(), "the side stream's work should still be queued"
        start = time.perf_counter()
        del x, t
        timings.append(time.perf_counter() - start)
        again = dlbridge.zeros((n, n), device="cuda:0")
        start = time.perf_counter()
        side.synchronize()
        queued.append(time.perf_counter() - start)
        assert total.item() == n * n, "the memory was reused before the side stream read it"
        del again, outs
    median, work = sorted(timings)[3], sorted(queued)[3]
    print(f"\ndel with 40 matmuls queued: median {median * 1e6:.1f} us; the queued work took {work * 1e3:.1f} ms")
    assert median < 1e-3


@gpu
def test_synchronous_copies_leave_the_legacy_stream_idle(no_leak):
    cuda = ctypes.CDLL("libcuda.so.1")
    big = torch.randn(8192, 8192, device="cuda")
    host = np.arange(1 << 18, dtype=np.float32)  # 1 MiB of pageable memory: under the staging size
    on_device = dlbridge.asarray(host).to_device("cuda:0")
    copies = {
        "host to device": lambda: dlbridge.asarray(host).to_device("cuda:0"),
        "device to device": lambda: on_device.copy(),
        "device to host": lambda: on_device.to_device("cpu"),
        "strided device to device": lambda: dlbridge.from_dlpack(big[:, 7]).to_device("cuda:0"),
    }
    for what, copy in copies.items():
        for _ in range(10):
            big @ big  # queued on torch's default stream: the legacy stream
        out = copy()
        assert cuda.cuStreamQuery(ctypes.c_void_p(1)) == 0, f"{what}: work still queued on the legacy stream"
        del out
    assert torch.equal(torch.from_dlpack(dlbridge.from_dlpack(big[:, 7]).to_device("cuda:0")), big[:, 7])


@gpu
def test_a_column_of_a_large_matrix_moves_only_its_elements(no_leak):
    big = torch.arange(8192 * 8192, device="cuda", dtype=torch.float32).reshape(8192, 8192)
    column = dlbridge.from_dlpack(big[:, 3])
    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    host = column.to_device("cpu")
    assert np.array_equal(host.numpy(), big[:, 3].cpu().numpy())
    on_device = column.to_device("cuda:0")
    assert on_device.is_contiguous and on_device.is_copied and on_device.data_ptr != column.data_ptr
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 64 << 20  # not the matrix's 256 MiB extent
    del host, on_device


def _managed_cupy(cupy, n, stream):
    pool = cupy.cuda.MemoryPool(cupy.cuda.malloc_managed)
    previous = cupy.cuda.get_allocator()
    cupy.cuda.set_allocator(pool.malloc)
    try:
        with stream:
            c = cupy.zeros(n, dtype=cupy.float32)
    finally:
        cupy.cuda.set_allocator(previous)
    return c, pool


@gpu
def test_managed_memory_written_on_a_non_blocking_stream_is_read_right_on_the_cpu(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    n = 1 << 24
    s = cupy.cuda.Stream(non_blocking=True)
    c, pool = _managed_cupy(cupy, n, s)
    with s:
        for _ in range(50):
            c += 1
        t = dlbridge.from_dlpack(c)  # CuPy orders its stream's work before the legacy stream
    if t.__dlpack_device__()[0] != 13:
        pytest.skip("this CuPy labels managed memory kDLCUDA: no host view to check")
    assert (np.asarray(t) == 50).all()  # waits for the legacy stream before the CPU reads
    assert (t.to_device("cpu").numpy() == 50).all()
    s.synchronize()
    del t, c
    pool.free_all_blocks()


@gpu
def test_cuda_array_interface_import_waits_for_the_producers_stream(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    n = 1 << 24
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        c = cupy.zeros(n, dtype=cupy.float32)
        for _ in range(50):
            c += 1
        interface = dict(c.__cuda_array_interface__, stream=s.ptr)

        class Exporter:
            __cuda_array_interface__ = interface

        t = dlbridge.asarray(Exporter())
    assert (t.to_device("cpu").numpy() == 50).all()
    s.synchronize()


@gpu
def test_per_thread_default_stream_consumer(no_leak):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    n = 1 << 24
    producer = torch.cuda.Stream()
    with torch.cuda.stream(producer):
        x = torch.zeros(n, device="cuda")
        for _ in range(20):
            x.add_(1.0)
        t = dlbridge.from_dlpack(x)
    t.__dlpack__(stream=2)  # the per-thread default stream is a valid consumer stream
    with cupy.cuda.Stream.ptds:
        total = float(cupy.from_dlpack(t).sum())
    assert total == 20.0 * n


@gpu
def test_pinned_tensors_take_a_consumers_stream(no_leak):
    p = dlbridge.asarray(np.arange(1 << 20, dtype=np.float32)).to_device("cuda_host")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.from_dlpack(p)  # torch passes its side stream: accepted, the free waits for it
        on_gpu = x.to("cuda", non_blocking=True)
    del x, p
    side.synchronize()
    assert on_gpu.sum().item() == float(np.arange(1 << 20, dtype=np.float64).sum())


@gpu
def test_tensors_made_and_freed_during_graph_capture(no_leak):
    x = torch.ones(1024, device="cuda")
    before = dlbridge.zeros((1 << 20,), device="cuda:0")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 2  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):  # global capture mode (torch's default)
        y = x * 2
        made = dlbridge.zeros((1 << 20,), device="cuda:0")  # dlbridge's work is not captured
        mine = dlbridge.asarray(np.arange(8, dtype=np.float32)).to_device("cuda:0")
        # Handed to the capturing stream: a capture cannot wait on an outside
        # event, so dlbridge's work is waited for on the host instead.
        z = torch.from_dlpack(mine) * 3
        del before, made
    g.replay()
    torch.cuda.synchronize()
    assert y.sum().item() == 2048.0
    assert z.tolist() == [3.0 * i for i in range(8)]
    assert mine.to_device("cpu").numpy().tolist() == list(range(8))


@gpu
def test_two_threads_move_256_mib_each_way_at_once(no_leak):
    n = (256 << 20) // 4
    results = {}

    def move(seed):
        host = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
        back = dlbridge.asarray(host).to_device("cuda:0").to_device("cpu")
        results[seed] = np.array_equal(back.numpy(), host)

    threads = [threading.Thread(target=move, args=(seed,)) for seed in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {1: True, 2: True}


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBCUDA = os.path.join(_REPO, "build", "libcuda")


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU: the driver finds a device")
@pytest.mark.skipif(not os.path.exists(os.path.join(_LIBCUDA, "libcuda.so.1")),
                    reason="NVIDIA's libcuda is not unpacked in build/libcuda (.ci/fetch_libcuda.sh does it)")
def test_a_real_driver_without_a_device():
    # NVIDIA's own libcuda (Debian's libcuda1), loaded on a machine with no
    # GPU: cuInit says there is no device. That is 0 devices (not an error),
    # and every CUDA request is a clear error, never a crash.
    env = dict(os.environ, LD_LIBRARY_PATH=_LIBCUDA, PYTHONPATH=os.pathsep.join(sys.path))
    code = """
        import ctypes, numpy as np, dlbridge
        from dlbridge import capi
        n = ctypes.c_int32(-5)
        assert capi.lib.dlb_cuda_device_count(ctypes.byref(n)) == 0 and n.value == 0
        assert dlbridge.cuda_device_count() == 0
        dlbridge.cuda_empty_cache()
        t = dlbridge.asarray(np.arange(4.0))
        for request, error, words in [
            (lambda: t.to_device("cuda:0"), BufferError, "does not exist"),
            (lambda: dlbridge.zeros((2,), device="cuda"), BufferError, "does not exist"),
            (lambda: dlbridge.zeros((2,), device="cuda_host"), RuntimeError, "found none"),
        ]:
            try:
                request()
                raise AssertionError("no error")
            except error as e:
                assert words in str(e), e

        class FakeCuda:
            __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (t.data_ptr, False), "version": 3}

        try:
            dlbridge.asarray(FakeCuda())
            raise AssertionError("no error")
        except RuntimeError as e:
            assert "no CUDA device" in str(e), e
        # CUDA was initialised here: a forked child gets a clean error naming the fork.
        import os
        pid = os.fork()
        if pid == 0:
            status = capi.lib.dlb_cuda_device_count(ctypes.byref(n))
            message = capi.lib.dlb_last_error_message().decode()
            os._exit(0 if capi.STATUS[status] == "DLB_ERR_CUDA_UNAVAILABLE" and "forked" in message else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert capi.lib.dlb_cuda_device_count(ctypes.byref(n)) == 0  # the parent is unaffected
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
    c_test = os.path.join(_REPO, "c_tests", "build", "test_cuda")
    if os.path.exists(c_test):  # built by `make test-c`
        done = subprocess.run([c_test], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "0 devices" in done.stdout, done.stdout + done.stderr
