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
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        texts.push(std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?);
    }
    // Parsing YAML is the slow part of reading a large set: the files are parsed side by
    // side, one thread per CPU, and the results taken in file order.
    let parse =
        |(file, text): (&std::path::PathBuf, &String)| validate::parse(&file.display().to_string(), text);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per_thread = files.len().div_ceil(threads).max(1);
    let parsed: Vec<Vec<_>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = files
            .chunks(per_thread)
            .zip(texts.chunks(per_thread))
            .map(|(files, texts)| scope.spawn(move || files.iter().zip(texts).map(parse).collect::<Vec<_>>()))
            .collect();
        jobs.into_iter().map(|job| job.join().expect("parsing does not panic")).collect()
    });
    let mut policies = Vec::new();
    for result in parsed.into_iter().flatten() {
        policies.extend(result?);
    }
    Ok(policies)
}
