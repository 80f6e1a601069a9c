# The two entry points. Both install what the machine lacks first (scripts/bootstrap.sh).
export PATH := $(HOME)/.cargo/bin:$(PATH)
# In CI (CI=true, a fresh clone every time), what cargo builds goes to a cache that every
# checkout on this machine shares, so the clone compiles its own crates but not its
# dependencies again (the VM logs and images stay in the checkout's target/). Only there:
# cargo tells a checkout's own crates from another checkout's by their files' times
# alone, so an older working copy sharing the cache could take a newer clone's build for
# its own. Set CARGO_TARGET_DIR to choose yourself; scripts/bootstrap.sh empties the
# cache once it passes ENFORCER_TARGET_CACHE_GIB (default 30).
ifeq ($(CI),true)
export CARGO_TARGET_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/enforcer/target
endif

.PHONY: demo test bootstrap

## Build everything and run the demo (in a VM when the host kernel lacks BPF LSM).
demo: bootstrap
	cargo xtask demo

## Formatting, clippy, unit tests and the VM integration tests on Linux 6.1 and 6.12.
test: bootstrap
	cargo xtask ci

bootstrap:
	./scripts/bootstrap.sh
