//! Verdict records: kernel events turned into JSON-line objects.

use std::net::{IpAddr, Ipv6Addr};

use enforcer_common::{
    event::VerdictEvent,
    verdict::{RULE_DEFAULT, access, decision, hook, proto, reason},
};
use serde::Serialize;

pub mod aggregate;
pub mod clock;
pub mod directory;
pub mod processes;

use crate::{
    daemon::identity::kubepods::PodRef,
    kernel::events::{self, hook_name},
};
use clock::Clock;
use directory::Directory;
use processes::Processes;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Target {
    Path {
        path: String,
        access: Vec<&'static str>,
    },
    Net {
        address: String,
        port: u16,
        protocol: String,
    },
    /// A signal or ptrace target.
    Process {
        process: u32,
    },
    /// A `bpf()` command.
    Bpf {
        command: &'static str,
    },
    /// A file changed by a write-class operation other than an open (unlink, rename,
    /// link, create, truncate, chmod, chown, xattrs): its last path component.
    Change {
        name: String,
        access: Vec<&'static str>,
    },
    /// A mount operation: the source of a mount (device, or directory of a bind mount) or
    /// the last component of the mount point or new root; `flags` of mount/umount.
    Mount {
        name: String,
        flags: u32,
    },
    /// A raw, packet or ICMP socket.
    Socket {
        family: &'static str,
        #[serde(rename = "type")]
        socket_type: &'static str,
        protocol: u32,
    },
    /// An unlinked, removed or renamed directory entry (its last path component), a file
    /// made executable by `mprotect`, or a clone into another cgroup (no name).
    Entry {
        name: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct VerdictRecord {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub hook: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
    pub identity: Option<String>,
    pub policy: Option<String>,
    /// `file[2]`, `network[0]`, … or `default`.
    pub rule: String,
    pub generation: u64,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub executable: Option<String>,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    /// Kubernetes: the pod, container and service account of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    pub target: Target,
    pub errno: i32,
    /// An aggregated record: how many calls it stands for, all identical to the full
    /// record it repeats except for the process fields and the time (absent: one call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// An aggregated record: the first and last of those calls.
    #[serde(rename = "firstTime", skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
    #[serde(rename = "lastTime", skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
}

impl VerdictRecord {
    /// The aggregated record of `repeats` of this record's verdict.
    #[must_use]
    pub fn repeated(&self, repeats: &aggregate::Repeats, clock: &Clock) -> Self {
        let last = clock.wall(repeats.last_ns);
        Self {
            time: last.clone(),
            count: Some(repeats.count),
            first_time: Some(clock.wall(repeats.first_ns)),
            last_time: Some(last),
            ..self.clone()
        }
    }
}

impl crate::daemon::verdict_log::LogRecord for VerdictRecord {
    fn kind(&self) -> &str {
        self.kind
    }
    fn time(&self) -> &str {
        &self.time
    }
    fn verdict(&self) -> Option<crate::daemon::verdict_log::VerdictFields<'_>> {
        Some((self.identity.as_deref(), self.policy.as_deref(), Some(self.decision), Some(self.hook)))
    }
}

/// Names of the `bpf()` commands the kernel programs refuse to managed tasks.
fn bpf_command(code: u32) -> &'static str {
    match code {
        7 => "BPF_OBJ_GET",
        9 => "BPF_PROG_DETACH",
        13 => "BPF_PROG_GET_FD_BY_ID",
        14 => "BPF_MAP_GET_FD_BY_ID",
        19 => "BPF_BTF_GET_FD_BY_ID",
        30 => "BPF_LINK_GET_FD_BY_ID",
        34 => "BPF_LINK_DETACH",
        _ => "unknown",
    }
}

fn decision_name(code: u32) -> &'static str {
    match code {
        decision::ALLOW => "allow",
        decision::DENY => "deny",
        decision::AUDIT => "audit",
        decision::PENDING => "pending",
        _ => "unknown",
    }
}

fn reason_name(code: u32) -> &'static str {
    match code {
        reason::RULE => "rule",
        reason::DEFAULT => "default",
        reason::PATH_TOO_LONG => "path-too-long",
        reason::INTERNAL_ERROR => "internal-error",
        reason::QUARANTINED => "quarantined",
        reason::CREDENTIAL_REVOKED => "credential-revoked",
        reason::GRANT => "grant",
        reason::IDENTITY_ESCAPE => "identity-escape",
        reason::SELF_PROTECTION => "self-protection",
        reason::CROSS_IDENTITY => "cross-identity",
        reason::BUSY => "busy",
        reason::RESTRICTED => "restricted",
        reason::FORGED_PATH => "forged-path",
        reason::RUNTIME => "runtime",
        _ => "unknown",
    }
}

