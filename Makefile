# dlbridge: the two commands a fresh machine needs are `make demo` (main
# job) and `make test` (every test). See README.md.

CARGO ?= cargo

.PHONY: build demo test test-rust lint check-header test-c clean
build:
	$(CARGO) build --release

demo: build
	$(MAKE) -C examples run

test: lint test-rust check-header test-c
	@echo "== all test suites passed"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

test-rust:
	$(CARGO) test

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
