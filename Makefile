# firedrill: the two commands a new user needs are `make demo` and `make test`.

SHELL := /bin/bash
, := ,
.DEFAULT_GOAL := help

# Build output lives outside the clone, keyed by toolchain version, so a fresh
# clone on a machine that has built before starts warm.
FIREDRILL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/firedrill
RUST_VERSION := $(shell rustc --version 2>/dev/null | cut -d' ' -f2)
export FIREDRILL_CACHE
export CARGO_TARGET_DIR ?= $(FIREDRILL_CACHE)/cargo/rust-$(RUST_VERSION)

.PHONY: help demo demo-real test deps check unit e2e crds manifest image bench soak fuzz testbed-up testbed-down build

help:
	@echo "make demo    a local testbed cluster, the operator, the example game day twice (before and after a fix), the reports"
	@echo "make demo-real  the same story on real nodes (kubelet, containerd, kube-proxy; root): a third run cuts zone-a's power (PowerLoss)"
	@echo "make test    the whole test suite: format and lint checks, unit tests, end-to-end tests on the testbed"
	@echo "make bench   benchmarks that print numbers: probe scheduling jitter; the write probe's RSS at 10 writes/s (WRITE_MINUTES=10); firedrill against kubectl drain, a script and the API server's limit at 100/300/1000 nodes (SIZES=100:3000,... REPS=3 BENCH_ARGS='--baseline-reps 1 --baseline-cap 300')"
	@echo "make soak    20 seeded random faults across a series of drills (operator SIGKILLs, API server stops, etcd pauses; SEED=n ROUNDS=n OUTAGES=n) and print what was left behind"
	@echo "make fuzz    fuzz parsers, specs, the recording and the planner (FUZZ_SECONDS per target, default 60; needs nightly + cargo-fuzz)"
	@echo "make image   the operator image as an OCI archive in out/ (static musl binary, no container engine)"
	@echo "make crds    regenerate crds/ from the Rust types"
	@echo "make manifest  regenerate deploy/firedrill.yaml from the chart"
	@echo "make testbed-up / testbed-down    a testbed to play with (state in .testbed/)"

build:
	cargo build --workspace --all-targets

demo: build
	@examples/demo.sh

demo-real: build image
	@examples/demo-real.sh

test: deps check unit e2e

# Real tools the tests use, by package name.
deps:
	tests/deps.sh

check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test

e2e:
	tests/run-e2e.sh

bench:
	cargo run --release -q -p firedrill --example probe_jitter
	tests/bench/write-canary.sh $(or $(WRITE_MINUTES),10)
	tests/bench/scale.py --sizes $(or $(SIZES),100:3000$(,)300:9000$(,)1000:30000) --reps $(or $(REPS),3) $(BENCH_ARGS)

# The fault soak at full length: 20 rounds, 8 of them API server stops or
# etcd pauses, the rest operator SIGKILLs (a 5-round version with one outage
# runs in `make test`).
soak: build
	FIREDRILL_E2E_SUITES=kwok FIREDRILL_SOAK_ROUNDS=$(or $(ROUNDS),20) FIREDRILL_SOAK_OUTAGES=$(or $(OUTAGES),8) FIREDRILL_SOAK_SEED=$(or $(SEED),1) tests/run-e2e.sh soak:: -- --nocapture

fuzz:
	tests/fuzz.sh $(or $(FUZZ_SECONDS),60)

manifest:
	deploy/render.sh > deploy/firedrill.yaml

image:
	image/build.sh

crds:
	cargo run -q -p firedrill -- crd --dir crds
	cargo run -q -p firedrill -- crd --dir charts/firedrill/crds

testbed-up:
	tests/testbed/testbed.sh up $(or $(NODES),6)

testbed-down:
	tests/testbed/testbed.sh down