fn rule_name(hook_code: u32, rule: u32) -> String {
    if rule == RULE_DEFAULT {
        return "default".to_owned();
    }
    let resource = match hook_code {
        hook::EXEC | hook::MMAP_EXEC | hook::MPROTECT_EXEC => "exec",
        hook::CONNECT4 | hook::CONNECT6 | hook::SENDMSG4 | hook::SENDMSG6 => "network",
        hook::BIND4 | hook::BIND6 => "listen",
        _ => "file",
    };
    format!("{resource}[{rule}]")
}

fn address(bytes: [u8; 16]) -> String {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4).to_string(),
        None => v6.to_string(),
    }
}

/// The access bits of a file verdict, by name.
fn accesses(bits: u32) -> Vec<&'static str> {
    let mut list = Vec::new();
    if bits & access::READ != 0 {
        list.push("read");
    }
    if bits & access::WRITE != 0 {
        list.push("write");
    }
    list
}

/// A socket creation verdict: the kernel packs family, type and protocol into `access`.
fn socket(packed: u32) -> Target {
    let family = match (packed >> 16) & 0xff {
        2 => "inet",
        10 => "inet6",
        17 => "packet",
        _ => "other",
    };
    let socket_type = match (packed >> 8) & 0xff {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        _ => "other",
    };
    Target::Socket { family, socket_type, protocol: packed & 0xff }
}

/// Builds the record. `clock` converts the event's boot-time stamp to wall-clock time.
pub fn build(
    event: &VerdictEvent,
    directory: &Directory,
    clock: &Clock,
    processes: &mut Processes,
) -> VerdictRecord {
    let (ppid, executable) = processes.get(event.pid);
    let names = directory.names(event.generation, event.identity);
    let target = match event.hook {
        hook::EXEC | hook::FILE_OPEN | hook::MMAP_EXEC => {
            let mut list = accesses(event.access);
            if event.hook != hook::FILE_OPEN {
                list.insert(0, "exec");
            }
            Target::Path { path: events::path(event), access: list }
        }
        hook::TASK_KILL | hook::PTRACE => Target::Process { process: event.access },
        hook::BPF => Target::Bpf { command: bpf_command(event.access) },
        // Refused by an integrity rule before any file rule: an entry, no access.
        hook::INODE_UNLINK | hook::INODE_RMDIR | hook::INODE_RENAME if event.access == 0 => {
            Target::Entry { name: events::path(event) }
        }
        hook::CLONE | hook::MPROTECT_EXEC => Target::Entry { name: events::path(event) },
        hook::INODE_UNLINK
        | hook::INODE_RMDIR
        | hook::INODE_RENAME
        | hook::INODE_LINK
        | hook::INODE_CREATE
        | hook::INODE_MKDIR
        | hook::INODE_MKNOD
        | hook::INODE_SYMLINK
        | hook::PATH_TRUNCATE
        | hook::PATH_CHMOD
        | hook::PATH_CHOWN
        | hook::INODE_SETXATTR
        | hook::INODE_REMOVEXATTR
        | hook::UNIX_CONNECT
        | hook::UNIX_SEND => Target::Change { name: events::path(event), access: accesses(event.access) },
        hook::MOUNT | hook::MOVE_MOUNT | hook::PIVOT_ROOT | hook::CHROOT | hook::UMOUNT => {
            Target::Mount { name: events::path(event), flags: event.access }
        }
        hook::SOCKET_CREATE => socket(event.access),
        _ => Target::Net {
            address: address(event.addr),
            port: event.port,
            protocol: match event.proto {
                proto::TCP => "tcp".to_owned(),
                proto::UDP => "udp".to_owned(),
                other => other.to_string(),
            },
        },
    };
    VerdictRecord {
        time: clock.wall(event.boot_ns),
        kind: "verdict",
        hook: hook_name(event.hook),
        decision: decision_name(event.decision),
        reason: reason_name(event.reason),
        identity: names.map(|n| n.0.clone()),
        policy: names.map(|n| n.1.clone()),
        rule: match event.reason {
            reason::QUARANTINED => "quarantine".to_owned(),
            reason::CREDENTIAL_REVOKED => format!("credential[{}]", event.rule),
            reason::GRANT => format!("grant[{}]", event.rule),
            reason::IDENTITY_ESCAPE | reason::CROSS_IDENTITY => "identity".to_owned(),
            reason::SELF_PROTECTION => "self-protection".to_owned(),
            reason::RESTRICTED => "restricted".to_owned(),
            _ => rule_name(event.hook, event.rule),
        },
        generation: event.generation,
        pid: event.pid,
        ppid,
        uid: event.uid,
        gid: event.gid,
        comm: events::comm(event),
        executable,
        cgroup_id: event.cgroup_id,
        cgroup: directory.cgroups.get(&event.cgroup_id).cloned(),
        pod: directory.cgroups.get(&event.cgroup_id).and_then(|path| directory.pods.reference(path)),
        target,
        errno: event.errno,
        count: None,
        first_time: None,
        last_time: None,
    }
}

