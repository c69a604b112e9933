"""python -m dlbridge.check [FRAMEWORK ...] [--only CHECK ...] [--markdown | --json] [--timeout S]"""

import argparse
import json
import sys
from dataclasses import asdict

from . import _worker, markdown, run, table


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m dlbridge.check",
        description="Check DLPack producers and consumers against the spec. Frameworks: numpy, torch, jax, "
                    "tensorflow, tvm_ffi, dlbridge, or module:constructor[:from_dlpack] for your own type "
                    "(constructor(numpy_array) -> your object). Default: every installed one.")
    parser.add_argument("frameworks", nargs="*")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="checks to run (e.g. producer.copy, or consumer)")
    parser.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a check may take (default 120)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    args = parser.parse_args(argv)
    if args.list:
        from .checks import CHECKS
        for c in CHECKS:
            print(f"{c.key:28} {c.title}")
        return 0

    def progress(framework, k, n, check):
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K[{framework}] {k}/{n} {check}")
            sys.stderr.flush()

    try:
        results = run(args.frameworks or None, args.only, args.timeout, progress)
    except ValueError as e:
        parser.error(str(e))
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps([asdict(r) | {"repro": r.repro} for r in results], indent=1))
    elif args.markdown:
        print(markdown(results))
    else:
        print(table(results))
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
