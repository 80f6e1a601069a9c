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

use tokio::sync::mpsc;

use crate::daemon::command::{Command, PodRequest};

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct Options {
    /// A kubeconfig file; without it the in-cluster service account (or `$KUBECONFIG`,
    /// `~/.kube/config`) is used.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
}

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
