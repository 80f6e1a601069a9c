//! The identity (device and inode) of the files and directories path rules name, so the
//! kernel can match a file however it was reached: through a hard link, a bind mount, a
//! `chroot` or a detached mount tree.
//!
//! Looked up when a set is installed, in the agent's mount namespace, without following
//! a final symlink (a rule naming a symlink names the link, as path matching does). A
//! path that does not exist then is matched by path only until the next apply.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _};

use enforcer_common::{
    maps::{PathRule, path_kind},
    verdict::action,
};

use crate::{
    daemon::protect::kernel_dev,
    policy::compiled::{CompiledSet, InodeRuleKey, PathRuleKey},
};

/// Fills `set.inode_rules` from its path rules (see [`rules`]).
pub fn fill(set: &mut CompiledSet, identify: impl Fn(&str) -> Option<(u32, u64)>) {
    let names: BTreeMap<_, _> = set.path_names.iter().map(|(k, n)| (*k, n.as_str())).collect();
    let with_paths = set.path_rules.iter().filter_map(|(key, rule)| Some((key, rule, *names.get(key)?)));
    set.inode_rules = rules(with_paths, identify);
}

/// The rules by file identity of `path_rules` (each with the path it names), with
/// `identify` giving a path's (kernel device, inode); runtimes (`path_kind::RUNTIME`) are
/// identified through a final symlink, since the kernel sees the file executed. Two paths
/// naming one file (hard links) merge, the stricter action deciding each access.
pub fn rules<'a>(
    path_rules: impl Iterator<Item = (&'a PathRuleKey, &'a PathRule, &'a str)>,
    identify: impl Fn(&str) -> Option<(u32, u64)>,
) -> Vec<(InodeRuleKey, PathRule)> {
    let mut found: BTreeMap<InodeRuleKey, PathRule> = BTreeMap::new();
    for (key, rule, path) in path_rules {
        let target = if key.kind == path_kind::RUNTIME {
            std::fs::canonicalize(path).ok().map(|p| p.to_string_lossy().into_owned())
        } else {
            Some(path.to_owned())
        };
        let Some((dev, ino)) = target.and_then(|path| identify(&path)) else {
            continue;
        };
        let entry = found
            .entry(InodeRuleKey { identity: key.identity, kind: key.kind, dev, ino })
            .or_insert(PathRule::empty());
        let read = action::stricter((entry.read_action, entry.read_rule), (rule.read_action, rule.read_rule));
        let write =
            action::stricter((entry.write_action, entry.write_rule), (rule.write_action, rule.write_rule));
        (entry.read_action, entry.read_rule, entry.write_action, entry.write_rule) =
            (read.0, read.1, write.0, write.1);
    }
    found.into_iter().collect()
}

/// (kernel device, inode) of `path` on this machine, not following a final symlink.
pub fn on_disk(path: &str) -> Option<(u32, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (kernel_dev(m.dev()), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(read: u8, write: u8, index: u32) -> PathRule {
        PathRule {
            read_action: read,
            write_action: write,
            read_rule: index,
            write_rule: index,
            ..PathRule::empty()
        }
    }

    #[test]
    fn links_to_one_file_merge_to_the_stricter_rule() {
        let a = PathRuleKey { identity: 1, kind: path_kind::FILE_EXACT, hash: 1, len: 2 };
        let b = PathRuleKey { identity: 1, kind: path_kind::FILE_EXACT, hash: 2, len: 2 };
        let gone = PathRuleKey { identity: 1, kind: path_kind::FILE_DIR, hash: 3, len: 2 };
        let mut set = CompiledSet {
            path_rules: vec![
                (a, rule(action::ALLOW, action::ALLOW, 0)),
                (b, rule(action::DENY, action::NONE, 1)),
                (gone, rule(action::DENY, action::DENY, 2)),
            ],
            path_names: vec![(a, "/a".into()), (b, "/b".into()), (gone, "/gone".into())],
            ..CompiledSet::default()
        };
        fill(&mut set, |p| (p != "/gone").then_some((7, 42)));
        let key = InodeRuleKey { identity: 1, kind: path_kind::FILE_EXACT, dev: 7, ino: 42 };
        // Read: deny (rule 1) beats allow; write: only rule 0 says anything.
        assert_eq!(
            set.inode_rules,
            vec![(key, rule(action::DENY, action::ALLOW, 0))]
                .into_iter()
                .map(|(k, mut r)| {
                    r.read_rule = 1;
                    (k, r)
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn runtimes_are_identified_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("enforcer-runtime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (binary, link) = (dir.join("runc.real"), dir.join("runc"));
        std::fs::write(&binary, "x").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&binary, &link).unwrap();
        let name = link.to_string_lossy().into_owned();
        let key = PathRuleKey { identity: 1, kind: path_kind::RUNTIME, hash: 9, len: 2 };
        let mut set = CompiledSet {
            path_rules: vec![(key, rule(action::ALLOW, action::NONE, 0))],
            path_names: vec![(key, name)],
            ..CompiledSet::default()
        };
        fill(&mut set, on_disk);
        let expected = on_disk(&binary.to_string_lossy()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(set.inode_rules.len(), 1);
        assert_eq!(
            (set.inode_rules[0].0.dev, set.inode_rules[0].0.ino),
            expected,
            "the executable, not the link"
        );
    }
}
