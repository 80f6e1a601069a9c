//! The `enforcer` command: the agent daemon and the operator verbs.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use enforcer_agent::{
    api::{DEFAULT_SOCKET, server},
    cli::{
        self, Output,
        args::{ApprovalsCommand, CheckArgs, CredentialsCommand, GrantArgs, PolicyCommand, VerdictsCommand},
    },
    daemon::{
        agent,
        config::{Config, OnExit},
        verdict_log::Rotation,
    },
    kernel::log as kernel_log,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "enforcer",
    version,
    about = "In-kernel exec, file and network enforcement per workload identity"
)]
struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "ENFORCER_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format of the verbs.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the kernel programs, enforce policies, log verdicts.
    Agent(Box<AgentArgs>),
    /// Apply, compare, list, show, delete and validate policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Follow or read verdicts.
    #[command(subcommand)]
    Verdicts(VerdictsCommand),
    /// Kernel features, programs, policy generation, map usage, counters.
    Status,
    /// Print the Kubernetes `CustomResourceDefinition` of `enforcer.dev/v1` `Policy`.
    Crd,
    /// OCI runtime hook (`createRuntime`): reads the container state on stdin and has the
    /// agent bind a pod container's cgroup before its first instruction. Fails closed.
    OciHook {
        /// Namespaces whose containers start anyway while the agent or the API server is
        /// unavailable, besides `enforcer-system` (the agent's own). Repeatable.
        #[arg(long = "fail-open-namespace")]
        fail_open: Vec<String>,
    },
    /// Each identity with its cgroups and live process count.
    Identities,
    /// Explain what the policy in force says about an action, without performing it.
    Check(CheckArgs),
    /// Quarantine an identity: its policy's quarantine section applies from its next
    /// syscall (default: no exec, no network, no file writes). `--list` shows them.
    Quarantine {
        #[arg(required_unless_present = "list")]
        identity: Option<String>,
        /// Why (recorded in the verdict log).
        #[arg(long, required_unless_present = "list")]
        reason: Option<String>,
        #[arg(long, conflicts_with_all = ["identity", "reason"])]
        list: bool,
    },
    /// Lift an identity's quarantine.
    Release { identity: String },
    /// Allow one identity one target until the grant expires (checked in the kernel).
    Grant(GrantArgs),
    /// The grants in force.
    Grants,
    /// End a grant before it expires.
    RevokeGrant { id: u32 },
    /// Revoked credentials: files denied to every identity, whatever its policy.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Step-up requests (rules with `action: approve`): list, approve into a grant, deny.
    Approvals {
        #[command(subcommand)]
        answer: Option<ApprovalsCommand>,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Directory (or file) of policy YAML to enforce at start and on SIGHUP. Without it
    /// the set saved in the state directory is enforced.
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
    /// Rotate the verdict log when it reaches this many bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    log_max_bytes: u64,
    /// Rotated verdict logs to keep.
    #[arg(long, default_value_t = 5)]
    log_keep: usize,
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
    on_exit: OnExit,
    /// How often to look for new cgroups selected by a policy (milliseconds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    rescan_ms: u64,
    /// Group (name or number) whose members may use the API besides root.
    #[arg(long)]
    socket_group: Option<String>,
    /// Serve Prometheus metrics (`/metrics`) and health (`/healthz`, `/readyz`) on this
    /// address (e.g. 127.0.0.1:9464); off by default.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Run as a Kubernetes node agent: enforce the cluster's Policy resources and bind
    /// the containers of this node's pods that pod selectors pick.
    #[arg(long, conflicts_with = "policy_dir", requires = "node_name")]
    kubernetes: bool,
    /// kubeconfig file (default: the in-cluster service account, else `$KUBECONFIG` or
    /// `~/.kube/config`).
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// This node's name, as in its pods' `spec.nodeName` (downward API).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Diagnostics of the kernel programs' own failures, logged under the target
    /// `enforcer::kernel` at this level and above; off: not even emitted.
    #[arg(long, value_enum, default_value = "off")]
    kernel_log: kernel_log::Level,
}

