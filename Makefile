# The two entry points. Both install what the machine lacks first (scripts/bootstrap.sh).
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test bootstrap

## Build everything and run the demo (in a VM when the host kernel lacks BPF LSM).
demo: bootstrap
	cargo xtask demo

## Formatting, clippy, unit tests and the VM integration tests on Linux 6.1 and 6.12.
test: bootstrap
	cargo xtask ci

bootstrap:
	./scripts/bootstrap.sh
