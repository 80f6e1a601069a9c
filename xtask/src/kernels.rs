//! Debian cloud kernels for the VM tests: resolved with apt, downloaded once, cached.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::build::exec;

/// A kernel series the VM tests run on: the package-name pattern that finds its newest build.
pub struct Series {
    pub name: &'static str,
    pattern: &'static str,
}

pub const SERIES: [Series; 2] = [
    Series { name: "6.1", pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$" },
    Series { name: "6.12", pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$" },
];

pub struct Kernel {
    pub series: &'static str,
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// Where downloads are kept between runs (outside the checkout, so fresh clones reuse it).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENFORCER_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("enforcer")
}

pub fn all() -> anyhow::Result<Vec<Kernel>> {
    SERIES.iter().map(get).collect()
}

pub fn by_name(name: &str) -> anyhow::Result<Kernel> {
    let series = SERIES.iter().find(|s| s.name == name).with_context(|| {
        let known: Vec<_> = SERIES.iter().map(|s| s.name).collect();
        format!("unknown kernel {name:?}; known: {}", known.join(", "))
    })?;
    get(series)
}

/// The cached kernel of a series, downloading the newest build if none is cached.
fn get(series: &Series) -> anyhow::Result<Kernel> {
    let dir = cache_dir().join("kernels").join(series.name);
    let marker = dir.join("package");
    if let Ok(package) = fs::read_to_string(&marker) {
        let vmlinuz = dir.join("vmlinuz");
        if vmlinuz.is_file() {
            return Ok(Kernel { series: series.name, package: package.trim().to_owned(), vmlinuz });
        }
    }
    let package = newest_package(series)?;
    eprintln!("vm-test: downloading {package}");
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    exec(Command::new("apt-get").current_dir(&download).args(["download", "-q", &package]))?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    let unpacked = download.join("root");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let vmlinuz = find_vmlinuz(&unpacked.join("boot"))?;
    fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    fs::write(&marker, &package)?;
    let _ = fs::remove_dir_all(&download);
    Ok(Kernel { series: series.name, package, vmlinuz: dir.join("vmlinuz") })
}

fn find_vmlinuz(boot: &Path) -> anyhow::Result<PathBuf> {
    fs::read_dir(boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))
}

fn newest_package(series: &Series) -> anyhow::Result<String> {
    let mut names = search(series.pattern)?;
    if names.is_empty() {
        // Fresh machines may have no package lists yet.
        exec(Command::new("apt-get").args(["update", "-q"]))?;
        names = search(series.pattern)?;
    }
    names.sort_by_key(|name| version_key(name));
    match names.pop() {
        Some(name) => Ok(name),
        None => bail!(
            "apt knows no package matching {} (is this Debian 12 with bookworm sources?)",
            series.pattern
        ),
    }
}

fn search(pattern: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new("apt-cache")
        .args(["search", "--names-only", pattern])
        .output()
        .context("running apt-cache")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Numeric parts of a package name, for a version-aware sort.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}
