//! The `enforcer` command: the agent daemon and the operator verbs.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use enforcer_agent::{
    agent,
    cli::{self, Output},
    policy::validate,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "enforcer",
    version,
    about = "In-kernel exec, file and network enforcement per workload identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the kernel programs, enforce policies, log verdicts.
    Agent(AgentArgs),
    /// Work with policy documents.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read verdicts.
    #[command(subcommand)]
    Verdicts(VerdictsCommand),
}

#[derive(Subcommand)]
enum VerdictsCommand {
    /// Print the verdict log, readably or as JSON lines, optionally filtered.
    Show(cli::verdicts::ShowArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Directory (or file) of policy YAML to enforce; reloaded on SIGHUP. Without it the
    /// set saved in the state directory is enforced.
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Where the applied policy set and generation are kept.
    #[arg(long, default_value = "/var/lib/enforcer")]
    state_dir: PathBuf,
    /// bpffs directory for pinned programs and maps.
    #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
    bpffs: PathBuf,
    /// Verdict log (JSON lines).
    #[arg(long, default_value = "/var/log/enforcer/verdicts.jsonl")]
    log_file: PathBuf,
    /// Also print verdict records on stdout.
    #[arg(long)]
    stdout: bool,
    /// cgroup v2 directory the socket programs attach to and identities are looked up in.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Run without BPF LSM: only network rules are enforced.
    #[arg(long)]
    network_only: bool,
    /// What happens to enforcement when the agent stops.
    #[arg(long, value_enum, default_value = "keep")]
    on_exit: agent::OnExit,
    /// How often to look for new cgroups selected by a policy (milliseconds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    rescan_ms: u64,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check policy files offline (no agent needed); exit 0 if valid, 2 if not.
    Validate {
        /// Policy file or directory.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ENFORCER_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Agent(args) => run_agent(args),
        Command::Policy(PolicyCommand::Validate { file, output }) => validate_files(&file, output),
        Command::Verdicts(VerdictsCommand::Show(args)) => cli::verdicts::show(&args),
    }
}

fn run_agent(args: AgentArgs) -> ExitCode {
    let config = agent::Config {
        policy_dir: args.policy_dir,
        state_dir: args.state_dir,
        bpffs: args.bpffs,
        log_file: args.log_file,
        stdout: args.stdout,
        cgroup_root: args.cgroup_root,
        network_only: args.network_only,
        on_exit: args.on_exit,
        rescan_interval: Duration::from_millis(args.rescan_ms),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate_files(path: &std::path::Path, output: Output) -> ExitCode {
    let result = agent::read_policies(path).and_then(|p| Ok(validate::validate_set(&p)?));
    match (result, output) {
        (Ok(valid), Output::Text) => {
            for v in &valid {
                println!("{}: valid (identity {}, mode {})", v.name, v.identity, v.mode_name());
            }
            ExitCode::SUCCESS
        }
        (Ok(valid), Output::Json) => {
            let names: Vec<_> = valid
                .iter()
                .map(|v| serde_json::json!({"name": v.name, "identity": v.identity, "mode": v.mode_name()}))
                .collect();
            println!("{}", serde_json::json!({"valid": true, "policies": names}));
            ExitCode::SUCCESS
        }
        (Err(e), Output::Text) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        (Err(e), Output::Json) => {
            println!("{}", serde_json::json!({"valid": false, "error": format!("{e:#}")}));
            ExitCode::from(2)
        }
    }
}
