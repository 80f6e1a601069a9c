//! Build orchestration for enforcer: `cargo xtask <command>`.

mod bench;
mod build;
mod ci;
mod demo;
mod elf;
mod image;
mod kernels;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "enforcer build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Formatting, clippy (warnings are errors), unit tests, then the VM tests on every kernel.
    Ci,
    /// Run the integration tests inside QEMU on Debian's 6.1 and 6.12 kernels.
    VmTest(vm::Options),
    /// Run the example policies on sample workloads (in a VM if the kernel lacks BPF LSM).
    Demo,
    /// The performance figures: native ones on this machine, emulated ones (LSM hooks) in a VM.
    Bench {
        /// Kernel series the emulated figures are measured on.
        #[arg(long, default_value = "6.12")]
        kernel: String,
        /// Only one half of the figures.
        #[arg(long, value_enum)]
        only: Option<bench::Half>,
    },
    /// Download (or find in the cache) the test kernels and print their paths.
    Kernels,
    /// Write the agent's container image as an OCI image layout and a tar archive of it
    /// (target/image/enforcer-oci and enforcer-oci.tar), offline.
    Image(image::Options),
}

/// A failure prints its chain of causes and nothing else: a backtrace of the task runner
/// would push the run's own summary out of a log's tail.
fn main() -> std::process::ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ci => ci::run(),
        Command::Demo => demo::run(),
        Command::Bench { kernel, only } => bench::run(&kernel, only),
        Command::VmTest(options) => vm::run(&options),
        Command::Image(options) => image::run(&options),
        Command::Kernels => {
            for kernel in kernels::all()? {
                println!("{} {}", kernel.series, kernel.vmlinuz.display());
            }
            Ok(())
        }
    }
}
