//! What the file rules found for recently opened files, so that opening the same file
//! again skips the path's resolution (`bpf_d_path`), its scan and the walk by file
//! identity: the costly part of a managed open.
//!
//! An entry is keyed by the file's dentry and mount, the caller's root, identity and slot,
//! and stamped with everything that could make the same key stand for another path or
//! another rule (`OpenStamp`): the slot's generation, the kernel's rename and mount
//! sequence counts, and the epoch of the file dentry's name bucket, which moves when a
//! dentry in the bucket is given an inode (a freed dentry's address reused by another
//! file). A stamp is read before a judgement (staged in the per-CPU path buffer, not on
//! the stack), so a change during one leaves its entry stale. An entry is used only while
//! its stamp equals the one read at the call; where any part cannot be read, nothing is
//! cached and the full judgement runs.
//!
//! Only rule findings are cached. Live state (quarantine, revoked credentials, grants),
//! the write guard and the verdict's reporting are decided at every call.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel};
use enforcer_common::{
    capacity,
    maps::{OpenCacheEntry, OpenCacheKey, OpenStaged, OpenStamp, dentry_name_id},
};

use crate::{
    maps::{DENTRY_EPOCHS, OPEN_CACHE, SLOT_GENERATION},
    offsets::{
        OFF_DENTRY_HASH_PPREV, OFF_DENTRY_NAME_HASH, OFF_DENTRY_NAME_LEN, OFF_FILE_DENTRY, OFF_FILE_MNT,
        OFF_FS_ROOT_DENTRY, OFF_FS_ROOT_MNT, OFF_FS_SEQ, OFF_TASK_FS, load, offset,
    },
    path::Found,
};

/// Kernel addresses of `rename_lock` and `mount_lock` (set by the agent from
/// `/proc/kallsyms`; 0, the cache is off).
#[unsafe(no_mangle)]
static RENAME_LOCK_ADDR: u64 = 0;
#[unsafe(no_mangle)]
static MOUNT_LOCK_ADDR: u64 = 0;

/// What names the opened file and the caller's root, as the key holds them.
struct Names {
    dentry: *const u8,
    mnt: *const u8,
    root_dentry: *const u8,
    root_mnt: *const u8,
    name_id: u32,
}

/// What an entry gives back: the findings and the path's length.
pub struct Hit {
    pub found: Found,
    pub len: usize,
}

/// The findings cached for an open of `file` (BTF-typed) by `identity` under `slot`, if
/// an entry exists and its stamp is the one read now. The entry is read in place (this
/// runs in its own small stack frame, `lsm::cached_open`).
#[inline(always)]
pub fn get(file: *const u8, identity: u32, slot: u32) -> Option<Hit> {
    let names = names(file)?;
    let entry = OPEN_CACHE.get_ptr(&key(&names, identity, slot))?;
    // SAFETY: a map value valid for the program's run; its fields are read one by one.
    let (stamp, entry) = unsafe { (&(*entry).stamp, &*entry) };
    let holds = SLOT_GENERATION.get(slot).copied() == Some(stamp.generation)
        && epoch(names.name_id) == Some(stamp.dentry_epoch)
        && sequence(&RENAME_LOCK_ADDR) == Some(stamp.rename_seq)
        && sequence(&MOUNT_LOCK_ADDR) == Some(stamp.mount_seq);
    if !holds {
        return None;
    }
    let found = Found {
        read: (entry.read_action, entry.read_rule),
        write: (entry.write_action, entry.write_rule),
        hash: entry.hash,
        proof: entry.proof,
    };
    Some(Hit { found, len: usize::from(entry.len) })
}

/// Stages the key and stamp of an open of `file` in the per-CPU buffer, before the full
/// judgement resolves its path (`valid` 0 where the cache cannot be used).
#[inline(always)]
pub fn stage(staged: *mut OpenStaged, file: *const u8, identity: u32, slot: u32) {
    // SAFETY (all writes): `staged` points into the per-CPU buffer, a map value.
    unsafe { (*staged).valid = 0 };
    let Some(names) = names(file) else { return };
    let Some(stamp) = stamp(&names, slot) else { return };
    unsafe {
        (*staged).stamp = stamp;
        (*staged).key = key(&names, identity, slot);
        (*staged).valid = 1;
    }
}

/// Caches what the full judgement of an open of `file` found (a path of `len` bytes),
/// under the key and stamp staged before it. The caller has checked the buffer is still
/// its own; the key is read again and must be the staged one (the root unchanged).
#[inline(always)]
pub fn put(staged: *const OpenStaged, file: *const u8, identity: u32, slot: u32, found: &Found, len: usize) {
    // SAFETY (all reads): `staged` points into the per-CPU buffer, a map value.
    if unsafe { (*staged).valid } != 1 {
        return;
    }
    let Some(names) = names(file) else { return };
    if key(&names, identity, slot) != unsafe { (*staged).key } {
        return;
    }
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH")]
    let entry = OpenCacheEntry {
        stamp: unsafe { (*staged).stamp },
        hash: found.hash,
        proof: found.proof,
        read_rule: found.read.1,
        write_rule: found.write.1,
        read_action: found.read.0,
        write_action: found.write.0,
        len: len as u16,
        pad: 0,
    };
    // A full map evicts its least used entry; a failed insert only costs the next open
    // a full judgement.
    let _ = OPEN_CACHE.insert(unsafe { &(*staged).key }, &entry, 0);
}