/// One filter for the process: `$ENFORCER_LOG` (default `info`), plus the kernel
/// diagnostics the agent was asked for unless `$ENFORCER_LOG` says otherwise about them.
fn log_filter(kernel_log: kernel_log::Level) -> EnvFilter {
    let configured = std::env::var("ENFORCER_LOG").unwrap_or_default();
    let filter = EnvFilter::try_from_env("ENFORCER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match kernel_log.directive() {
        Some(directive) if !configured.contains(kernel_log::TARGET) => match directive.parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        },
        _ => filter,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let kernel_log = match &cli.command {
        Command::Agent(args) => args.kernel_log,
        _ => kernel_log::Level::Off,
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(kernel_log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (socket, output) = (cli.socket.as_path(), cli.output);
    match cli.command {
        Command::Agent(args) => run_agent(*args, cli.socket.clone()),
        Command::Policy(PolicyCommand::Apply { file, dry_run, cluster }) if cluster.kubernetes => {
            cli::cluster::apply(cluster.kubeconfig.as_deref(), &file, dry_run, false, output)
        }
        Command::Policy(PolicyCommand::Apply { file, dry_run, .. }) => {
            cli::policy::apply(socket, &file, dry_run, false, output)
        }
        Command::Policy(PolicyCommand::Diff { file, cluster }) if cluster.kubernetes => {
            cli::cluster::apply(cluster.kubeconfig.as_deref(), &file, true, true, output)
        }
        Command::Policy(PolicyCommand::Diff { file, .. }) => {
            cli::policy::apply(socket, &file, true, true, output)
        }
        Command::Policy(PolicyCommand::Validate { file }) => cli::policy::validate(&file, output),
        Command::Policy(PolicyCommand::List { cluster }) if cluster.kubernetes => {
            cli::cluster::list(cluster.kubeconfig.as_deref(), output)
        }
        Command::Policy(PolicyCommand::List { .. }) => cli::policy::list(socket, output),
        Command::Policy(PolicyCommand::Get { name }) => cli::policy::get(socket, &name, output),
        Command::Policy(PolicyCommand::Delete { name, dry_run, cluster }) if cluster.kubernetes => {
            cli::cluster::delete(cluster.kubeconfig.as_deref(), &name, dry_run)
        }
        Command::Policy(PolicyCommand::Delete { name, dry_run, .. }) => {
            cli::policy::delete(socket, &name, dry_run, output)
        }
        Command::Verdicts(VerdictsCommand::Tail(args)) => cli::verdicts::tail(socket, &args, output),
        Command::Verdicts(VerdictsCommand::Show(args)) => cli::verdicts::show(&args, output),
        Command::Status => cli::status::status(socket, output),
        Command::OciHook { fail_open } => cli::oci_hook::run(socket, &fail_open),
        Command::Crd => {
            print!("{}", enforcer_agent::policy::resource::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Identities => cli::status::identities(socket, output),
        Command::Quarantine { list: true, .. } => cli::live::list_quarantines(socket, output),
        Command::Quarantine { identity, reason, .. } => cli::live::quarantine(
            socket,
            identity.as_deref().unwrap_or_default(),
            reason.as_deref().unwrap_or_default(),
            output,
        ),
        Command::Grant(args) => cli::args::grant(socket, args, output),
        Command::Approvals { answer: None } => cli::live::approvals(socket, output),
        Command::Approvals { answer: Some(ApprovalsCommand::Approve { id, ttl, reason }) } => {
            cli::live::answer(socket, id, true, Some(&ttl), reason.as_deref(), output)
        }
        Command::Approvals { answer: Some(ApprovalsCommand::Deny { id, reason }) } => {
            cli::live::answer(socket, id, false, None, reason.as_deref(), output)
        }
        Command::Grants => cli::live::grants(socket, output),
        Command::RevokeGrant { id } => cli::live::revoke_grant(socket, id, output),
        Command::Release { identity } => cli::live::release(socket, &identity, output),
        Command::Credentials(CredentialsCommand::Revoke { path, reason }) => {
            cli::live::revoke(socket, &path, &reason, output)
        }
        Command::Credentials(CredentialsCommand::Unrevoke { path }) => {
            cli::live::unrevoke(socket, &path, output)
        }
        Command::Credentials(CredentialsCommand::List) => cli::live::list_revoked(socket, output),
        Command::Check(args) => {
            let t = args.target;
            let action = cli::status::Action {
                exec: t.exec,
                file: t.file,
                access: cli::args::accesses(&t.access),
                connect: t.connect,
            };
            cli::status::check(socket, &args.identity, action, output)
        }
    }
}

/// A group given by name (looked up through the system's group database, so LDAP and
/// sssd groups resolve too) or number.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {group:?}")),
        Err(e) => Err(format!("looking up group {group:?}: {e}")),
    }
}

fn run_agent(args: AgentArgs, socket: PathBuf) -> ExitCode {
    let socket_group = match args.socket_group.as_deref().map(group_id).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: --socket-group: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        policy_dir: args.policy_dir,
        state_dir: args.state_dir,
        bpffs: args.bpffs,
        log_file: args.log_file,
        stdout: args.stdout,
        cgroup_root: args.cgroup_root,
        network_only: args.network_only,
        on_exit: args.on_exit,
        rescan_interval: Duration::from_millis(args.rescan_ms),
        socket: socket.clone(),
        socket_group,
        metrics_addr: args.metrics_addr,
        log_rotation: Rotation { max_bytes: args.log_max_bytes, keep: args.log_keep },
        kubernetes: args.kubernetes.then(|| enforcer_agent::daemon::kubernetes::Options {
            kubeconfig: args.kubeconfig,
            node_name: args.node_name.unwrap_or_default(),
        }),
        kernel_log: args.kernel_log,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::run(config, server::start(socket, socket_group))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
