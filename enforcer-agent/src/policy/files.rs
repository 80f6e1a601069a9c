//! Policy documents read from files. The one module of `policy` that touches the
//! filesystem, so that the agent and the CLI read a file or directory the same way.

use std::path::Path;

use anyhow::Context as _;

use super::{model::Policy, validate};

/// Reads every `*.yaml`/`*.yml` file of a directory (sorted by name), or one file.
pub fn read_policies(path: &Path) -> anyhow::Result<Vec<Policy>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut policies = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        policies.extend(validate::parse(&file.display().to_string(), &text)?);
    }
    Ok(policies)
}
