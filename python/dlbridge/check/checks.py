"""The battery: each check is a function of one framework that returns an
Outcome. Producer checks take the framework's tensors through dlbridge
(which validates every field); consumer checks hand the framework's
`from_dlpack` probes (hand-made capsules, see `capsules`) and dlbridge's
own tensors. A refusal the spec allows is a "deviation" where users
should know of it; wrong values, a missing rename, a deleter run twice or
never, a leak or a crash is a FAIL."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

import dlbridge

from . import capsules
from .capsules import IS_COPIED, READ_ONLY, Probe
from .frameworks import Framework, Unsupported

PASS, FAIL, DEVIATION, NA = "pass", "FAIL", "deviation", "n/a"


@dataclass
class Outcome:
    status: str
    detail: str = ""


@dataclass
class Check:
    role: str
    ident: str
    title: str
    run: Callable[[Framework], Outcome]

    @property
    def key(self) -> str:
        return f"{self.role}.{self.ident}"


CHECKS: list = []


def check(role: str, ident: str, title: str):
    def register(fn):
        CHECKS.append(Check(role, ident, title, fn))
        return fn
    return register


# ---- helpers ---------------------------------------------------------------------------------------------

SAMPLE = np.arange(12, dtype=np.float32).reshape(3, 4)
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "bfloat16",
          "float32", "float64", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "int4", "float4_e2m1fn"]
#: Sub-byte types: one element per byte in NumPy, so IS_SUBBYTE_TYPE_PADDED in DLPack.
SUBBYTE = ("int4", "float4_e2m1fn")


def sample(name: str, shape=(3, 4)) -> np.ndarray:
    import ml_dtypes
    n = int(np.prod(shape))
    dtype = np.dtype(getattr(ml_dtypes, name, None) or name)
    if name == "bool":
        values = np.arange(n) % 3 == 0
    elif name.startswith("uint"):
        values = np.arange(n) * 7 % 250
    elif name == "int4":
        values = np.arange(n) % 16 - 8
    elif name == "float4_e2m1fn":
        values = np.resize([0, 0.5, -1, 1.5, 2, -3, 4, 6], n)
    elif name.startswith(("int", "float8")):
        values = np.arange(n) % 20 - 9
    elif name.startswith("complex"):
        values = np.arange(n) - 4.5 + 1j * np.arange(n)
    else:
        values = (np.arange(n) - 4.5) / 4
    return np.asarray(values).astype(dtype).reshape(shape)


def same(got, want: np.ndarray) -> bool:
    """Same shape, element type and bytes (in row-major order)."""
    got = np.asarray(got)
    return got.shape == want.shape and got.dtype == want.dtype and (
        np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes())


def versioned_capsule(x):
    """x.__dlpack__(max_version=(1, 3)), or without keywords for producers that take none."""
    try:
        return x.__dlpack__(max_version=(1, 3))
    except TypeError:
        return x.__dlpack__()


def through_dlbridge(x) -> np.ndarray:
    """`x`'s values as dlbridge imports them (every field validated)."""
    t = dlbridge.from_dlpack(x)
    if t.device != "cpu":
        t = t.to_device("cpu")
    if t.dtype in SUBBYTE and not t.is_padded:
        t = t.repack(True)  # packed (DLPack's default for sub-byte types): one element per byte, as NumPy holds them
    return np.array(t, copy=True)


class Refused(Exception):
    """The producer would not export (its exception, and whether it was the spec's BufferError)."""


def exported(x) -> np.ndarray:
    """`x`'s values through its own capsule, imported by dlbridge: Refused
    when the producer raises, the import's error (a malformed capsule) as is."""
    try:
        cap = versioned_capsule(x)
    except Exception as e:  # noqa: BLE001 - a producer's refusal, whatever it raises
        kind = "" if isinstance(e, BufferError) else ", not BufferError"
        raise Refused(f"({_error(e)}{kind})") from None
    return through_dlbridge(cap)


def summary(failed: list, refused: list, unsupported: list) -> Outcome:
    parts = []
    if failed:
        parts.append("wrong: " + ", ".join(failed))
    if refused:
        parts.append("refused: " + ", ".join(refused))
    if unsupported:
        parts.append("not made: " + ", ".join(unsupported))
    status = FAIL if failed else DEVIATION if refused else PASS
    return Outcome(status, "; ".join(parts))