/// Parent pid from /proc (None once the process is gone).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rules_and_addresses() {
        assert_eq!(rule_name(hook::FILE_OPEN, 2), "file[2]");
        assert_eq!(rule_name(hook::CONNECT6, 0), "network[0]");
        assert_eq!(rule_name(hook::EXEC, RULE_DEFAULT), "default");
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(address(mapped), "10.0.0.1");
        assert_eq!(address(Ipv6Addr::LOCALHOST.octets()), "::1");
    }

    #[test]
    fn builds_a_record_with_names() {
        // SAFETY: all-zero is a valid VerdictEvent.
        let mut event: VerdictEvent = unsafe { std::mem::zeroed() };
        event.hook = hook::FILE_OPEN;
        event.decision = decision::DENY;
        event.identity = 3;
        event.generation = 5;
        event.rule = 1;
        event.access = access::READ | access::WRITE;
        event.errno = 1;
        event.cgroup_id = 77;
        event.pid = std::process::id();
        event.path[..4].copy_from_slice(b"/etc");
        event.path_len = 4;
        let mut directory = Directory::default();
        directory.generations.insert(5, [(3, ("ci".to_owned(), "ci-policy".to_owned()))].into());
        directory.cgroups.insert(77, "/ci".to_owned());
        let record = build(&event, &directory, &Clock::now(), &mut Processes::default());
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["identity"], "ci");
        assert_eq!(json["policy"], "ci-policy");
        assert_eq!(json["rule"], "file[1]");
        assert_eq!(json["decision"], "deny");
        assert_eq!(json["cgroup"], "/ci");
        assert_eq!(json["target"]["path"], "/etc");
        assert_eq!(json["target"]["access"], serde_json::json!(["read", "write"]));
        assert!(json["ppid"].as_u64().is_some());
        assert!(json["executable"].as_str().is_some());
    }

    /// Every hook the kernel programs report has a name and the target shape its
    /// verdicts carry.
    #[test]
    fn every_hook_has_a_name_and_its_target() {
        let target_of = |code: u32, access: u32| {
            // SAFETY: all-zero is a valid VerdictEvent.
            let mut event: VerdictEvent = unsafe { std::mem::zeroed() };
            event.hook = code;
            event.access = access;
            event.path[..1].copy_from_slice(b"s");
            event.path_len = 1;
            let record = build(&event, &Directory::default(), &Clock::now(), &mut Processes::default());
            serde_json::to_value(&record.target).unwrap()
        };
        for code in 1..=35 {
            assert_ne!(hook_name(code), "unknown", "hook {code} has no name");
        }
        for code in [hook::INODE_LINK, hook::PATH_CHMOD, hook::UNIX_CONNECT, hook::UNIX_SEND] {
            assert_eq!(target_of(code, access::WRITE), serde_json::json!({"name": "s", "access": ["write"]}));
        }
        assert_eq!(
            target_of(hook::INODE_UNLINK, 0),
            serde_json::json!({"name": "s"}),
            "an integrity refusal"
        );
        assert_eq!(target_of(hook::MOUNT, 4096), serde_json::json!({"name": "s", "flags": 4096}));
        assert_eq!(
            target_of(hook::SOCKET_CREATE, (17 << 16) | (3 << 8)),
            serde_json::json!({"family": "packet", "type": "raw", "protocol": 0})
        );
        assert_eq!(target_of(hook::MMAP_EXEC, 0)["access"], serde_json::json!(["exec"]));
        assert_eq!(target_of(hook::BIND4, 0)["port"], 0);
        assert_eq!(rule_name(hook::BIND6, 1), "listen[1]");
        assert_eq!(rule_name(hook::MMAP_EXEC, 0), "exec[0]");
        assert_eq!(rule_name(hook::UNIX_CONNECT, 0), "file[0]");
    }
}
