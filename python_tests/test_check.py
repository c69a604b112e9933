"""dlbridge.check, the DLPack conformance checker: every check passes on
dlbridge itself and on a correct toy, and fails on a toy broken the way
the check is about (_check_toys.py), so no check can only pass. The
child-process runner reports a crash (a real double free) and a hang, and
the rest of the battery goes on."""

import json
import os
import subprocess
import sys

import pytest

from dlbridge.check import checks, run, run_in_process

sys.path.insert(0, os.path.dirname(__file__))
import _check_toys as toys  # noqa: E402

# check -> the toy bug that must make it fail
PRODUCER_BUGS = {
    "producer.device": "device",
    "producer.unasked-is-legacy": "always-versioned",
    "producer.versioned": "major-2",
    "producer.old-max-version": "always-versioned",
    "producer.dtypes": "wrong-strides",
    "producer.views": "wrong-strides",
    "producer.shapes": "wrong-strides",
    "producer.copy": "none",  # probes ignore `copy`: the same memory, no IS_COPIED
    "producer.dl-device": "dl-device-refused",
    "producer.stream": "refuses-stream-none",
    "producer.byte-order": "none",  # the other order's bytes described as native
    "producer.read-only": "none",  # a read-only producer whose capsule has no READ_ONLY
    "producer.unconsumed": "leak",
    "producer.round-trips": "grows-refcount",
    "producer.exchange-api": "bad-exchange-api",
}
CONSUMER_BUGS = {
    "consumer.asks": "stream-0",
    "consumer.versioned": "no-rename",
    "consumer.legacy": "release-twice",
    "consumer.fallback": "never-release",
    "consumer.byte-offset": "ignore-byte-offset",
    "consumer.null-strides": "null-strides-as-zeros",
    "consumer.strides": "ignore-strides",
    "consumer.shapes": "0d-as-1d",
    "consumer.dtypes": "wrong-dtype",
    "consumer.read-only": "ignore-read-only",
    "consumer.used-capsule": "accept-used",
    "consumer.major-version": "accept-major-2",
    "consumer.alignment": "align-down",
    "consumer.dlbridge-exports": "never-release",
    "consumer.memory": "release-twice",
}
IN_CHILD = {"producer.consume-once": "double_free"}  # a real double free: only a child process survives it
ON_GPU = {"producer.stream-order"}  # CUDA memory: the toy and the check run on a GPU machine (make test-gpu)


def test_every_check_has_a_toy_that_fails_it():
    keys = {c.key for c in checks.CHECKS}
    assert keys == set(PRODUCER_BUGS) | set(CONSUMER_BUGS) | set(IN_CHILD) | ON_GPU


@pytest.fixture(scope="module")
def reference():
    return {r.check: r for r in run_in_process("dlbridge")}


@pytest.mark.parametrize("key", sorted(PRODUCER_BUGS))
def test_producer_check_passes_on_dlbridge_and_fails_on_its_toy(key, reference):
    assert reference[key].status == "pass", reference[key]
    (broken,) = run_in_process(toys.ToyProducer(PRODUCER_BUGS[key]), [key])
    assert broken.status == "FAIL", broken


@pytest.mark.parametrize("key", sorted(CONSUMER_BUGS))
def test_consumer_check_passes_on_a_correct_toy_and_fails_on_a_broken_one(key, reference):
    assert reference[key].status == "pass", reference[key]
    (good,) = run_in_process(toys.ToyConsumer("none"), [key])
    assert good.status == "pass", good
    (broken,) = run_in_process(toys.ToyConsumer(CONSUMER_BUGS[key]), [key])
    assert broken.status == "FAIL", broken


def _env():
    here = os.path.dirname(os.path.abspath(__file__))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))


def test_a_crash_is_reported_and_the_battery_goes_on(reference, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    results = run(["_check_toys:double_free"], only=["producer.device", "producer.consume-once", "producer.copy"])
    by = {r.check: r for r in results}
    assert reference["producer.consume-once"].status == "pass"
    assert by["producer.consume-once"].status == "FAIL" and "crashed" in by["producer.consume-once"].detail
    assert by["producer.device"].status == "pass" and by["producer.copy"].status == "FAIL"  # ran in a new child
    assert by["producer.consume-once"].repro.startswith("python -m dlbridge.check _check_toys:double_free --only")


def test_a_hang_is_cut_at_the_time_limit(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    (r,) = run(["_check_toys:hang"], only=["producer.device"], timeout=3)
    assert r.status == "FAIL" and "ran past 3 s" in r.detail


def test_the_command_line_prints_json_and_markdown():
    command = [sys.executable, "-m", "dlbridge.check", "dlbridge", "--only", "producer.device", "consumer.asks"]
    done = subprocess.run(command + ["--json"], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["check"] for r in results] == ["producer.device", "consumer.asks"]
    assert all(r["status"] == "pass" for r in results)
    done = subprocess.run(command + ["--markdown"], env=_env(), capture_output=True, text=True, timeout=120)
    assert "| `producer.device` | pass |" in done.stdout
    done = subprocess.run(command[:4] + ["_check_toys:double_free", "--only", "producer.copy"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "reproduce: python -m dlbridge.check" in done.stdout


def _gpu():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _gpu(), reason="no CUDA device and CuPy here; run `make test-gpu` on a GPU machine")
def test_stream_order_passes_on_cupy_and_fails_on_a_producer_that_ignores_the_stream():
    from dlbridge.check.frameworks import CuPy

    class IgnoresStream(CuPy):
        name = "toy-cupy[ignores-stream]"

        def pending(self, n):
            x, stream, value = super().pending(n)

            class Unordered:  # hands the memory over without ordering its stream's work
                def __dlpack__(self, **kwargs):
                    return x.__dlpack__(max_version=kwargs.get("max_version"), stream=-1)

                def __dlpack_device__(self):
                    return x.__dlpack_device__()

            return Unordered(), stream, value

    (good,) = run_in_process("cupy", ["producer.stream-order"])
    assert good.status == "pass", good
    (broken,) = run_in_process(IgnoresStream(), ["producer.stream-order"])
    assert broken.status == "FAIL", broken


def test_a_framework_named_wrongly_is_an_error_at_once():
    for args, words in ((["pytorch"], "unknown framework"), (["no_such_module_xyz:make"], "unknown framework"),
                        (["dlbridge", "--only", "producer.nothing"], "unknown check")):
        done = subprocess.run([sys.executable, "-m", "dlbridge.check", *args], env=_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "dlbridge.check", "--list"], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == len(checks.CHECKS)