def _error(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:120]}"


# ---- producer checks -------------------------------------------------------------------------------------

@check("producer", "device", "__dlpack_device__() is a tuple of two ints naming where the tensor is")
def _(fw):
    d = fw.make(SAMPLE).__dlpack_device__()
    ok = isinstance(d, tuple) and len(d) == 2 and all(isinstance(v, int) for v in d)
    if ok and tuple(map(int, d)) == fw.device:
        return Outcome(PASS)
    return Outcome(FAIL, f"expected {fw.device}, got {d!r}")


@check("producer", "unasked-is-legacy", "__dlpack__() without max_version gives a legacy \"dltensor\" capsule")
def _(fw):
    try:
        cap = fw.make(SAMPLE).__dlpack__()
    except BufferError as e:
        return Outcome(PASS, f"refused ({_error(e)}), which the spec allows")
    got = capsules.name(cap) if capsules.is_capsule(cap) else type(cap).__name__
    return Outcome(PASS) if got == "dltensor" else Outcome(FAIL, f"expected a \"dltensor\" capsule, got {got!r}")


@check("producer", "versioned", "max_version=(1, 3) gives a \"dltensor_versioned\" capsule of major version 1")
def _(fw):
    try:
        cap = fw.make(SAMPLE).__dlpack__(max_version=(1, 3))
    except TypeError as e:
        return Outcome(DEVIATION, f"no max_version keyword ({_error(e)})")
    fields = capsules.read(cap)
    if not fields.versioned:
        return Outcome(DEVIATION, "legacy capsule although max_version=(1, 3) was asked")
    if fields.version[0] != 1:
        return Outcome(FAIL, f"version {fields.version} for max_version=(1, 3)")
    return Outcome(PASS, f"version {fields.version[0]}.{fields.version[1]}")


@check("producer", "old-max-version", "max_version=(0, 8) gives a legacy capsule (or BufferError)")
def _(fw):
    try:
        cap = fw.make(SAMPLE).__dlpack__(max_version=(0, 8))
    except TypeError:
        return Outcome(NA, "no max_version keyword")
    except BufferError as e:
        return Outcome(PASS, f"refused ({_error(e)})")
    got = capsules.name(cap)
    return Outcome(PASS) if got == "dltensor" else Outcome(FAIL, f"expected \"dltensor\", got {got!r}")


def _exported_cases(cases: dict) -> Outcome:
    """Each case (name -> (make, want)): the object `make()` returns goes
    through its own capsule into dlbridge and must hold `want`'s values.
    `make` raising Unsupported (or ValueError) is "not made", the producer
    raising is "refused", anything dlbridge finds malformed or wrong FAILs."""
    failed, refused, unsupported = [], [], []
    for name, (make, want) in cases.items():
        try:
            x = make()
        except (Unsupported, ValueError) as e:
            unsupported.append(f"{name} ({_error(e)})" if str(e) else name)
            continue
        try:
            got = exported(x)
        except Refused as e:
            refused.append(f"{name} {e}")
            continue
        except Exception as e:  # noqa: BLE001 - a capsule dlbridge finds malformed
            failed.append(f"{name} ({_error(e)})")
            continue
        if not same(got, want):
            failed.append(name)
    return summary(failed, refused, unsupported)


@check("producer", "dtypes", "every dtype's values arrive intact through dlbridge (which validates the capsule)")
def _(fw):
    samples = {name: sample(name) for name in DTYPES}
    return _exported_cases({name: (lambda a=a: fw.make(a), a) for name, a in samples.items()})


@check("producer", "views", "strided views (transposed, stepped, reversed) arrive with the right values")
def _(fw):
    views = fw.views(SAMPLE)
    if not views:
        return Outcome(NA, "no strided views")
    return _exported_cases({name: (lambda x=x: x, want) for name, (x, want) in views.items()})


def _shapes():
    return {"0-d": np.array(3.5, np.float32), "size-0": np.zeros((0, 3), np.float32),
            "64-d": np.arange(2, dtype=np.float32).reshape((1,) * 63 + (2,))}


@check("producer", "shapes", "0-d, size-0 and 64-d tensors arrive intact")
def _(fw):
    return _exported_cases({name: (lambda a=a: fw.make(a), a) for name, a in _shapes().items()})


