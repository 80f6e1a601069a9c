//! A client of a Kubernetes API server, for the agent's watches and the CLI's cluster
//! verbs alike: a kubeconfig file when one is named, else the in-cluster service account,
//! `$KUBECONFIG` or `~/.kube/config`.

use anyhow::Context as _;

/// A client for the API server the kubeconfig (or the environment) names.
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
