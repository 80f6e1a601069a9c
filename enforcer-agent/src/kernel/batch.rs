//! Batched writes to hash maps: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux
//! 5.6+) take many entries in one `bpf(2)` call instead of one call each.
//!
//! aya 0.16 does not offer these commands, and no maintained crate wraps them for a map
//! descriptor aya owns, so this module makes the call itself. Hash maps have their own
//! batch code; an LPM trie takes the kernel's generic one (each entry written in turn, all
//! within the one call).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `bpf(2)` commands (`enum bpf_cmd` in `include/uapi/linux/bpf.h`).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Adds or replaces `entries` (`BPF_ANY`). The map's key and value sizes must be those of
/// `K` and `V`, as aya checked when it typed the map.
pub fn update<K: aya::Pod, V: aya::Pod>(map: BorrowedFd<'_>, entries: &[(K, V)]) -> io::Result<()> {
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let mut done = 0;
    while done < keys.len() {
        match call(BPF_MAP_UPDATE_BATCH, map, &keys[done..], Some(&values[done..])) {
            Ok(()) => return Ok(()),
            // Interrupted part-way: the kernel says how many it took; go on from there.
            Err((e, count)) if e.kind() == io::ErrorKind::Interrupted => done += count,
            Err((e, _)) => return Err(e),
        }
    }
    Ok(())
}

/// Removes `keys`; a key the map does not hold is skipped.
pub fn delete<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    let mut done = 0;
    while done < keys.len() {
        match call::<K, K>(BPF_MAP_DELETE_BATCH, map, &keys[done..], None) {
            Ok(()) => return Ok(()),
            // The kernel stops at a missing key, having removed the `count` before it.
            Err((e, count)) if e.raw_os_error() == Some(libc::ENOENT) => done += count + 1,
            Err((e, count)) if e.kind() == io::ErrorKind::Interrupted => done += count,
            Err((e, _)) => return Err(e),
        }
    }
    Ok(())
}

/// One batch call; on failure, the error and how many entries the kernel processed.
fn call<K: aya::Pod, V: aya::Pod>(
    command: libc::c_long,
    map: BorrowedFd<'_>,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<(), (io::Error, usize)> {
    let count = u32::try_from(keys.len()).map_err(|_| (io::Error::from(io::ErrorKind::InvalidInput), 0))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count,
        map_fd: u32::try_from(map.as_raw_fd()).expect("descriptors are not negative"),
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; `keys` (and `values`,
    // as long as `keys`) are live slices of plain-data entries the map's sizes describe, the
    // kernel only reads them, and it writes back only `attr.count`.
    let result = unsafe {
        libc::syscall(libc::SYS_bpf, command, std::ptr::from_mut(&mut attr), std::mem::size_of::<BatchAttr>())
    };
    if result < 0 {
        return Err((io::Error::last_os_error(), attr.count as usize));
    }
    Ok(())
}