@check("producer", "copy", "copy=True sets IS_COPIED on new memory; copy=False shares the memory")
def _(fw):
    x = fw.make(SAMPLE)
    try:
        shared = capsules.read(x.__dlpack__(max_version=(1, 3), copy=False))
        copied = capsules.read(x.__dlpack__(max_version=(1, 3), copy=True))
    except TypeError as e:
        return Outcome(DEVIATION, f"no copy keyword ({_error(e)})")
    except BufferError as e:
        return Outcome(DEVIATION, f"copy=True or copy=False refused ({_error(e)})")
    if not copied.versioned:
        return Outcome(DEVIATION, "legacy capsules cannot say IS_COPIED")
    plain = capsules.read(x.__dlpack__(max_version=(1, 3)))
    problems = []
    if not copied.flags & IS_COPIED:
        problems.append("copy=True without IS_COPIED")
    if copied.data == plain.data:
        problems.append("copy=True shares the memory")
    if shared.data != plain.data:
        problems.append("copy=False made a copy")
    if shared.flags & IS_COPIED:
        problems.append("copy=False says IS_COPIED")
    return Outcome(FAIL, "; ".join(problems)) if problems else Outcome(PASS)


@check("producer", "dl-device", "dl_device naming the tensor's own device is accepted")
def _(fw):
    try:
        cap = fw.make(SAMPLE).__dlpack__(max_version=(1, 3), dl_device=fw.device)
    except TypeError as e:
        return Outcome(DEVIATION, f"no dl_device keyword ({_error(e)})")
    except BufferError as e:
        return Outcome(FAIL, f"refused its own device: {_error(e)}")
    got = capsules.read(cap).device
    return Outcome(PASS) if got == fw.device else Outcome(FAIL, f"memory on {got}, not {fw.device}")


@check("producer", "stream", "stream=None is accepted for CPU memory; a CUDA stream is not")
def _(fw):
    if fw.device != (1, 0):
        return Outcome(NA, "not CPU memory (see producer.stream-order)")
    x = fw.make(SAMPLE)
    try:
        x.__dlpack__(max_version=(1, 3), stream=None)
    except TypeError as e:
        return Outcome(DEVIATION, f"no stream keyword ({_error(e)})")
    except BufferError as e:
        return Outcome(FAIL, f"refused stream=None ({_error(e)})")
    try:
        x.__dlpack__(max_version=(1, 3), stream=1)
    except Exception:  # noqa: BLE001 - the refusal the spec asks for
        return Outcome(PASS)
    return Outcome(DEVIATION, "accepts stream=1 for CPU memory (only None is valid)")


@check("producer", "stream-order", "CUDA: work still queued on the producer's stream is done before dlbridge reads")
def _(fw):
    if fw.device[0] != 2:
        return Outcome(NA, "not CUDA memory")
    n = 1 << 24
    x, context, value = fw.pending(n)  # a tensor whose last writes are still queued on a side stream
    with context:
        t = dlbridge.from_dlpack(x)  # asks stream=1: the producer orders its work before the legacy stream
    got = np.asarray(t.to_device("cpu"))
    wrong = int(np.count_nonzero(got != value))
    return Outcome(PASS) if wrong == 0 else Outcome(FAIL, f"{wrong} of {n} elements read before the producer's work was done")


@check("producer", "byte-order", "data in the other byte order is refused or swapped, never exported as native")
def _(fw):
    try:
        x = fw.big_endian(SAMPLE)
    except Unsupported as e:
        return Outcome(NA, str(e))
    try:
        got = exported(x)
    except Refused as e:
        return Outcome(PASS, f"refused {e}")
    return Outcome(PASS, "swapped into a native copy") if same(got, SAMPLE) else Outcome(
        FAIL, "exported with its bytes in the other order, read as native")


@check("producer", "read-only", "a read-only array says READ_ONLY (or is refused)")
def _(fw):
    try:
        x = fw.readonly(SAMPLE)
    except Unsupported as e:
        return Outcome(NA, str(e))
    try:
        fields = capsules.read(versioned_capsule(x))
    except BufferError as e:
        return Outcome(PASS, f"refused ({_error(e)})")
    if not fields.versioned:
        return Outcome(DEVIATION, "legacy capsule: it cannot say READ_ONLY, so consumers may write")
    return Outcome(PASS) if fields.flags & READ_ONLY else Outcome(FAIL, "versioned capsule without READ_ONLY")


