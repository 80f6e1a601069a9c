# The two entry points. Both install what the machine lacks first (scripts/bootstrap.sh).
export PATH := $(HOME)/.cargo/bin:$(PATH)
# What cargo builds goes to a cache that every checkout on this machine shares, so a
# fresh clone compiles its own crates but not its dependencies again (the VM logs and
# images stay in the checkout's target/). Set CARGO_TARGET_DIR to put it elsewhere;
# scripts/bootstrap.sh empties it once it passes ENFORCER_TARGET_CACHE_GIB (default 30).
export CARGO_TARGET_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/enforcer/target

.PHONY: demo test bootstrap

## Build everything and run the demo (in a VM when the host kernel lacks BPF LSM).
demo: bootstrap
	cargo xtask demo

## Formatting, clippy, unit tests and the VM integration tests on Linux 6.1 and 6.12.
test: bootstrap
	cargo xtask ci

bootstrap:
	./scripts/bootstrap.sh
