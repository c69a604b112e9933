# dlbridge: the two commands a fresh machine needs are `make demo` (main
# job) and `make test` (every test). See README.md.

CARGO ?= cargo
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: fuzz-smoke test-asan catalogue catalogue-update build venv demo test-gpu bench bench-copies test test-all test-rust lint check-header test-c test-python test-install clean
build:
	$(CARGO) build --release

# The real frameworks, pinned, in a local virtual environment.
$(VENV)/.installed: python_tests/requirements.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r python_tests/requirements.txt
	touch $@
venv: $(VENV)/.installed

demo: build venv
	$(MAKE) -C examples run PYTHON=$(abspath $(VPY))

# Every suite, then one closing line with the totals.
test:
	mkdir -p build
	set -o pipefail; $(MAKE) --no-print-directory test-all 2>&1 | tee build/test.log
	@$(PYTHON) .ci/tally.py build/test.log

test-all: lint test-rust test-asan check-header test-c test-python catalogue test-install fuzz-smoke

test-python: build venv
	PYTHONPATH=python $(VPY) -m pytest -q python_tests

# On a GPU machine (no cargo there: build here, carry target/release/libdlbridge.so):
# the CUDA tests and the transfer benchmark, with the machine's own frameworks.
GPU_PYTHON ?= python3
test-gpu:
	$(MAKE) -C c_tests gpu
	PYTHONPATH=python $(GPU_PYTHON) -m pytest -q -rs -p no:cacheprovider python_tests/test_cuda.py
	PYTHONPATH=python $(GPU_PYTHON) benches/gpu_transfers.py

# Every benchmark against its peers (tvm-ffi, torch, numpy, jax, ml_dtypes); writes BENCHMARKS.md.
bench: build venv
	$(VPY) -m pip install --quiet -r benches/requirements.txt
	VPY=$(VPY) bash benches/run_all.sh

bench-copies: build venv
	PYTHONPATH=python $(VPY) benches/copies.py

# The bad-input catalogue (C and Python) must match docs/bad-inputs.md;
# `make catalogue-update` rewrites it after a deliberate change.
catalogue: test-c venv
	PYTHONPATH=python $(VPY) python_tests/bad_inputs.py > build/catalogue_py.md
	bash .ci/catalogue.sh c_tests/build/catalogue_c.md build/catalogue_py.md > build/bad-inputs.md
	diff -u docs/bad-inputs.md build/bad-inputs.md && echo "docs/bad-inputs.md matches the catalogue"
catalogue-update: test-c venv
	PYTHONPATH=python $(VPY) python_tests/bad_inputs.py > build/catalogue_py.md
	bash .ci/catalogue.sh c_tests/build/catalogue_c.md build/catalogue_py.md > docs/bad-inputs.md

# pip install . into a fresh venv, used from outside the repository.
test-install: venv
	PYTHON=$(abspath $(VPY)) bash .ci/test_install.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

test-rust:
	$(CARGO) test

# Rust tests (unit + thread stress) under AddressSanitizer (stable toolchain,
# -Z flag unlocked with RUSTC_BOOTSTRAP), in their own target directory.
test-asan:
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=1 DLB_STRESS_CYCLES=20000 \
	  $(CARGO) test --quiet --target x86_64-unknown-linux-gnu --target-dir target/asan --lib --tests

# Each fuzz target for FUZZ_SECONDS (libFuzzer + ASan through cargo-fuzz,
# -Z flags unlocked with RUSTC_BOOTSTRAP), from the small corpora in fuzz/corpus.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := dlpack_import array_interface copy_differential
fuzz-smoke:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --quiet cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/corpus/$$t && cp corpus/$$t/* build/corpus/$$t/ 2>/dev/null; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t build/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -rss_limit_mb=2048 > build/$$t.log 2>&1 || { tail -40 build/$$t.log; exit 1; }; \
	  echo "fuzz $$t: $$(grep -o 'Done [0-9]* runs' build/$$t.log | tail -1) in $(FUZZ_SECONDS) s, no crash"; \
	done

# build.rs regenerates include/dlbridge.h; the committed copy must match.
check-header: build
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git diff --exit-code -- include/dlbridge.h && echo "include/dlbridge.h matches the sources"; \
	else echo "check-header skipped: not a git checkout"; fi

test-c: build
	$(MAKE) -C c_tests all

clean:
	$(CARGO) clean
	$(MAKE) -C c_tests clean
	$(MAKE) -C examples clean
