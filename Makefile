# dlbridge: the two commands a fresh machine needs are `make demo` (main
# job) and `make test` (every test). See README.md.

CARGO ?= cargo
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: conformance conformance-check test-python-versions test-python-asan check-soname install test-install-c test-cpp test-docs fuzz-smoke test-asan catalogue catalogue-update build venv demo test-gpu bench bench-copies test test-all test-rust lint check-header test-c test-python test-install clean
# The crate version, and the ABI version in the soname (0.Y while the major
# version is 0, as build.rs sets it).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR := $(word 1,$(subst ., ,$(VERSION)))
MINOR := $(word 2,$(subst ., ,$(VERSION)))
ABI := $(if $(filter 0,$(MAJOR)),0.$(MINOR),$(MAJOR))
# What the static library needs from the system (rustc --print native-static-libs).
NATIVE_LIBS := -ldl -lgcc_s -lutil -lrt -lpthread -lm -lc

# build.rs leaves the soname link (libdlbridge.so.$(ABI)) beside the library.
build:
	$(CARGO) build --release

# make install [PREFIX=/usr/local] [DESTDIR=]: the shared library under its
# full version with the soname and development links, the static library,
# the header, a pkg-config file and a CMake package (dlbridge::dlbridge).
PREFIX ?= /usr/local
LIBDIR := $(DESTDIR)$(PREFIX)/lib
install: build
	install -d $(LIBDIR)/pkgconfig $(LIBDIR)/cmake/dlbridge $(DESTDIR)$(PREFIX)/include
	install -m 755 target/release/libdlbridge.so $(LIBDIR)/libdlbridge.so.$(VERSION)
	ln -sf libdlbridge.so.$(VERSION) $(LIBDIR)/libdlbridge.so.$(ABI)
	ln -sf libdlbridge.so.$(ABI) $(LIBDIR)/libdlbridge.so
	install -m 644 target/release/libdlbridge.a $(LIBDIR)/libdlbridge.a
	install -m 644 include/dlbridge.h $(DESTDIR)$(PREFIX)/include/dlbridge.h
	for f in dlbridge.pc:pkgconfig/dlbridge.pc dlbridgeConfig.cmake:cmake/dlbridge/dlbridgeConfig.cmake \
	         dlbridgeConfigVersion.cmake:cmake/dlbridge/dlbridgeConfigVersion.cmake; do \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@ABI@|$(ABI)|g' \
	      -e 's|@MAJOR@|$(MAJOR)|g' -e 's|@MINOR@|$(MINOR)|g' -e 's|@NATIVE_LIBS@|$(NATIVE_LIBS)|g' \
	      -e 's|@NATIVE_LIBS_CMAKE@|$(subst $() ,;,$(patsubst -l%,%,$(NATIVE_LIBS)))|g' \
	      packaging/$${f%%:*}.in > $(LIBDIR)/$${f#*:}; \
	done
	@echo "installed dlbridge $(VERSION) (soname libdlbridge.so.$(ABI)) under $(DESTDIR)$(PREFIX)"

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

test-all: lint test-rust test-asan check-header check-soname test-c test-python test-python-versions test-python-asan catalogue conformance-check test-install test-install-c test-cpp test-docs fuzz-smoke

# Every Python suite, then NumPy's own installed DLPack and array-interface
# tests with dlbridge routed into the exchange (python_tests/peer_numpy).
test-python: build venv
	PYTHONPATH=python $(VPY) -m pytest -q python_tests
	PYTHONPATH=python $(VPY) python_tests/peer_numpy/run.py

# The Python suite on the other supported interpreters (CPython 3.12, 3.13
# from pyenv), each in its own venv with NumPy and ml_dtypes (the framework
# tests skip, saying why). A missing interpreter is reported loudly.
PY_VERSIONS := 3.12 3.13
test-python-versions: build
	@for v in $(PY_VERSIONS); do \
	  py=$$(ls -d $$(pyenv root 2>/dev/null)/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -1); \
	  if [ -z "$$py" ]; then echo "!!! CPython $$v not found (pyenv): its Python tests are SKIPPED"; continue; fi; \
	  venv=.venv-$$v; test -x $$venv/bin/python || $$py -m venv $$venv || exit 1; \
	  $$venv/bin/python -m pip install --quiet --disable-pip-version-check -r python_tests/requirements-min.txt \
	    || exit 1; \
	  echo "== Python tests on $$($$venv/bin/python -V) (NumPy + ml_dtypes)"; \
	  PYTHONPATH=python $$venv/bin/python -m pytest -q -p no:cacheprovider python_tests || exit 1; \
	done

