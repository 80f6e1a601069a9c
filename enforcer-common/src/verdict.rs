//! Codes that describe a verdict: hooks, decisions, actions, modes, reasons.

/// The LSM or cgroup hook that produced a verdict.
pub mod hook {
    pub const EXEC: u32 = 1;
    pub const FILE_OPEN: u32 = 2;
    pub const CONNECT4: u32 = 3;
    pub const CONNECT6: u32 = 4;
    pub const SENDMSG4: u32 = 5;
    pub const SENDMSG6: u32 = 6;
    /// `clone3(CLONE_INTO_CGROUP)` (LSM `task_alloc`).
    pub const CLONE: u32 = 7;
    /// `bpf()` reaching existing objects (LSM `bpf`).
    pub const BPF: u32 = 8;
    /// A signal to a protected process (LSM `task_kill`).
    pub const TASK_KILL: u32 = 9;
    /// Attaching to another task (LSM `ptrace_access_check`).
    pub const PTRACE: u32 = 10;
    pub const INODE_UNLINK: u32 = 11;
    pub const INODE_RMDIR: u32 = 12;
    pub const INODE_RENAME: u32 = 13;
    /// `mount(2)`, including bind mounts and remounts (LSM `sb_mount`).
    pub const MOUNT: u32 = 14;
    /// `move_mount(2)`: attaching a detached or moving an existing mount.
    pub const MOVE_MOUNT: u32 = 15;
    pub const PIVOT_ROOT: u32 = 16;
    pub const CHROOT: u32 = 17;
    pub const UMOUNT: u32 = 18;
    /// Creating a raw, packet or ICMP socket (LSM `socket_create`).
    pub const SOCKET_CREATE: u32 = 19;
    /// Mapping a file executable (`mmap` with `PROT_EXEC`).
    pub const MMAP_EXEC: u32 = 20;
    /// Making a file mapping executable (`mprotect` adding `PROT_EXEC`).
    pub const MPROTECT_EXEC: u32 = 21;
    pub const INODE_LINK: u32 = 22;
    pub const INODE_CREATE: u32 = 23;
    pub const INODE_MKDIR: u32 = 24;
    pub const INODE_MKNOD: u32 = 25;
    pub const INODE_SYMLINK: u32 = 26;
    pub const PATH_TRUNCATE: u32 = 27;
    pub const PATH_CHMOD: u32 = 28;
    pub const PATH_CHOWN: u32 = 29;
    pub const INODE_SETXATTR: u32 = 30;
    pub const INODE_REMOVEXATTR: u32 = 31;
    /// `connect` to a Unix stream or seqpacket socket bound at a path.
    pub const UNIX_CONNECT: u32 = 32;
    /// `connect` or `sendmsg` to a Unix datagram socket bound at a path.
    pub const UNIX_SEND: u32 = 33;
    /// `bind` of an IPv4 / IPv6 socket to a port (`listen` rules).
    pub const BIND4: u32 = 34;
    pub const BIND6: u32 = 35;
}

/// What happened to the syscall.
pub mod decision {
    pub const ALLOW: u32 = 0;
    pub const DENY: u32 = 1;
    /// Would have been denied; allowed because the policy is in audit mode.
    pub const AUDIT: u32 = 2;
    /// Denied until approved: the rule says `approve` and no grant exists yet.
    pub const PENDING: u32 = 3;
}

/// What a rule or a default says.
pub mod action {
    /// No rule for this access at this key; keep looking.
    pub const NONE: u8 = 0;
    pub const ALLOW: u8 = 1;
    pub const DENY: u8 = 2;
    /// Step-up: denied (decision `pending`) unless a grant exists; the agent opens an
    /// approval request.
    pub const APPROVE: u8 = 3;

    /// How strict an action is: deny over approve over allow (`NONE` lowest).
    #[inline(always)]
    #[must_use]
    #[expect(clippy::inline_always, reason = "BPF-to-BPF calls cost verifier state; inlined on purpose")]
    pub const fn rank(a: u8) -> u8 {
        match a {
            DENY => 3,
            APPROVE => 2,
            ALLOW => 1,
            _ => 0,
        }
    }

    /// The stricter of two `(action, rule)` findings; `NONE` yields to the other.
    #[inline(always)]
    #[must_use]
    #[expect(clippy::inline_always, reason = "BPF-to-BPF calls cost verifier state; inlined on purpose")]
    pub const fn stricter(a: (u8, u32), b: (u8, u32)) -> (u8, u32) {
        if rank(b.0) > rank(a.0) { b } else { a }
    }
}

/// Policy mode.
pub mod mode {
    pub const ENFORCE: u8 = 0;
    pub const AUDIT: u8 = 1;
}

