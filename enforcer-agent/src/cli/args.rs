//! The arguments of the operator verbs (the agent's own are the binary's).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;

use super::Output;
use crate::{api::GrantTarget, policy::model::Access};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Turn request ID into a time-bound grant: the next attempt succeeds.
    Approve {
        id: u32,
        /// How long the grant lasts: `90s`, `15m`, `2h`, `1d`.
        #[arg(long)]
        ttl: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Close request ID without granting anything.
    Deny {
        id: u32,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CredentialsCommand {
    /// Deny every identity opening PATH from its next open.
    Revoke {
        path: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a revocation.
    Unrevoke { path: String },
    /// The revoked credentials.
    List,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Add or replace the policies in FILE, DIR or - (stdin), by name.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show what applying FILE would change, with a line diff.
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Check policy files offline (no agent needed); exit 0 if valid, 2 if not.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// The policies in force (with `--kubernetes`: the cluster's resources and their
    /// status).
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// One policy document, as YAML (or JSON with --output json).
    Get { name: String },
    /// Remove a policy; its identity is no longer enforced.
    Delete {
        name: String,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Target the cluster's `Policy` resources instead of this node's agent.
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Act on the cluster's Policy resources (every node's agent enforces them).
    #[arg(long)]
    pub kubernetes: bool,
    /// kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config` or in-cluster).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum VerdictsCommand {
    /// Follow the live verdict stream of the agent.
    ///
    /// On Kubernetes, follow one node with `kubectl -n enforcer-system exec POD --
    /// enforcer verdicts tail` (the node's socket), or read the agents' stdout:
    /// `kubectl -n enforcer-system logs -f POD` for one node and
    /// `kubectl -n enforcer-system logs -f -l app.kubernetes.io/name=enforcer --prefix`
    /// for the whole cluster (JSON lines, one per verdict).
    Tail(super::verdicts::TailArgs),
    /// Print a verdict log file, readably or as JSON lines, optionally filtered.
    Show(super::verdicts::ShowArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Identity whose policy decides.
    #[arg(long)]
    pub identity: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The action a `check` explains or a `grant` allows: exactly one of the three.
#[derive(clap::Args)]
pub struct TargetArgs {
    /// Executing this program.
    #[arg(long)]
    pub exec: Option<String>,
    /// Opening this file (with --access).
    #[arg(long)]
    pub file: Option<String>,
    /// Access for --file: read, write (repeat or comma-separate for both).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub access: Vec<AccessArg>,
    /// Connecting to `ADDR:PORT/PROTO` (`check`, e.g. `10.0.0.1:443/tcp`) or
    /// `CIDR:PORT/PROTO` (`grant`, e.g. `10.0.0.0/8:443/tcp`); IPv6 in brackets.
    #[arg(long)]
    pub connect: Option<String>,
}

#[derive(clap::Args)]
pub struct GrantArgs {
    pub identity: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long: `90s`, `15m`, `2h`, `1d` (at most 7 days).
    #[arg(long)]
    pub ttl: String,
    /// Why (recorded in the verdict log).
    #[arg(long)]
    pub reason: String,
}

pub fn accesses(list: &[AccessArg]) -> Vec<Access> {
    list.iter()
        .map(|a| match a {
            AccessArg::Read => Access::Read,
            AccessArg::Write => Access::Write,
        })
        .collect()
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AccessArg {
    Read,
    Write,
}

/// `enforcer grant`: the target from the arguments, then the request.
pub fn grant(socket: &Path, args: GrantArgs, output: Output) -> ExitCode {
    let t = args.target;
    let target = match (t.exec, t.file, t.connect) {
        (Some(path), None, None) => GrantTarget::Exec { path },
        (None, Some(path), None) => GrantTarget::File { path, access: accesses(&t.access) },
        (None, None, Some(text)) => match super::live::parse_grant_connect(&text) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --connect {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("error: give exactly one of --exec, --file, --connect");
            return ExitCode::from(2);
        }
    };
    super::live::grant(socket, &args.identity, &target, &args.ttl, &args.reason, output)
}
