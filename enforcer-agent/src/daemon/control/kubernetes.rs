//! What the main loop does for the Kubernetes side: pod changes, the cluster's policy set,
//! containers announced by the OCI hook, and readiness.

use serde::Serialize;

use crate::{
    daemon::command::ClusterPolicy,
    daemon::command::{ContainerAnswer, Failure},
    daemon::control::Control,
    daemon::identity::containers,
    daemon::identity::kubepods::PodsChange,
    daemon::kubernetes::{policy_set, policy_status::Verdict},
    daemon::reports::ContainerStart,
};

crate::log_record!(ContainerRecord<'_>);

/// A container bound at its start, as recorded in the verdict log.
#[derive(Serialize)]
struct ContainerRecord<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    namespace: &'a str,
    pod: &'a str,
    container: &'a str,
    cgroup: Option<&'a str>,
    identities: &'a [String],
}

impl Control<'_> {
    pub fn pods_changed(&mut self, change: PodsChange) {
        if matches!(change, PodsChange::Resync(_)) {
            self.kube_synced.0 = true;
        }
        self.engine.update_pods(|pods| pods.change(change));
        self.save_pods();
        match self.engine.rescan() {
            Ok(rescan) => {
                for b in rescan.added {
                    tracing::info!(identity = %b.identity, cgroup_id = b.cgroup_id, "bound a pod's container");
                }
            }
            Err(e) => tracing::warn!(error = %e, "binding pods' containers"),
        }
    }

    /// Applies the cluster's set when every resource is valid; the set in force is kept
    /// otherwise. Answers each resource's verdict for its status.
    pub fn apply_cluster(&mut self, resources: &[ClusterPolicy]) -> Vec<(String, Verdict)> {
        self.kube_synced.1 = true;
        let (verdicts, set) = policy_set::judge(resources);
        let Some(set) = set else {
            for (name, verdict) in &verdicts {
                if let Err(problem) = verdict {
                    tracing::warn!(policy = %name, %problem, "cluster policy refused; the running set stays");
                }
            }
            return verdicts;
        };
        if self.engine.holds(&set) {
            return verdicts;
        }
        if let Err(e) = self.install(&set, "kubernetes", None) {
            // Valid documents that do not fit this node (map capacity): the node keeps its
            // set and says so here; the resources' status stays what the validator said,
            // which every node agrees on.
            tracing::error!(error = %e, "the cluster's policies do not install on this node");
        }
        verdicts
    }

    fn save_pods(&self) {
        if let Err(e) = self.state.save_pods(&self.engine.pods().all()) {
            tracing::warn!(error = %e, "saving the pods of this node");
        }
    }

    pub fn container_start(&mut self, start: &ContainerStart) -> Result<ContainerAnswer, Failure> {
        let answer = containers::start(&mut self.engine, start, self.config.kubernetes.is_some())?;
        self.save_pods();
        if let ContainerAnswer::Bound(bound) = &answer
            && !start.sandbox
        {
            let record = ContainerRecord {
                time: crate::daemon::record::clock::wall_now(),
                kind: "container",
                namespace: &start.namespace,
                pod: &start.pod,
                container: &start.container,
                cgroup: bound.cgroup.as_deref(),
                identities: &bound.identities,
            };
            if let Err(e) = self.log.write(&record) {
                tracing::warn!(error = %e, "writing verdict log");
            }
            let _ = self.log.flush();
        }
        Ok(answer)
    }

    /// Ready once enforcing and, with `--kubernetes`, once both watches have listed.
    pub fn ready(&self) -> Result<(), String> {
        if self.config.kubernetes.is_none() {
            return Ok(());
        }
        match self.kube_synced {
            (true, true) => Ok(()),
            (false, _) => Err("waiting for the first listing of this node's pods".into()),
            (_, false) => Err("waiting for the first listing of Policy resources".into()),
        }
    }
}
