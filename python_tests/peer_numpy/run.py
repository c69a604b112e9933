"""Runs NumPy's installed DLPack and array-interface tests with dlbridge in
the exchange path (see conftest.py for how).

    PYTHONPATH=python .venv/bin/python python_tests/peer_numpy/run.py [--mode struct|interface|both] [pytest args]

--mode both (the default) runs every selected test with dlbridge's Tensor
handed to NumPy (``__array_struct__``), then the array-interface tests again
with only dlbridge's ``__array_interface__`` dict handed over. Extra
arguments go to pytest (e.g. -x, -k dtype, -rxXs). Exit status: 0 when every
run passed.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def _plugin():
    spec = importlib.util.spec_from_file_location("dlbridge_peer_numpy", HERE / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(mode: str, extra: list[str]) -> int:
    os.environ["DLBRIDGE_PEER_NUMPY"] = mode
    sys.dont_write_bytecode = True  # nothing written into site-packages
    import pytest

    plugin = _plugin()
    selection = plugin.ARRAY_INTERFACE if mode == "interface" else plugin.DLPACK + plugin.ARRAY_INTERFACE
    args = [
        "--noconftest",  # NumPy's own conftest needs hypothesis; this plugin registers its markers
        "-p", "no:cacheprovider",
        f"--rootdir={plugin.TESTS}",
        "-o", "addopts=",
        "-W", "error::pytest.PytestUnknownMarkWarning",
        # NumPy's own parametrize(generator) style, deprecated by pytest 9: not ours to fix.
        "-W", "ignore:Passing a non-Collection iterable to parametrize:pytest.PytestRemovedIn10Warning",
        "-q", "-rfEX",
        *[str(plugin.TESTS / s) for s in selection],
        *extra,
    ]
    return pytest.main(args, plugins=[plugin])


def main(argv: list[str]) -> int:
    mode = "both"
    if argv[:1] == ["--mode"] and len(argv) > 1:
        mode, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--mode="):
        mode, argv = argv[0].split("=", 1)[1], argv[1:]
    if mode in ("struct", "interface"):
        return int(_run(mode, argv))
    if mode != "both":
        print(f"--mode must be struct, interface or both, not {mode!r}", file=sys.stderr)
        return 2
    status = 0
    for m in ("struct", "interface"):
        print(f"===== dlbridge peer run, mode {m} =====", flush=True)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        rc = subprocess.call([sys.executable, __file__, "--mode", m, *argv], env=env)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