@check("producer", "consume-once", "a consumed capsule is freed once: dlbridge's deleter call, not the destructor")
def _(fw):
    x = fw.make(SAMPLE)
    cap = versioned_capsule(x)
    t = dlbridge.from_dlpack(cap)
    renamed = capsules.name(cap)
    try:
        dlbridge.from_dlpack(cap)
        return Outcome(FAIL, "dlbridge consumed the same capsule twice")
    except Exception:  # noqa: BLE001 - the expected refusal
        pass
    del t
    gc.collect()
    del cap  # a destructor that ignores the rename frees it again: a crash, reported as such
    gc.collect()
    return Outcome(PASS, f"renamed {renamed!r}")


def _growth(fw, make_and_drop, rounds: int) -> int:
    make_and_drop()
    gc.collect()
    before = fw.memory()
    for _ in range(rounds):
        make_and_drop()
    gc.collect()
    return fw.memory() - before


LEAK_LIMIT = 64 << 20  # of the 256 MiB that 1000 leaked 256 KiB tensors would hold


@check("producer", "unconsumed", "capsules never consumed are released by their destructor (1000 x 256 KiB)")
def _(fw):
    a = np.ones(1 << 16, np.float32)

    def once():
        versioned_capsule(fw.make(a))

    grew = _growth(fw, once, 1000)
    return Outcome(PASS) if grew < LEAK_LIMIT else Outcome(FAIL, f"memory grew {grew >> 20} MiB")


@check("producer", "round-trips", "1000 exports through dlbridge release everything (refcount, memory)")
def _(fw):
    a = np.ones(1 << 16, np.float32)
    x = fw.make(a)
    refs = sys.getrefcount(x)

    def once():
        dlbridge.from_dlpack(fw.make(a))
        dlbridge.from_dlpack(x)

    grew = _growth(fw, once, 1000)
    problems = []
    if sys.getrefcount(x) != refs:
        problems.append(f"refcount {refs} -> {sys.getrefcount(x)}")
    if grew >= LEAK_LIMIT:
        problems.append(f"memory grew {grew >> 20} MiB")
    return Outcome(FAIL, "; ".join(problems)) if problems else Outcome(PASS)


@check("producer", "exchange-api", "a published __dlpack_c_exchange_api__ has the 1.x layout and gives the same tensor")
def _(fw):
    import ctypes
    x = fw.make(SAMPLE)
    api = getattr(type(x), "__dlpack_c_exchange_api__", None)
    if api is None:
        return Outcome(NA, "no exchange API published")
    if not capsules.is_capsule(api) or capsules.name(api) != "dlpack_exchange_api":
        return Outcome(FAIL, f"not a \"dlpack_exchange_api\" capsule: {api!r}")
    address = capsules.pointer(api, "dlpack_exchange_api")
    table = (ctypes.c_void_p * 7).from_address(address)
    major = ctypes.c_uint32.from_address(address).value
    if major != 1:
        return Outcome(FAIL, f"table of major version {major}")
    if not all(table[2:7]):
        return Outcome(FAIL, "a NULL function in the table")
    got = through_dlbridge(x)
    return Outcome(PASS) if same(got, SAMPLE) else Outcome(FAIL, "wrong values through the table")


# ---- consumer checks -------------------------------------------------------------------------------------

def _imported(fw, p: Probe):
    """`fw.consume(p)` and the names of the capsules `p` handed out, read
    once the consumer returned (or raised): (result or exception, names).
    The capsules themselves are not kept: one left unconsumed is released
    by its destructor at once (counted like any deleter call)."""
    handed = []
    original = Probe.capsule

    def keep(versioned):
        cap = original(p, versioned)
        handed.append(cap)
        return cap

    p.capsule = keep
    try:
        result = fw.consume(p)
    except Exception as e:  # noqa: BLE001 - the caller decides what a refusal means
        result = e
    finally:
        del p.capsule
    names = [capsules.name(c) for c in handed]
    handed.clear()
    chained = result if isinstance(result, BaseException) else None
    while chained is not None:  # their frames hold the capsule
        chained.__traceback__ = None
        chained = chained.__context__ or chained.__cause__
    return result, names