/// The file's dentry and mount and the caller's root; `None` where the cache cannot be
/// used: the file removed from its directory, or the root unreadable or changing.
#[inline(always)]
fn names(file: *const u8) -> Option<Names> {
    // SAFETY (all loads): BTF-typed pointers (the hook's argument, the current task, and
    // pointers loaded from them) at offsets from the kernel's BTF; a load that faults
    // reads 0, refused below wherever 0 cannot be right.
    let (dentry, mnt) =
        unsafe { (load::<*const u8>(file, &OFF_FILE_DENTRY), load::<*const u8>(file, &OFF_FILE_MNT)) };
    if dentry.is_null() || mnt.is_null() {
        return None;
    }
    // An unhashed dentry (its name removed) is shown with a ` (deleted)` suffix: judged
    // in full every time.
    if unsafe { load::<*const u8>(dentry, &OFF_DENTRY_HASH_PPREV) }.is_null() {
        return None;
    }
    let name_id = name_id(dentry);
    let task = unsafe { bpf_get_current_task_btf() }.cast::<u8>().cast_const();
    let fs = unsafe { load::<*const u8>(task, &OFF_TASK_FS) };
    if fs.is_null() {
        return None;
    }
    // The root is read between two reads of its sequence count, as the kernel does: an
    // odd or moved count is a `chroot` or `pivot_root` under way. Volatile, so the
    // compiler keeps the reads in this order (x86 keeps loads in order).
    let before = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
    let (root_dentry, root_mnt) =
        unsafe { (fresh::<*const u8>(fs, &OFF_FS_ROOT_DENTRY), fresh::<*const u8>(fs, &OFF_FS_ROOT_MNT)) };
    let after = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
    if before & 1 != 0 || before != after || root_dentry.is_null() || root_mnt.is_null() {
        return None;
    }
    Some(Names { dentry, mnt, root_dentry, root_mnt, name_id })
}

/// What the findings for `names` under `slot` depend on, read now; `None` if the cache
/// is off or a rename or mount change is under way.
#[inline(always)]
fn stamp(names: &Names, slot: u32) -> Option<OpenStamp> {
    Some(OpenStamp {
        generation: SLOT_GENERATION.get(slot).copied()?,
        dentry_epoch: epoch(names.name_id)?,
        rename_seq: sequence(&RENAME_LOCK_ADDR)?,
        mount_seq: sequence(&MOUNT_LOCK_ADDR)?,
    })
}

#[inline(always)]
fn key(names: &Names, identity: u32, slot: u32) -> OpenCacheKey {
    OpenCacheKey {
        dentry: names.dentry as u64,
        mnt: names.mnt as u64,
        root_dentry: names.root_dentry as u64,
        root_mnt: names.root_mnt as u64,
        name_id: names.name_id,
        identity,
        slot,
        pad: 0,
    }
}

/// The [`dentry_name_id`] of `dentry` (BTF-typed). Plain loads of the kernel's own
/// pointers: a load that faulted would read 0.
#[inline(always)]
pub fn name_id(dentry: *const u8) -> u32 {
    // SAFETY: a BTF-typed pointer at offsets from the kernel's BTF.
    unsafe {
        dentry_name_id(load::<u32>(dentry, &OFF_DENTRY_NAME_HASH), load::<u32>(dentry, &OFF_DENTRY_NAME_LEN))
    }
}

/// `dentry` (BTF-typed) is being given an inode: entries made for any dentry in its
/// bucket are stale from now on.
#[inline(always)]
pub fn dentry_instantiated(dentry: *const u8) {
    if let Some(epoch) = DENTRY_EPOCHS.get_ptr_mut(bucket(name_id(dentry))) {
        // SAFETY: a valid map value; the add is atomic (several CPUs instantiate at once).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(epoch, 1) };
    }
}

/// [`load`], volatile: never merged with or moved across another volatile read.
///
/// # Safety
/// As [`load`].
#[inline(always)]
unsafe fn fresh<T: Copy>(base: *const u8, at: &'static u64) -> T {
    // SAFETY: see `load`.
    unsafe { core::ptr::read_volatile(base.add(offset(at)).cast::<T>()) }
}

#[inline(always)]
fn bucket(name_id: u32) -> u32 {
    name_id & (capacity::DENTRY_EPOCHS - 1)
}

#[inline(always)]
fn epoch(name_id: u32) -> Option<u64> {
    // SAFETY: a plain read of a counter only ever added to atomically.
    DENTRY_EPOCHS.get_ptr(bucket(name_id)).map(|epoch| unsafe { core::ptr::read_volatile(epoch) })
}

/// The sequence count of the kernel sequence lock at `*addr` (its first word); `None` if
/// the address is unknown, the read fails, or a writer holds the lock (odd).
#[inline(always)]
fn sequence(addr: &'static u64) -> Option<u32> {
    // SAFETY: a read of our own global; volatile so the compiler does not fold the 0.
    let at = unsafe { core::ptr::read_volatile(addr) };
    if at == 0 {
        return None;
    }
    // SAFETY: a checked kernel read; a bad address returns an error, never faults.
    let seq = unsafe { bpf_probe_read_kernel(at as *const u32) }.ok()?;
    (seq & 1 == 0).then_some(seq)
}
