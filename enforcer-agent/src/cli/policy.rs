//! `enforcer policy …`: apply, diff, list, get, delete (through the agent) and validate
//! (offline).

use std::{io::Read as _, path::Path, process::ExitCode};

use hyper::Method;

use super::{Output, fail, print_json, runtime};
use crate::{
    api::{ApplyResult, PolicyList, client::Client},
    policy::files,
    policy::{model::Policy, validate},
};

/// What `apply` sends: the documents of a file or a directory of `*.yaml`/`*.yml`, parsed
/// here so errors name the file, or the YAML text of `-` (stdin), parsed by the agent.
enum Source {
    Parsed(Vec<Policy>),
    Text(String),
}

fn read_source(path: &Path) -> anyhow::Result<Source> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(Source::Text(text));
    }
    Ok(Source::Parsed(files::read_policies(path)?))
}

pub fn validate(file: &Path, output: Output) -> ExitCode {
    let result = files::read_policies(file).and_then(|p| Ok(validate::validate_set(&p)?));
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
            print_json(&serde_json::json!({"valid": true, "policies": names}));
            ExitCode::SUCCESS
        }
        (Err(e), Output::Text) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        (Err(e), Output::Json) => {
            print_json(&serde_json::json!({"valid": false, "error": format!("{e:#}")}));
            ExitCode::from(2)
        }
    }
}

/// `apply` (and `diff`, which is a dry run that always shows the line diff).
pub fn apply(socket: &Path, file: &Path, dry_run: bool, show_diff: bool, output: Output) -> ExitCode {
    let text = match read_source(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Line diffs cost the agent a serialisation of each changed policy: asked for only
    // where they are shown (a dry run shows them; JSON output carries everything).
    let path = match (dry_run, output) {
        (true, _) => "/v1/policies?dryRun=true",
        (false, Output::Json) => "/v1/policies?diff=true",
        (false, Output::Text) => "/v1/policies",
    };
    let client = Client::new(socket);
    let sent = match text {
        Source::Parsed(policies) => runtime().block_on(client.call_json(Method::POST, path, &policies)),
        Source::Text(text) => runtime().block_on(client.call(Method::POST, path, Some(text))),
    };
    let result: ApplyResult = match sent {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    print_changes(&result, show_diff || dry_run, output);
    ExitCode::SUCCESS
}

fn print_changes(result: &ApplyResult, show_diff: bool, output: Output) {
    if let Output::Json = output {
        print_json(result);
        return;
    }
    for change in &result.changes {
        let verb = if result.dry_run { format!("would be {}", change.change) } else { change.change.clone() };
        let verb = if change.change == "unchanged" { "unchanged".to_owned() } else { verb };
        println!("{}: {verb}", change.name);
        if show_diff {
            for line in &change.diff {
                println!("    {line}");
            }
        }
    }
    if result.dry_run {
        println!("dry run: nothing changed (generation {})", result.generation);
    } else {
        println!("generation {}", result.generation);
    }
}

pub fn list(socket: &Path, output: Output) -> ExitCode {
    let list: PolicyList =
        match runtime().block_on(Client::new(socket).call(Method::GET, "/v1/policies", None)) {
            Ok(l) => l,
            Err(e) => return fail(&e),
        };
    if let Output::Json = output {
        print_json(&list);
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<24} {:<8} {:<40} {:>4} {:>4} {:>7}",
        "NAME", "IDENTITY", "MODE", "SELECTOR", "EXEC", "FILE", "NETWORK"
    );
    for p in &list.policies {
        println!(
            "{:<24} {:<24} {:<8} {:<40} {:>4} {:>4} {:>7}",
            p.name, p.identity, p.mode, p.selector, p.rules.exec, p.rules.file, p.rules.network
        );
    }
    println!("generation {}", list.generation);
    ExitCode::SUCCESS
}

pub fn get(socket: &Path, name: &str, output: Output) -> ExitCode {
    let path = format!("/v1/policies/{}", crate::api::client::encode(name));
    let policy: Policy = match runtime().block_on(Client::new(socket).call(Method::GET, &path, None)) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match output {
        Output::Json => print_json(&policy),
        Output::Text => print!("{}", crate::policy::yaml::to_string(&policy).expect("policies serialise")),
    }
    ExitCode::SUCCESS
}

pub fn delete(socket: &Path, name: &str, dry_run: bool, output: Output) -> ExitCode {
    let mut path = format!("/v1/policies/{}", crate::api::client::encode(name));
    if dry_run {
        path.push_str("?dryRun=true");
    }
    let result: ApplyResult = match runtime().block_on(Client::new(socket).call(Method::DELETE, &path, None))
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    print_changes(&result, dry_run, output);
    ExitCode::SUCCESS
}
