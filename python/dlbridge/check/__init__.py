"""``dlbridge check``: a DLPack conformance checker for producers and
consumers. ``python -m dlbridge.check [FRAMEWORK ...]`` runs the battery
(``checks.CHECKS``) against each installed framework (or the ones named;
``module:constructor[:from_dlpack]`` for your own type) and prints, for
every check, its result and, for a failure, what was expected and what
happened, with a one-line reproducer. Each framework's battery runs in a
child process with a time limit per check: a check that crashes or hangs
is reported as such and the rest go on in a fresh child.

``run(frameworks)`` does the same from Python and returns the results;
``run_in_process(framework)`` runs a battery here (no crash isolation)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

__all__ = ["Result", "run", "run_in_process", "table", "markdown"]


@dataclass
class Result:
    framework: str
    version: str
    check: str
    title: str
    status: str
    detail: str

    @property
    def repro(self) -> str:
        return f"python -m dlbridge.check {self.framework} --only {self.check}"


def _battery(only: Optional[Iterable[str]]):
    from .checks import CHECKS
    keys = set(only) if only else None
    return [c for c in CHECKS if keys is None or c.key in keys or c.role in keys]


def run_in_process(framework, only: Optional[Iterable[str]] = None,
                   emit: Optional[Callable[[dict], None]] = None) -> list:
    """Runs the battery for one framework (a name, or a `frameworks.Framework`) in this process."""
    from .checks import FAIL, NA, Outcome
    from .frameworks import Framework, Unsupported, resolve
    fw = framework if isinstance(framework, Framework) else resolve(framework)
    try:
        version = fw.version()
    except Exception as e:  # noqa: BLE001 - not importable
        version = f"not importable: {type(e).__name__}"
    results = []
    for c in _battery(only):
        if emit:
            emit({"start": c.key})
        try:
            outcome = c.run(fw)
        except Unsupported as e:
            outcome = Outcome(NA, str(e))
        except Exception as e:  # noqa: BLE001 - an unexpected error is a failure of the check's subject
            outcome = Outcome(FAIL, f"raised {type(e).__name__}: {str(e)[:200]}")
        r = Result(fw.name, version, c.key, c.title, outcome.status, outcome.detail)
        results.append(r)
        if emit:
            emit({"result": asdict(r)})
    return results


def _worker(framework: str, keys: list) -> None:
    def emit(message):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    run_in_process(framework, keys, emit)


def run(frameworks: Optional[Iterable[str]] = None, only: Optional[Iterable[str]] = None, timeout: float = 120.0,
        progress: Optional[Callable[[str, int, int, str], None]] = None) -> list:
    """Runs the battery for each framework (all installed ones by default),
    each in a child process; a check that crashes or runs past `timeout`
    seconds is a FAIL saying so, and the rest go on in a new child."""
    import importlib.util

    from .frameworks import BUILT_IN, installed
    names = list(frameworks) if frameworks else installed()
    for name in names:  # named wrongly: said at once, not once per check by a failing child
        module = name.split(":")[0]
        if name not in BUILT_IN and (":" not in name or importlib.util.find_spec(module) is None):
            raise ValueError(f"unknown framework {name!r}: one of {', '.join(BUILT_IN)}, "
                             "or module:constructor[:from_dlpack] with an importable module")
    from .checks import CHECKS
    known = {c.key for c in CHECKS} | {c.role for c in CHECKS}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}: see `python -m dlbridge.check --list`")
    results = []
    for name in names:
        keys = [c.key for c in _battery(only)]
        done: dict = {}
        version = "?"
        while len(done) < len(keys):
            pending = [k for k in keys if k not in done]
            child = subprocess.Popen([sys.executable, "-m", "dlbridge.check", "--worker", name, *pending],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONFAULTHANDLER="0"))
            current, started = None, time.monotonic()
            while True:
                ready, _, _ = select.select([child.stdout], [], [], 1.0)
                if ready:
                    line = child.stdout.readline()
                    if not line:
                        break
                    message = json.loads(line)
                    if "start" in message:
                        current, started = message["start"], time.monotonic()
                        if progress:
                            progress(name, len(done) + 1, len(keys), current)
                    else:
                        r = Result(**message["result"])
                        version = r.version
                        done[r.check] = r
                        current = None
                elif current and time.monotonic() - started > timeout:
                    child.kill()
                    break
            child.wait()
            stderr = child.stderr.read()
            if len(done) < len(keys):
                victim = current or next(k for k in keys if k not in done)
                how = (f"ran past {timeout:.0f} s" if child.returncode == -9 and current else
                       f"crashed the process (exit status {child.returncode})")
                tail = stderr.strip().splitlines()[-1][:160] if stderr.strip() else ""
                title = next((c.title for c in _battery([victim])), victim)
                done[victim] = Result(name, version, victim, title, "FAIL", how + (f": {tail}" if tail else ""))
        results.extend(done[k] for k in keys)
    return results


def _rows(results: list) -> list:
    return [(r.framework, r.check, r.status, r.detail) for r in results]


def table(results: list) -> str:
    """A plain-text table: framework, check, result, detail; reproducers under failures."""
    widths = [max([len(h)] + [len(row[i]) for row in _rows(results)]) for i, h in
              enumerate(("framework", "check", "result", "detail"))]
    widths[3] = min(widths[3], 100)
    lines = []
    header = ("framework", "check", "result", "detail")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for r in results:
        detail = r.detail if len(r.detail) <= 100 else r.detail[:97] + "..."
        lines.append("  ".join(v.ljust(w) for v, w in zip((r.framework, r.check, r.status, detail), widths)).rstrip())
        if r.status == "FAIL":
            lines.append(" " * (widths[0] + 2) + "reproduce: " + r.repro)
    return "\n".join(lines)


LEGEND = """\
Results: **pass**; **FAIL**, a rule of the DLPack spec broken in a way that
corrupts, leaks, crashes or lets a consumer write read-only memory (each
with a one-line reproducer: `python -m dlbridge.check FRAMEWORK --only CHECK`);
**deviation**, something the spec allows or tolerates but users should know
(a refusal, a legacy-only path, an exception other than BufferError); **n/a**,
not applicable (the framework lacks the feature). Producer checks take the
framework's CPU tensors through dlbridge, which validates every field;
consumer checks hand the framework's `from_dlpack` hand-made capsules whose
every release is counted, and dlbridge's own tensors.
"""


def markdown(results: list) -> str:
    """The report as Markdown: a legend, then one table per framework."""
    out = ["# DLPack conformance report", "", "Made by `python -m dlbridge.check --markdown`. " + LEGEND]
    by_framework: dict = {}
    for r in results:
        by_framework.setdefault((r.framework, r.version), []).append(r)
    for (name, version), rs in by_framework.items():
        counts = {s: sum(1 for r in rs if r.status == s) for s in ("pass", "FAIL", "deviation", "n/a")}
        out.append(f"## {name} {version}\n")
        out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + "\n")
        out.append("| check | result | detail |")
        out.append("|---|---|---|")
        for r in rs:
            detail = r.detail.replace("|", "\\|")
            status = f"**{r.status}**" if r.status == "FAIL" else r.status
            out.append(f"| `{r.check}` | {status} | {detail} |")
        out.append("")
    return "\n".join(out)
