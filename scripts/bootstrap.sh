#!/usr/bin/env bash
# Installs what building and testing enforcer needs on a Debian-like machine.
# Idempotent: every step checks first and skips what is already present.
set -euo pipefail

cd "$(dirname "$0")/.."

LLVM_VERSION=22
BPF_LINKER_VERSION=0.13.0
# Offline schema checks of deploy/ (it ships the Kubernetes schemas); installed with pip
# into its own directory, which xtask/src/ci.rs puts on PYTHONPATH.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/enforcer/kubernetes-validate"
APT_PACKAGES=(
  "llvm-${LLVM_VERSION}-dev" "libpolly-${LLVM_VERSION}-dev" "clang-${LLVM_VERSION}"
  libzstd-dev zlib1g-dev
  qemu-system-x86 busybox-static cpio gzip runc
  # The CI reads the container image back with both.
  skopeo umoci
)
# `kubectl kustomize deploy` renders the manifests. Any kubectl will do (Debian's
# kubernetes-client renders deploy/ the same as current releases); a kubectl already on
# the PATH, from whatever package, is left alone.
command -v kubectl >/dev/null || APT_PACKAGES+=(kubernetes-client)
command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3 python3-pip)

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

missing_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      printf '%s\n' "$pkg"
    fi
  done
}

install_packages() {
  command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
    die "this is not a Debian-like system (no apt-get/dpkg). Install by hand: LLVM ${LLVM_VERSION} (dev libraries, polly, clang), zstd and zlib dev headers, qemu-system-x86_64, a static busybox, cpio, gzip, runc, skopeo, umoci, kubectl, python3 with pip."
  local missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages present"
    return
  fi
  [ "$(id -u)" -eq 0 ] ||
    die "not root; run as root or install these packages first: apt-get install ${missing[*]}"
  say "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -q >/dev/null ||
      die "apt-get update failed (no network?); install by hand: apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get could not install: ${missing[*]}"
  fi
}

install_toolchain() {
  command -v rustup >/dev/null ||
    die "rustup not found; install it from https://rustup.rs and re-run"
  local channel
  channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  if rustup run "$channel" rustc --version >/dev/null 2>&1 &&
    rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^rust-src'; then
    say "rust $channel present"
    return
  fi
  say "installing rust $channel with rust-src, rustfmt, clippy"
  # Reads rust-toolchain.toml; rustup here does not install a pinned toolchain on demand.
  rustup toolchain install || die "rustup could not install rust $channel (no network?)"
}

install_bpf_linker() {
  if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    say "bpf-linker $BPF_LINKER_VERSION present"
    return
  fi
  say "building bpf-linker $BPF_LINKER_VERSION against LLVM ${LLVM_VERSION}"
  # LLVM's bin dir must come first or the build looks for libLLVM under /usr and fails.
  PATH="/usr/lib/llvm-${LLVM_VERSION}/bin:$PATH" LLVM_PREFIX="/usr/lib/llvm-${LLVM_VERSION}" \
    cargo install --quiet --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features "llvm-${LLVM_VERSION}" ||
    die "cargo install bpf-linker failed"
}

install_kubernetes_validate() {
  if [ "$(PYTHONPATH="$KUBERNETES_VALIDATE_DIR" python3 -m kubernetes_validate --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION present"
    return
  fi
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $KUBERNETES_VALIDATE_DIR"
  rm -rf "$KUBERNETES_VALIDATE_DIR"
  # --target keeps it out of the interpreter's own packages (and works where the system
  # Python refuses pip installs).
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$KUBERNETES_VALIDATE_DIR" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ||
    die "pip could not install kubernetes-validate $KUBERNETES_VALIDATE_VERSION (no network?)"
}

# The build cache the Makefile shares between checkouts (only that one: a
# CARGO_TARGET_DIR chosen by hand is never touched). Each checkout adds its own crates'
# outputs to it, so past the limit it is emptied and the next build starts cold.
trim_build_cache() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/enforcer/target"
  local limit_gib="${ENFORCER_TARGET_CACHE_GIB:-30}"
  [ -d "$cache" ] || return 0
  local used_kib
  used_kib=$(du -sk "$cache" 2>/dev/null | cut -f1)
  if [ "${used_kib:-0}" -gt $((limit_gib * 1024 * 1024)) ]; then
    say "build cache $cache holds $((used_kib / 1024 / 1024)) GiB, over $limit_gib: emptying it"
    rm -rf "$cache"
  fi
}

install_packages
install_toolchain
install_bpf_linker
install_kubernetes_validate
trim_build_cache
say "ready"
