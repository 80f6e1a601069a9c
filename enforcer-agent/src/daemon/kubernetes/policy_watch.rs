//! The cluster's `Policy` resources: watched as a whole set, handed to the main loop to
//! validate and apply atomically, and answered with a status on each resource.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use kube::{
    api::{DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::{mpsc, oneshot};

use super::policy_status::{self, Verdict};
use crate::{
    daemon::command::{ClusterPolicy, Command},
    policy::resource::{self, PolicyStatus},
};

/// Watches until the agent stops. After the first complete listing and after every
/// change, the whole set goes to the main loop; statuses are then brought up to date.
pub async fn run(client: kube::Client, commands: mpsc::Sender<Command>) {
    let ar = resource::api_resource();
    let api: kube::Api<DynamicObject> = kube::Api::all_with(client, &ar);
    let mut events = watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut current: BTreeMap<String, DynamicObject> = BTreeMap::new();
    let mut listing = BTreeMap::new();
    // Whether a complete listing has arrived, and whether a re-list is under way.
    let (mut synced, mut initialising) = (false, false);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                initialising = true;
            }
            Ok(watcher::Event::InitApply(object)) => {
                listing.insert(object.metadata.name.clone().unwrap_or_default(), object);
            }
            Ok(watcher::Event::InitDone) => {
                current = std::mem::take(&mut listing);
                (synced, initialising) = (true, false);
            }
            Ok(watcher::Event::Apply(object)) => {
                current.insert(object.metadata.name.clone().unwrap_or_default(), object);
            }
            Ok(watcher::Event::Delete(object)) => {
                current.remove(&object.metadata.name.clone().unwrap_or_default());
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy watch failed; retrying");
                continue;
            }
        }
        if !synced || initialising {
            continue;
        }
        let resources = current
            .values()
            .map(|o| ClusterPolicy {
                name: o.metadata.name.clone().unwrap_or_default(),
                policy: resource::to_policy(o),
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        if commands.send(Command::ClusterPolicies { resources, reply }).await.is_err() {
            return;
        }
        let Ok(verdicts) = answer.await else { return };
        report(&api, &current, &verdicts).await;
    }
}

/// Writes each resource's status where it differs from what the validator said.
async fn report(
    api: &kube::Api<DynamicObject>,
    objects: &BTreeMap<String, DynamicObject>,
    verdicts: &[(String, Verdict)],
) {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string();
    for (name, verdict) in verdicts {
        let Some(object) = objects.get(name) else { continue };
        let status: Option<PolicyStatus> =
            object.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
        let Some(next) = policy_status::next(status.as_ref(), object.metadata.generation, verdict, &now)
        else {
            continue;
        };
        // The resourceVersion it was read at: a status computed from an older read (this
        // node lagging behind another) is refused instead of written over a newer one.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": object.metadata.resource_version },
            "status": next,
        });
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(policy = %name, error = %e, "writing the policy's status");
        }
    }
}