def consumer(ident: str, title: str):
    def register(fn):
        def run(fw):
            if fw.consume is None:
                return Outcome(NA, "no consumer side")
            if fw.device != (1, 0) and ident != "dlbridge-exports":
                return Outcome(NA, "the probes are CPU memory")
            return fn(fw)
        CHECKS.append(Check("consumer", ident, title, run))
        return fn
    return register


@consumer("asks", "asks for max_version=(1, x) and passes no stream for CPU memory")
def _(fw):
    p = Probe(SAMPLE)
    y = fw.consume(p)
    del y
    kw = p.calls[0] if p.calls else {}
    detail = f"passed {kw}"
    if kw.get("stream") is not None:
        return Outcome(FAIL, f"stream={kw['stream']!r} for CPU memory (only None is valid); {detail}")
    mv = kw.get("max_version")
    if mv is None or tuple(mv)[0] != 1:
        return Outcome(DEVIATION, f"asks for legacy capsules; {detail}")
    return Outcome(PASS, detail)


def _import_check(fw, p: Probe, want: np.ndarray) -> Outcome:
    y, names = _imported(fw, p)
    if isinstance(y, BaseException):
        return Outcome(DEVIATION, f"refused ({_error(y)})")
    problems = []
    try:
        values = fw.to_numpy(y)
    except Exception as e:  # noqa: BLE001 - imported, but not readable back here
        return Outcome(NA, f"imported, not readable back ({_error(e)})")
    if not same(values, want):
        problems.append("wrong values")
    del values
    if names and not names[-1].startswith("used_"):
        problems.append(f"capsule not renamed ({names[-1]!r})")
    del y  # (a consumer that copied may have released the capsule already)
    gc.collect()
    after = p.delete_counts()
    if after[-1:] != [1]:
        problems.append(f"deleter called {after[-1] if after else 0} time(s) once the array was gone")
    return Outcome(FAIL, "; ".join(problems)) if problems else Outcome(PASS)


@consumer("versioned", "imports a versioned capsule: values, renamed at once, deleter called once")
def _(fw):
    return _import_check(fw, Probe(SAMPLE, versioned=True), SAMPLE)


@consumer("legacy", "imports a legacy capsule: values, renamed at once, deleter called once")
def _(fw):
    return _import_check(fw, Probe(SAMPLE, versioned=False), SAMPLE)


@consumer("fallback", "retries __dlpack__() without keywords when the producer takes none")
def _(fw):
    outcome = _import_check(fw, Probe(SAMPLE, versioned=False, keywords=False), SAMPLE)
    return Outcome(DEVIATION, "no retry without keywords: " + outcome.detail) if outcome.status == DEVIATION else outcome


@consumer("byte-offset", "honours byte_offset")
def _(fw):
    return _import_check(fw, Probe(SAMPLE, byte_offset=64), SAMPLE)


@consumer("null-strides", "reads NULL strides as row-major")
def _(fw):
    return _import_check(fw, Probe(SAMPLE, null_strides=True), SAMPLE)


def _cases(fw, cases: dict) -> Outcome:
    failed, refused, unreadable = [], [], []
    for name, (probe, want) in cases.items():
        outcome = _import_check(fw, probe, want)
        if outcome.status == FAIL:
            failed.append(f"{name} ({outcome.detail})")
        elif outcome.status == DEVIATION:
            refused.append(f"{name} {outcome.detail.removeprefix('refused ')}")
        elif outcome.status == NA:
            unreadable.append(name)
    result = summary(failed, refused, [])
    if unreadable:
        result.detail = "; ".join(filter(None, [result.detail, "not readable back here: " + ", ".join(unreadable)]))
    return result


@consumer("strides", "negative, zero and size-1 strides read right (or are refused)")
def _(fw):
    row = np.arange(4, dtype=np.float32)
    return _cases(fw, {
        "negative": (Probe(SAMPLE[::-1, ::-1], strides=(-4, -1)), SAMPLE[::-1, ::-1]),
        "zero": (Probe(np.broadcast_to(row, (3, 4)), strides=(0, 1)), np.broadcast_to(row, (3, 4))),
        "size-1 with an odd stride": (Probe(SAMPLE.reshape(3, 1, 4), strides=(4, 99, 1)), SAMPLE.reshape(3, 1, 4)),
    })


