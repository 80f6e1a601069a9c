//! Decoding verdict events from the ring buffer.

use enforcer_common::{
    ABI_VERSION,
    event::{CgroupEvent, EVENT_CGROUP_MKDIR, EVENT_VERDICT, VERDICT_HEADER, VerdictEvent},
    verdict::hook,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event of {0} bytes is shorter than a verdict ({1} bytes)")]
    Short(usize, usize),
    #[error("event ABI {0} does not match the agent's ABI {ABI_VERSION}")]
    Abi(u16),
    #[error("unknown event kind {0}")]
    Kind(u16),
    #[error("verdict names {0} path bytes but carries {1}")]
    Truncated(u32, usize),
}

/// A record of the ring buffer.
pub enum Event {
    Verdict(Box<VerdictEvent>),
    /// A cgroup was created: its id and path relative to its hierarchy's root.
    CgroupCreated {
        cgroup_id: u64,
        path: String,
    },
}

/// Decodes any record of the ring buffer, checking ABI and kind.
pub fn decode_any(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header = bytes.get(..4).ok_or(DecodeError::Short(bytes.len(), 4))?;
    let (abi, kind) =
        (u16::from_ne_bytes([header[0], header[1]]), u16::from_ne_bytes([header[2], header[3]]));
    if abi != ABI_VERSION {
        return Err(DecodeError::Abi(abi));
    }
    match kind {
        EVENT_VERDICT => decode(bytes).map(|e| Event::Verdict(Box::new(e))),
        EVENT_CGROUP_MKDIR => {
            let size = size_of::<CgroupEvent>();
            if bytes.len() < size {
                return Err(DecodeError::Short(bytes.len(), size));
            }
            // SAFETY: length checked; plain old data; records are only 8-byte aligned.
            let event = unsafe { bytes.as_ptr().cast::<CgroupEvent>().read_unaligned() };
            let len = (event.path_len as usize).min(event.path.len());
            let path = String::from_utf8_lossy(&event.path[..len]).into_owned();
            Ok(Event::CgroupCreated { cgroup_id: event.cgroup_id, path })
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// Copies a raw ring-buffer record into a [`VerdictEvent`], checking ABI and kind. A
/// record is the event's header and the `path_len` path bytes in use; the rest of `path`
/// is left zero.
pub fn decode(bytes: &[u8]) -> Result<VerdictEvent, DecodeError> {
    if bytes.len() < VERDICT_HEADER {
        return Err(DecodeError::Short(bytes.len(), VERDICT_HEADER));
    }
    // SAFETY: all-zero is a valid VerdictEvent (plain old data).
    let mut event: VerdictEvent = unsafe { std::mem::zeroed() };
    let used = bytes.len().min(size_of::<VerdictEvent>());
    // SAFETY: `used` bytes fit in both; any bit pattern is a valid VerdictEvent; a byte
    // copy because ring-buffer records are only 8-byte aligned.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut event).cast::<u8>(), used) };
    if event.abi != ABI_VERSION {
        return Err(DecodeError::Abi(event.abi));
    }
    if event.kind != EVENT_VERDICT {
        return Err(DecodeError::Kind(event.kind));
    }
    let carried = used - VERDICT_HEADER;
    if event.path_len as usize > carried {
        return Err(DecodeError::Truncated(event.path_len, carried));
    }
    Ok(event)
}

/// The path carried by an exec or file verdict.
pub fn path(event: &VerdictEvent) -> String {
    let len = (event.path_len as usize).min(event.path.len());
    String::from_utf8_lossy(&event.path[..len]).into_owned()
}

/// The task's command name.
pub fn comm(event: &VerdictEvent) -> String {
    let len = event.comm.iter().position(|&b| b == 0).unwrap_or(event.comm.len());
    String::from_utf8_lossy(&event.comm[..len]).into_owned()
}

/// The name of a hook code in verdicts and diagnostics.
pub fn hook_name(code: u32) -> &'static str {
    match code {
        hook::EXEC => "exec",
        hook::FILE_OPEN => "file_open",
        hook::CONNECT4 => "connect4",
        hook::CONNECT6 => "connect6",
        hook::SENDMSG4 => "sendmsg4",
        hook::SENDMSG6 => "sendmsg6",
        hook::CLONE => "clone",
        hook::BPF => "bpf",
        hook::TASK_KILL => "task_kill",
        hook::PTRACE => "ptrace",
        hook::INODE_UNLINK => "unlink",
        hook::INODE_RMDIR => "rmdir",
        hook::INODE_RENAME => "rename",
        hook::MOUNT => "mount",
        hook::MOVE_MOUNT => "move_mount",
        hook::PIVOT_ROOT => "pivot_root",
        hook::CHROOT => "chroot",
        hook::UMOUNT => "umount",
        hook::SOCKET_CREATE => "socket_create",
        hook::MMAP_EXEC => "mmap_exec",
        hook::MPROTECT_EXEC => "mprotect_exec",
        hook::INODE_LINK => "link",
        hook::INODE_CREATE => "create",
        hook::INODE_MKDIR => "mkdir",
        hook::INODE_MKNOD => "mknod",
        hook::INODE_SYMLINK => "symlink",
        hook::PATH_TRUNCATE => "truncate",
        hook::PATH_CHMOD => "chmod",
        hook::PATH_CHOWN => "chown",
        hook::INODE_SETXATTR => "setxattr",
        hook::INODE_REMOVEXATTR => "removexattr",
        hook::UNIX_CONNECT => "unix_connect",
        hook::UNIX_SEND => "unix_send",
        hook::BIND4 => "bind4",
        hook::BIND6 => "bind6",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the kernel sends: the header and the path bytes in use.
    fn raw(abi: u16, kind: u16) -> Vec<u8> {
        // SAFETY: all-zero is a valid VerdictEvent.
        let mut event: VerdictEvent = unsafe { std::mem::zeroed() };
        event.abi = abi;
        event.kind = kind;
        event.path[..4].copy_from_slice(b"/etc");
        event.path_len = 4;
        event.comm[..3].copy_from_slice(b"cat");
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), VERDICT_HEADER + 4) }.to_vec()
    }

    #[test]
    fn decodes_a_verdict() {
        let event = decode(&raw(ABI_VERSION, EVENT_VERDICT)).unwrap();
        assert_eq!(path(&event), "/etc");
        assert_eq!(comm(&event), "cat");
    }

    #[test]
    fn decodes_a_verdict_without_path_bytes() {
        let mut bytes = raw(ABI_VERSION, EVENT_VERDICT);
        bytes.truncate(VERDICT_HEADER);
        // A network verdict: no path.
        let at = std::mem::offset_of!(VerdictEvent, path_len);
        bytes[at..at + 4].copy_from_slice(&0u32.to_ne_bytes());
        let event = decode(&bytes).unwrap();
        assert_eq!(path(&event), "");
    }

    #[test]
    fn rejects_short_wrong_abi_kind_and_truncated_path() {
        assert!(matches!(decode(&[0; 8]), Err(DecodeError::Short(8, _))));
        assert_eq!(
            decode(&raw(ABI_VERSION + 1, EVENT_VERDICT)).err(),
            Some(DecodeError::Abi(ABI_VERSION + 1))
        );
        assert_eq!(decode(&raw(ABI_VERSION, 9)).err(), Some(DecodeError::Kind(9)));
        let mut cut = raw(ABI_VERSION, EVENT_VERDICT);
        cut.truncate(VERDICT_HEADER + 2);
        assert_eq!(decode(&cut).err(), Some(DecodeError::Truncated(4, 2)));
    }
}
