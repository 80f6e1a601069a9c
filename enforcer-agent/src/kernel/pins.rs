//! Pinned programs and maps under the bpffs directory, and handing enforcement over from
//! a previous agent without a gap.
//!
//! Each agent instance pins into its own `<bpffs>/agent-<start time>/`. A new instance
//! attaches and pins its programs first, then detaches the older instances' links, so at
//! every instant at least one full set of programs is attached.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::links::{FdLink, PinnedLink},
};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("bpffs directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { path: PathBuf },
    #[error("pinning {what} at {path}: {message}")]
    Pin { what: String, path: PathBuf, message: String },
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// This instance's pin directory and its pinned links.
pub struct Instance {
    pub dir: PathBuf,
    links: Vec<(&'static str, PinnedLink)>,
}

/// Creates `<bpffs>/agent-<nanos>/` after checking `bpffs` is a bpf filesystem.
pub fn create(bpffs: &Path) -> Result<Instance, PinError> {
    fs::create_dir_all(bpffs).map_err(|source| PinError::Dir { path: bpffs.to_owned(), source })?;
    check_bpffs(bpffs)?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = bpffs.join(format!("agent-{nanos}"));
    for sub in ["links", "maps"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|source| PinError::Dir { path, source })?;
    }
    Ok(Instance { dir, links: Vec::new() })
}

fn check_bpffs(path: &Path) -> Result<(), PinError> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| PinError::NotBpffs { path: path.to_owned() })?;
    // SAFETY: zeroed statfs is a valid out-parameter; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut stat) };
    #[allow(clippy::unnecessary_cast, reason = "f_type's width differs between libcs")]
    if rc != 0 || stat.f_type as i64 != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs { path: path.to_owned() });
    }
    Ok(())
}

impl Instance {
    /// Pins the object's named maps (for inspection with bpftool, and for successors).
    /// Section maps such as `.rodata` are left out: bpffs reserves names with dots.
    pub fn pin_maps(&self, ebpf: &Ebpf) -> Result<(), PinError> {
        for (name, map) in ebpf.maps().filter(|(name, _)| enforcer_common::maps::ALL.contains(name)) {
            let path = self.dir.join("maps").join(name);
            map.pin(&path).map_err(|e| PinError::Pin {
                what: format!("map {name}"),
                path,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Pins the links, so the programs stay attached if this process exits.
    pub fn pin_links(&mut self, links: Vec<(&'static str, FdLink)>) -> Result<(), PinError> {
        for (name, link) in links {
            let path = self.dir.join("links").join(name);
            let pinned = link.pin(&path).map_err(|e| PinError::Pin {
                what: format!("link {name}"),
                path,
                message: e.to_string(),
            })?;
            self.links.push((name, pinned));
        }
        Ok(())
    }

    /// Unpins everything of this instance: its programs detach when the process lets go.
    pub fn release(mut self) {
        self.links.sort_by_key(|(name, _)| detaches_last(name));
        for (_, link) in self.links {
            if let Ok(link) = link.unpin() {
                drop(link);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether the link of program `name` must outlive the instance's other links.
fn detaches_last(name: &str) -> bool {
    crate::kernel::loader::DETACH_LAST.contains(&name)
}

/// Pin directories of earlier instances, oldest first.
pub fn previous(bpffs: &Path, current: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(bpffs) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-")))
        .collect();
    dirs.sort();
    dirs
}

/// Detaches and removes an earlier instance. Returns how many links were detached.
pub fn retire(dir: &Path) -> usize {
    let mut detached = 0;
    if let Ok(entries) = fs::read_dir(dir.join("links")) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort_by_key(|p| p.file_name().is_some_and(|n| detaches_last(&n.to_string_lossy())));
        for path in paths {
            if let Ok(link) = PinnedLink::from_pin(path)
                && link.unpin().is_ok()
            {
                detached += 1;
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
    detached
}