@consumer("shapes", "0-d, size-0 (data NULL) and 64-d")
def _(fw):
    shapes = _shapes()
    return _cases(fw, {
        "0-d": (Probe(shapes["0-d"]), shapes["0-d"]),
        "size-0": (Probe(shapes["size-0"], null_data=True), shapes["size-0"]),
        "64-d": (Probe(shapes["64-d"]), shapes["64-d"]),
    })


@consumer("dtypes", "every dtype's values arrive intact (or are refused)")
def _(fw):
    cases = {}
    for name in DTYPES:
        a = sample(name)
        flags = capsules.IS_SUBBYTE_TYPE_PADDED if name in SUBBYTE else 0
        cases[name] = (Probe(a, flags=flags), a)
    return _cases(fw, cases)


@consumer("used-capsule", "a capsule already consumed is refused, never read or released again")
def _(fw):
    p = Probe(SAMPLE)
    held = [p.capsule(True)]
    capsules.consume(held[0])  # as a first consumer would: renamed and released

    class Consumed:
        def __dlpack__(self, **kwargs):
            return held[0]

        def __dlpack_device__(self):
            return (1, 0)

    y, _ = _imported(fw, Consumed())
    held.clear()
    gc.collect()
    if not isinstance(y, BaseException):
        del y
        return Outcome(FAIL, "imported a capsule already consumed")
    counts = p.delete_counts()
    return Outcome(PASS) if counts == [1] else Outcome(FAIL, f"released {counts[0]} times in all")


@consumer("read-only", "a READ_ONLY capsule does not become a writable view")
def _(fw):
    p = Probe(SAMPLE, flags=READ_ONLY)
    try:
        y = fw.consume(p)
    except Exception as e:  # noqa: BLE001
        return Outcome(PASS, f"refused ({_error(e)})")
    values = fw.to_numpy(y)
    shares = np.asarray(values).__array_interface__["data"][0] == p.data_address
    if fw.writable(y) and shares:
        return Outcome(FAIL, "a writable view of read-only memory")
    return Outcome(PASS, "copied" if not shares else "read-only view")


@consumer("major-version", "refuses a capsule of major version 2 and never reads it")
def _(fw):
    p = Probe(SAMPLE, versioned=True, version=(2, 0))
    y, _ = _imported(fw, p)
    if not isinstance(y, BaseException):
        del y
        return Outcome(FAIL, "imported a capsule of major version 2")
    # Released once, by the consumer's deleter call or (left unconsumed) by
    # the capsule's destructor: both are safe.
    del y
    gc.collect()
    counts = p.delete_counts()
    if counts[-1:] != [1]:
        return Outcome(FAIL, f"released {counts[-1] if counts else 0} times")
    return Outcome(PASS)


@consumer("alignment", "misaligned data (float64 at an address 4 mod 8) is read right, copied or refused")
def _(fw):
    a = SAMPLE.astype(np.float64)
    return _cases(fw, {"float64 at 4 mod 8": (Probe(a, misalign=4), a)})


@consumer("dlbridge-exports", "imports dlbridge's own tensors: values, each export released once")
def _(fw):
    base = dlbridge.live_tensor_count()
    t = dlbridge.asarray(SAMPLE.copy())
    if fw.device != (1, 0):
        t = t.to_device(fw.device)
    try:
        y = fw.consume(t)
    except Exception as e:  # noqa: BLE001
        return Outcome(DEVIATION, f"refused ({_error(e)})")
    ok = same(fw.to_numpy(y), SAMPLE)
    del y, t
    gc.collect()
    left = dlbridge.live_tensor_count() - base
    problems = ([] if ok else ["wrong values"]) + ([f"{left} dlbridge tensor(s) never released"] if left else [])
    return Outcome(FAIL, "; ".join(problems)) if problems else Outcome(PASS)


@consumer("memory", "1000 imports release every capsule exactly once")
def _(fw):
    p = Probe(SAMPLE)
    for _ in range(1000):
        try:
            y = fw.consume(p)
        except Exception as e:  # noqa: BLE001
            return Outcome(NA, f"refused ({_error(e)})")
        del y
    gc.collect()
    counts = p.delete_counts()
    wrong = sum(1 for c in counts if c != 1)
    return Outcome(FAIL, f"{wrong} of {len(counts)} capsules not released exactly once") if wrong else Outcome(PASS)