/// Why the decision was taken.
pub mod reason {
    /// A rule matched; the event's `rule` field says which.
    pub const RULE: u32 = 0;
    /// No rule matched; the resource default applied.
    pub const DEFAULT: u32 = 1;
    /// The path did not fit in `MAX_PATH` bytes; denied without judging.
    pub const PATH_TOO_LONG: u32 = 2;
    /// The kernel program could not complete its lookup; denied (fail-closed).
    pub const INTERNAL_ERROR: u32 = 3;
    /// The identity is quarantined and its quarantine restricts this access.
    pub const QUARANTINED: u32 = 4;
    /// The file is a revoked credential, denied to every identity.
    pub const CREDENTIAL_REVOKED: u32 = 5;
    /// The policy denies, but a time-bound grant (the event's `rule`) allows until it
    /// expires.
    pub const GRANT: u32 = 6;
    /// A managed task tried to leave its identity: move tasks to a cgroup of another
    /// identity (or none), start a child in one, or rename a cgroup.
    pub const IDENTITY_ESCAPE: u32 = 7;
    /// A managed task tried to reach the enforcer itself: its BPF objects and pins, its
    /// state, socket or log, or its process.
    pub const SELF_PROTECTION: u32 = 8;
    /// A managed task tried to act through a task of another identity (ptrace,
    /// `pidfd_getfd`, `process_vm_writev`, `/proc/PID/mem`).
    pub const CROSS_IDENTITY: u32 = 9;
    /// The per-CPU path buffer was reused by another task while the program was
    /// preempted; denied (fail-closed) rather than judged on a foreign path.
    pub const BUSY: u32 = 10;
    /// An operation managed tasks may not do unless their policy allows it: mounting or
    /// changing the root, raw/packet/ICMP sockets, executing a file with no path.
    pub const RESTRICTED: u32 = 11;
    /// The path's index matched a rule, grant or revoked credential but its keyed proof
    /// did not: a forged path. Denied (fail-closed).
    pub const FORGED_PATH: u32 = 12;
    /// A container runtime a policy names (`spec.runtimes`) executing a memfd copy of
    /// itself during its set-up; allowed.
    pub const RUNTIME: u32 = 13;

    /// Denials that hold even in audit mode: live state, and the integrity of identities
    /// and of the enforcer.
    #[must_use]
    pub const fn is_live(reason: u32) -> bool {
        matches!(
            reason,
            QUARANTINED | CREDENTIAL_REVOKED | IDENTITY_ESCAPE | SELF_PROTECTION | CROSS_IDENTITY
        )
    }
}

/// What a quarantine restricts (bits of [`crate::maps::Quarantine::restricts`]).
pub mod restrict {
    pub const EXEC: u32 = 1;
    pub const FILE_READ: u32 = 2;
    pub const FILE_WRITE: u32 = 4;
    pub const NETWORK: u32 = 8;
}

/// File access bits, judged from the mode the file is opened with.
pub mod access {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
}

/// Transport protocol of a network rule or verdict.
pub mod proto {
    pub const ANY: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// The `rule` value of a verdict decided by a resource default.
pub const RULE_DEFAULT: u32 = u32::MAX;

/// Identity flag: emit events for allowed accesses too.
pub const IDENTITY_LOG_ALLOW: u32 = 1;
/// Identity flag: its tasks may move tasks between cgroups, start children in other
/// cgroups and rename cgroups (supervisors such as container runtimes).
pub const IDENTITY_ALLOW_MOVES: u32 = 2;
/// Identity flag: its tasks may mount, unmount, move mounts, `pivot_root` and `chroot`.
pub const IDENTITY_ALLOW_MOUNTS: u32 = 4;
/// Identity flag: its tasks may create raw, packet and ICMP sockets.
pub const IDENTITY_ALLOW_RAW_SOCKETS: u32 = 8;
/// Identity flag: its tasks may execute files that have no path (memfd, deleted,
/// `O_TMPFILE`).
pub const IDENTITY_ALLOW_FILELESS_EXEC: u32 = 16;
/// Identity flag: its policy names container runtimes (`spec.runtimes`), whose process
/// trees may mount and execute themselves from a memfd until they execute a program.
pub const IDENTITY_HAS_RUNTIMES: u32 = 32;

/// Index into the per-CPU statistics map.
pub mod stat {
    pub const ALLOW: u32 = 0;
    pub const DENY: u32 = 1;
    pub const AUDIT: u32 = 2;
    /// A managed access that no rule matched, decided by the default.
    pub const DEFAULT_FALLBACK: u32 = 3;
    /// A verdict event that could not be delivered: the ring buffer was full, or the
    /// per-CPU buffer it was built in was reused by a program that preempted its builder.
    pub const EVENTS_DROPPED: u32 = 4;
    pub const PATH_TOO_LONG: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    /// A caller's cgroup resolved to no identity (the first call from it on a CPU, or the
    /// first after a binding change); the calls its identity line then answers are not
    /// counted, so that an unmanaged call costs its line lookup and nothing else.
    pub const UNMANAGED: u32 = 7;
    /// Accesses denied because the identity is quarantined.
    pub const QUARANTINED: u32 = 8;
    /// Opens denied because the file is a revoked credential.
    pub const CREDENTIAL_REVOKED: u32 = 9;
    /// Denials turned into allows by an unexpired grant.
    pub const GRANTED: u32 = 10;
    /// Refusals with reason `identity-escape` or `cross-identity`.
    pub const IDENTITY_ESCAPE: u32 = 11;
    /// Refusals with reason `self-protection`.
    pub const SELF_PROTECTION: u32 = 12;
    /// Refusals with reason `restricted`.
    pub const RESTRICTED: u32 = 13;
    /// Managed opens judged from the open cache's findings (no path resolution or scan).
    pub const OPEN_CACHE_HITS: u32 = 14;
    /// Managed execs and executable mappings judged from the cache's findings (no path
    /// resolution or scan).
    pub const EXEC_CACHE_HITS: u32 = 15;
    pub const COUNT: u32 = 16;
    pub const NAMES: [&str; COUNT as usize] = [
        "allow",
        "deny",
        "audit",
        "default_fallback",
        "events_dropped",
        "path_too_long",
        "internal_error",
        "unmanaged_resolved",
        "quarantined",
        "credential_revoked",
        "granted",
        "identity_escape",
        "self_protection",
        "restricted",
        "open_cache_hits",
        "exec_cache_hits",
    ];
}
