//! Builds the kernel programs and embeds them in the `enforcer` binary.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The eBPF target needs `-Z build-std=core`; aya-build passes it when the toolchain is
    // nightly or RUSTC_BOOTSTRAP=1, which lets the pinned stable toolchain build it.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = env!("CARGO_PKG_RUST_VERSION");
    let toolchain = if toolchain.is_empty() { "1.98.0" } else { toolchain };
    aya_build::build_ebpf(
        [Package { name: "enforcer-ebpf", root_dir: "../enforcer-ebpf", ..Default::default() }],
        Toolchain::Custom(toolchain),
    )
}