# The adversarial and lifetime suites again, against an AddressSanitizer
# build of the library (the interpreter is not instrumented: ASan's runtime
# is preloaded, with libstdc++ so that its __cxa_throw interceptor finds the
# real one for jaxlib and TensorFlow; leak checking off). Their isolated
# subprocesses inherit it.
ASAN_LIB := target/asan/x86_64-unknown-linux-gnu/debug/libdlbridge.so
test-python-asan: venv
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" $(CARGO) build --quiet --lib \
	  --target x86_64-unknown-linux-gnu --target-dir target/asan
	@runtime=$$($(CC) -print-file-name=libasan.so); test -f "$$runtime" || { echo "no libasan.so from $(CC)"; exit 1; }; \
	echo "== Python adversarial + lifetime suites, library under AddressSanitizer ($$runtime)"; \
	LD_PRELOAD="$$runtime $$($(CC) -print-file-name=libstdc++.so.6)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 DLBRIDGE_LIBRARY=$(abspath $(ASAN_LIB)) \
	  PYTHONPATH=python $(VPY) -m pytest -q -p no:cacheprovider python_tests/test_adversarial.py python_tests/test_lifetimes.py

# On a GPU machine (no cargo there: build here, carry target/release/libdlbridge.so):
# the CUDA tests and the transfer benchmark, with the machine's own frameworks.
GPU_PYTHON ?= python3
test-gpu:
	$(MAKE) -C c_tests gpu
	PYTHONPATH=python $(GPU_PYTHON) -m pytest -q -rs -s -p no:cacheprovider python_tests/test_cuda.py
	PYTHONPATH=python $(GPU_PYTHON) -m pytest -q -rs -p no:cacheprovider python_tests/test_check.py -k stream_order
	PYTHONPATH=python $(GPU_PYTHON) -m dlbridge.check cupy; [ $$? -le 1 ]
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

# The DLPack conformance report of the pinned frameworks (dlbridge.check):
# docs/conformance.md must match a fresh run; `make conformance` rewrites it.
# (The checker exits 1 when a framework fails a check: that is the report.)
CONFORMANCE := numpy torch jax tensorflow tvm_ffi dlbridge
conformance: build venv
	PYTHONPATH=python $(VPY) -m dlbridge.check $(CONFORMANCE) --markdown > docs/conformance.md; [ $$? -le 1 ]
conformance-check: build venv
	mkdir -p build
	PYTHONPATH=python $(VPY) -m dlbridge.check $(CONFORMANCE) --markdown > build/conformance.md; [ $$? -le 1 ]
	diff -u docs/conformance.md build/conformance.md && echo "docs/conformance.md matches the checker's report"

# pip wheel . -> a fresh venv, used from outside the repository.
test-install: venv
	PYTHON=$(abspath $(VPY)) bash .ci/test_install.sh

# make install into build/prefix; C consumers built with pkg-config and CMake.
test-install-c: build
	bash .ci/test_install_c.sh

# C++ exchange with libtorch (headers and libraries of the venv's PyTorch wheel).
test-cpp: build venv
	VPY=$(VPY) bash .ci/test_torch_cpp.sh

# The API docs build without a warning.
test-docs:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet && echo "cargo doc: no warnings"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

test-rust:
	$(CARGO) test

# Rust tests (unit + thread stress) under AddressSanitizer (stable toolchain,
# -Z flag unlocked with RUSTC_BOOTSTRAP), in their own target directory.
test-asan:
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp DLB_STRESS_CYCLES=20000 \
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

# A plain `cargo build --release` (what `make build` runs) must leave the
# soname beside the library: programs linked with -ldlbridge ask for it.
check-soname: build
	@soname=$$(readelf -d target/release/libdlbridge.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'); \
	test "$$soname" = libdlbridge.so.$(ABI) || { echo "soname is '$$soname', expected libdlbridge.so.$(ABI)"; exit 1; }; \
	test "$$(readlink -f target/release/$$soname)" = "$$(readlink -f target/release/libdlbridge.so)" || \
	  { echo "target/release/$$soname does not lead to the library"; exit 1; }; \
	echo "soname $$soname: linked beside target/release/libdlbridge.so"

test-c: build
	$(MAKE) -C c_tests all

clean:
	$(CARGO) clean
	$(MAKE) -C c_tests clean
	$(MAKE) -C examples clean
