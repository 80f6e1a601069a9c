//! `enforcer policy apply|diff|list|delete --kubernetes`: the same verbs against the
//! cluster's `Policy` resources instead of one node's agent. The whole resulting set is
//! validated before anything is written, so a bad file changes nothing.

use std::{path::Path, process::ExitCode};

use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};

use super::{Output, print_json, runtime};
use crate::{
    api::ApplyResult,
    kube_client,
    policy::files,
    policy::{
        diff,
        model::Policy,
        resource,
        validate::{self, Valid},
    },
};

/// The field manager named in writes.
const MANAGER: &str = "enforcer-cli";

/// Creates the resource, or replaces the whole of it (with the resourceVersion it was
/// read at, so a concurrent change is refused rather than lost). A replace, not a
/// server-side apply: fields removed from the document must leave the resource even
/// where another manager set them.
async fn write(
    api: &kube::Api<DynamicObject>,
    existing: &[DynamicObject],
    doc: &Policy,
) -> Result<(), kube::Error> {
    let mut object: DynamicObject =
        serde_json::from_value(serde_json::to_value(resource::from_policy(doc)).expect("serialises"))
            .expect("a resource");
    let params = PostParams { field_manager: Some(MANAGER.to_owned()), ..PostParams::default() };
    match existing.iter().find(|o| o.metadata.name.as_deref() == Some(doc.metadata.name.as_str())) {
        Some(current) => {
            object.metadata.resource_version.clone_from(&current.metadata.resource_version);
            api.replace(&doc.metadata.name, &params, &object).await.map(drop)
        }
        None => api.create(&params, &object).await.map(drop),
    }
}

async fn api(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Api<DynamicObject>> {
    let client = kube_client::client(kubeconfig).await?;
    Ok(kube::Api::all_with(client, &resource::api_resource()))
}

/// The client and every `Policy` resource of the cluster.
async fn listed(kubeconfig: Option<&Path>) -> anyhow::Result<(kube::Api<DynamicObject>, Vec<DynamicObject>)> {
    let api = api(kubeconfig).await?;
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing Policy resources: {e}"))?;
    Ok((api, list.items))
}

fn error(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// `apply` and `diff` (a dry run showing the line diff).
pub fn apply(
    kubeconfig: Option<&Path>,
    file: &Path,
    dry_run: bool,
    show_diff: bool,
    output: Output,
) -> ExitCode {
    let docs = match files::read_policies(file).and_then(|d| Ok((validate::validate_set(&d)?, d))) {
        Ok((_, docs)) => docs,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    runtime().block_on(async {
        let (api, objects) = match listed(kubeconfig).await {
            Ok(found) => found,
            Err(e) => return error(&e),
        };
        // Resources the validator refuses stay out of the comparison; a document of the
        // same name replaces them.
        let current: Vec<_> = objects.iter().filter_map(|o| resource::to_policy(o).ok()).collect();
        let merged = diff::merge(&current, &docs);
        if let Err(e) = validate::validate_set(&merged) {
            eprintln!("error: with the cluster's other policies: {e}");
            return ExitCode::from(2);
        }
        let names: Vec<&str> = docs.iter().map(|d| d.metadata.name.as_str()).collect();
        let changes: Vec<_> = diff::changes(&current, &merged)
            .into_iter()
            .filter(|c| names.contains(&c.name.as_str()))
            .collect();
        if !dry_run {
            for doc in &docs {
                if let Err(e) = write(&api, &objects, doc).await {
                    return error(&anyhow::anyhow!("writing Policy {}: {e}", doc.metadata.name));
                }
            }
        }
        let result = ApplyResult { generation: 0, dry_run, changes };
        print(&result, show_diff || dry_run, output);
        ExitCode::SUCCESS
    })
}

fn print(result: &ApplyResult, show_diff: bool, output: Output) {
    if let Output::Json = output {
        print_json(&serde_json::json!({"dryRun": result.dry_run, "changes": result.changes}));
        return;
    }
    for change in &result.changes {
        let verb = match (change.change.as_str(), result.dry_run) {
            ("unchanged", _) => "unchanged".to_owned(),
            (c, true) => format!("would be {c}"),
            (c, false) => c.to_owned(),
        };
        println!("policy.enforcer.dev/{}: {verb}", change.name);
        if show_diff {
            for line in &change.diff {
                println!("    {line}");
            }
        }
    }
    if result.dry_run {
        println!("dry run: nothing changed in the cluster");
    }
}

/// The cluster's resources with what the agents say of them.
pub fn list(kubeconfig: Option<&Path>, output: Output) -> ExitCode {
    runtime().block_on(async {
        let (_, objects) = match listed(kubeconfig).await {
            Ok(found) => found,
            Err(e) => return error(&e),
        };
        let rows: Vec<serde_json::Value> = objects.iter().map(row).collect();
        if let Output::Json = output {
            print_json(&rows);
            return ExitCode::SUCCESS;
        }
        println!("{:<24} {:<24} {:<8} {:<7} MESSAGE", "NAME", "IDENTITY", "MODE", "VALID");
        for r in &rows {
            println!(
                "{:<24} {:<24} {:<8} {:<7} {}",
                r["name"].as_str().unwrap_or_default(),
                r["identity"].as_str().unwrap_or("-"),
                r["mode"].as_str().unwrap_or("-"),
                r["valid"].as_str().unwrap_or("Unknown"),
                r["message"].as_str().unwrap_or_default()
            );
        }
        ExitCode::SUCCESS
    })
}

fn row(object: &DynamicObject) -> serde_json::Value {
    let name = object.metadata.name.clone().unwrap_or_default();
    let valid: Option<Valid> = resource::to_policy(object).ok().and_then(|p| validate::validate(&p).ok());
    let condition = object.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Valid"))
        .cloned()
        .unwrap_or_default();
    serde_json::json!({
        "name": name,
        "identity": valid.as_ref().map(|v| v.identity.clone()),
        "mode": valid.as_ref().map(Valid::mode_name),
        "valid": condition["status"],
        "message": condition["message"],
    })
}

pub fn delete(kubeconfig: Option<&Path>, name: &str, dry_run: bool) -> ExitCode {
    runtime().block_on(async {
        let api = match api(kubeconfig).await {
            Ok(api) => api,
            Err(e) => return error(&e),
        };
        let params = if dry_run {
            DeleteParams { dry_run: true, ..DeleteParams::default() }
        } else {
            DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) if dry_run => println!("policy.enforcer.dev/{name}: would be deleted"),
            Ok(_) => println!("policy.enforcer.dev/{name}: deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                eprintln!("error: no Policy named {name:?} in the cluster");
                return ExitCode::from(3);
            }
            Err(e) => return error(&anyhow::anyhow!("deleting Policy {name}: {e}")),
        }
        ExitCode::SUCCESS
    })
}
