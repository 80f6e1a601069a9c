//! The enforcer's own files, which the kernel programs keep managed tasks from writing,
//! removing or renaming: the state directory, the policy directory, the API socket and
//! the verdict log with its rotated files. (Pins are protected by their filesystem.)

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Paths to protect; their inodes are looked up again on every refresh, so a rotated log
/// or a re-created socket stays covered.
pub struct Protected {
    paths: Vec<PathBuf>,
}

impl Protected {
    pub fn new(state_dir: &Path, policy_dir: Option<&Path>, socket: &Path, log: &Path, keep: usize) -> Self {
        let mut paths = vec![state_dir.to_owned(), socket.to_owned(), log.to_owned()];
        paths.extend(policy_dir.map(Path::to_owned));
        for n in 1..=keep {
            let mut rotated = log.as_os_str().to_owned();
            rotated.push(format!(".{n}"));
            paths.push(PathBuf::from(rotated));
        }
        Self { paths }
    }

    /// (kernel device, inode) of every protected path that exists, sorted.
    pub fn inodes(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = self
            .paths
            .iter()
            .filter_map(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| (kernel_dev(m.dev()), m.ino()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A device number as the kernel keeps it in `super_block.s_dev` (`MAJOR << 20 | MINOR`),
/// from the encoding `stat(2)` returns.
#[must_use]
pub fn kernel_dev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 0x12c);
    }

    #[test]
    fn rotated_logs_and_missing_paths() {
        let dir = std::env::temp_dir().join(format!("enforcer-protect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("v.jsonl"), "").unwrap();
        std::fs::write(dir.join("v.jsonl.1"), "").unwrap();
        let p = Protected::new(&dir, None, &dir.join("api.sock"), &dir.join("v.jsonl"), 2);
        let found = p.inodes();
        std::fs::remove_dir_all(&dir).unwrap();
        // The directory, the log and one rotated file; no socket and no second rotation.
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
