//! The agent in a Kubernetes cluster: a client of the API server that watches the pods of
//! this node and the cluster's `Policy` resources, and reports on those resources.
//!
//! The watches run as tasks beside the main loop and hand it whole changes as commands;
//! the main loop alone changes the engine.

pub mod pod_watch;
pub mod policy_set;
pub mod policy_status;
pub mod policy_watch;

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

use crate::{daemon::command::Command, daemon::identity::kubepods::PodInfo};

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct Options {
    /// A kubeconfig file; without it the in-cluster service account (or `$KUBECONFIG`,
    /// `~/.kube/config`) is used.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
}

/// A client for the API server `options` name.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding the cluster (in-cluster service account or kubeconfig)")?,
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// A request for one pod by namespace and name, answered from the API server (for the
/// OCI hook, when a container starts before the pod watch has seen its pod).
pub type PodRequest = (String, String, oneshot::Sender<Result<PodInfo, String>>);

/// Starts the watches; returns where to ask for single pods.
pub fn spawn(
    client: &kube::Client,
    node_name: &str,
    commands: mpsc::Sender<Command>,
) -> mpsc::Sender<PodRequest> {
    tokio::spawn(pod_watch::run(client.clone(), node_name.to_owned(), commands.clone()));
    tokio::spawn(policy_watch::run(client.clone(), commands));
    let (requests, mut incoming) = mpsc::channel::<PodRequest>(16);
    let client = client.clone();
    tokio::spawn(async move {
        while let Some((namespace, name, reply)) = incoming.recv().await {
            let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client.clone(), &namespace);
            let answer = match api.get_opt(&name).await {
                Ok(Some(pod)) => {
                    pod_watch::pod_info(&pod).ok_or_else(|| format!("pod {namespace}/{name} has no uid"))
                }
                Ok(None) => Err(format!("pod {namespace}/{name} does not exist")),
                Err(e) => Err(format!("reading pod {namespace}/{name}: {e}")),
            };
            let _ = reply.send(answer);
        }
    });
    requests
}
