//! The pods of this node, from a list + watch filtered on `spec.nodeName`.

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::mpsc;

use crate::{
    daemon::command::Command,
    daemon::identity::kubepods::{PodInfo, PodsChange, bare_container_id},
};

const MIRROR: &str = "kubernetes.io/config.mirror";

/// What the agent keeps of a pod: its names, labels, service account and the ids of its
/// containers (app, init and ephemeral) by name.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let statuses = status
        .into_iter()
        .flat_map(|s| {
            [&s.container_statuses, &s.init_container_statuses, &s.ephemeral_container_statuses]
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|c| Some((bare_container_id(c.container_id.as_deref()?).to_owned(), c.name.clone())));
    // A static pod runs under the kubelet's own UID (its config hash), which names its
    // cgroup and its CRI annotations; the API server's mirror pod has another and says
    // the kubelet's in this annotation.
    let uid = meta.annotations.as_ref().and_then(|a| a.get(MIRROR)).cloned().or_else(|| meta.uid.clone())?;
    Some(PodInfo {
        uid,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        containers: statuses.collect(),
    })
}

/// Watches until the agent stops; the watcher re-lists by itself after errors (with
/// backoff) and after `410 Gone`.
pub async fn run(client: kube::Client, node_name: String, commands: mpsc::Sender<Command>) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: Vec<PodInfo> = Vec::new();
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(pod)) => {
                listing.extend(pod_info(&pod));
                continue;
            }
            Ok(watcher::Event::InitDone) => PodsChange::Resync(std::mem::take(&mut listing)),
            Ok(watcher::Event::Apply(pod)) => match pod_info(&pod) {
                Some(info) => PodsChange::Upsert(info),
                None => continue,
            },
            Ok(watcher::Event::Delete(pod)) => match pod.metadata.uid {
                Some(uid) => PodsChange::Remove(uid),
                None => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        if commands.send(Command::Pods(change)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_becomes_what_selectors_match() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "cart-0", "namespace": "shop", "uid": "u-1", "labels": {"app": "cart"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "cart", "containers": [{"name": "app"}]},
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://abc", "image": "", "imageID": "", "ready": true, "restartCount": 0},
                    {"name": "waiting", "image": "", "imageID": "", "ready": false, "restartCount": 0}
                ],
                "initContainerStatuses": [
                    {"name": "init", "containerID": "cri-o://def", "image": "", "imageID": "", "ready": false, "restartCount": 0}
                ]
            }
        }))
        .unwrap();
        let info = pod_info(&pod).unwrap();
        assert_eq!(
            (info.namespace.as_str(), info.name.as_str(), info.uid.as_str()),
            ("shop", "cart-0", "u-1")
        );
        assert_eq!(info.service_account, "cart");
        assert_eq!(info.labels["app"], "cart");
        let containers: Vec<(&str, &str)> =
            info.containers.iter().map(|(id, name)| (id.as_str(), name.as_str())).collect();
        assert_eq!(containers, [("abc", "app"), ("def", "init")]);
    }

    #[test]
    fn a_static_pod_goes_by_the_kubelets_uid() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "etcd-node-a", "namespace": "kube-system", "uid": "mirror-uid",
                         "annotations": {"kubernetes.io/config.mirror": "0123456789abcdef0123456789abcdef"}},
        }))
        .unwrap();
        assert_eq!(pod_info(&pod).unwrap().uid, "0123456789abcdef0123456789abcdef");
    }
}
