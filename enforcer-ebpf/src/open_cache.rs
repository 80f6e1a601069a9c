//! What the file rules found for recently opened files, and the exec rules for recently
//! executed ones, so that opening or executing the same file again skips the path's
//! resolution (`bpf_d_path`), its scan and the walk by file identity: the costly part of
//! a managed open or exec.
//!
//! An entry is keyed by the file's mount and dentry, identity, kind of rules
//! (`cache_kind`) and slot, and stamped with
//! everything that could make the same key stand for another path or another rule
//! (`OpenStamp`): the slot's generation, the caller's root, the count of directory moves
//! (`renames`) and the kernel's mount sequence count, and the epoch of the file dentry's
//! name bucket, which moves when a dentry in the bucket is given an inode (a freed
//! dentry's address reused by another file) and when one is moved (the file renamed). A
//! stamp is read before a judgement (staged in the per-CPU path buffer, not on the
//! stack), so a change during one leaves its entry stale. An entry is used only while its
//! stamp equals the one read at the call and no dentry move is under way; where any part
//! cannot be read, nothing is cached and the full judgement runs.
//!
//! Each key has one element of the map (`OpenCacheKey::index`); keys that share it take
//! turns. An entry holds its key and is read and written under a sequence count
//! (`OpenCacheEntry`): another CPU can be writing the element a program is reading, and a
//! reader that sees a write under way, or another key's entry, judges in full.
//!
//! Only rule findings are cached. Live state (quarantine, revoked credentials, grants),
//! the write guard and the verdict's reporting are decided at every call.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::helpers::bpf_probe_read_kernel;
use enforcer_common::{
    capacity,
    maps::{
        OPEN_CACHE_WORDS, OpenCache, OpenCacheEntry, OpenCacheKey, OpenFindings, OpenStaged, OpenStamp,
        dentry_name_id, opened, word,
    },
};

use crate::{
    fast_path::{self, Line},
    identity::current_task,
    maps::slot_generation,
    offsets::{
        OFF_DENTRY_HASH_PPREV, OFF_DENTRY_NAME_HASH, OFF_DENTRY_NAME_LEN, OFF_FILE_DENTRY, OFF_FILE_MNT,
        OFF_FS_ROOT_DENTRY, OFF_FS_ROOT_MNT, OFF_FS_SEQ, OFF_TASK_FS, load, offset,
    },
    path::Found,
    policy::Subject,
};

/// Kernel address of `mount_lock` (set by the agent from `/proc/kallsyms`; 0, the cache
/// is off).
#[unsafe(no_mangle)]
static MOUNT_LOCK_ADDR: u64 = 0;

/// The entries and the dentry epochs (`enforcer_common::maps::OpenCache`), in a section
/// of their own, which the loader makes a map of one element: an element's address is
/// computed in line, with no lookup, bounds check or missing element to branch on.
#[unsafe(link_section = ".bss.open_cache")]
static mut CACHE: OpenCache = {
    // SAFETY: integers and arrays of integers, for which all zeros is a valid value (a
    // zeroed entry matches no key).
    unsafe { core::mem::zeroed() }
};

// `opened_now` turns an open's four pointers into numbers in the first four words it
// keeps, in this order.
const _: () =
    assert!(opened::MNT == 0 && opened::DENTRY == 1 && opened::ROOT_MNT == 2 && opened::ROOT_DENTRY == 3);

const _: () = assert!(capacity::OPEN_CACHE.is_power_of_two() && capacity::DENTRY_EPOCHS.is_power_of_two());

/// The element of `index` (`OpenCacheKey::index`, masked into the entries).
#[inline(always)]
fn element(index: u32) -> *mut OpenCacheEntry {
    // The mask is applied to a value the compiler cannot see through, so it stays in the
    // code: the index ends with an `^`, after which 6.1's verifier knows no bounds (and
    // refuses the address), while the compiler, knowing the index is in range, would
    // drop a mask of its own.
    let mut index = u64::from(index);
    // SAFETY: register moves only.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) index, options(pure, nomem, nostack)) };
    #[expect(clippy::cast_possible_truncation, reason = "masked into the entries")]
    let index = (index & u64::from(capacity::OPEN_CACHE - 1)) as usize;
    // SAFETY: an element of our own global, addressed, not read.
    unsafe { &raw mut CACHE.entries[index] }
}

/// The epoch of the bucket of dentries named `name_id`.
#[inline(always)]
fn epoch_word(name_id: u32) -> *mut u64 {
    // SAFETY: an element of our own global, addressed, not read.
    unsafe { &raw mut CACHE.dentry_epochs[bucket(name_id) as usize] }
}

/// What an entry gives back for a read: the rule found for reading (action, index),
/// the path's hash and keyed proof, and its length.
pub struct Hit {
    pub read: (u8, u32),
    pub hash: u64,
    pub proof: u64,
    pub len: usize,
}

/// The findings of `kind` cached for `file` (BTF-typed) and `identity` under `slot`, if
/// an entry for its key exists, it was read whole, and its stamp is the one read now for
/// `task`, the current task (BTF-typed). Each word is read once (the element can be
/// rewritten meanwhile, see `OpenCacheEntry`).
#[inline(always)]
pub fn get(file: *const u8, task: *const u8, identity: u32, kind: u32, slot: u32) -> Option<Hit> {
    let (key, root) = key_now::<true>(file, task, identity, kind, slot)?;
    // The stamp of now first: the helper calls it takes come before the entry's words
    // are read, which then stay in registers (this runs in the small stack frame of
    // `lsm::cached`).
    let now = stamp(key.name_id, root, slot)?;
    let entry = element(key.index());
    let (
        seq,
        mut same,
        [generation, dentry_epoch, root_mnt, root_dentry, sequences, hash, proof, rules, marks],
    ) = read_entry(entry, &key);
    // The stamp compared as `OpenFindings::words` packed it.
    same &= generation == now.generation;
    same &= dentry_epoch == now.dentry_epoch;
    same &= root_mnt == now.root_mnt;
    same &= root_dentry == now.root_dentry;
    same &= sequences == u64::from(now.rename_seq) | u64::from(now.mount_seq) << 32;
    // SAFETY: our own global, read once more after the words.
    same &= seq & 1 == 0 && unsafe { read_volatile(&raw const (*entry).seq) } == seq;
    if !same {
        return None;
    }
    #[expect(clippy::cast_possible_truncation, reason = "unpacking what OpenFindings::words packed")]
    Some(Hit { read: (marks as u8, rules as u32), hash, proof, len: usize::from((marks >> 16) as u16) })
}

/// What a managed open for reading reads for the open cache besides the entry: its key's
/// file part and the stamp of now, the pointers as numbers, and `bad`, 0 only if every
/// part was read whole. Kept in the CPU's record ([`remember`]) for the exec that follows
/// the kernel's own open of a program ([`recalled`]).
pub struct Opened {
    pub mnt: u64,
    pub dentry: u64,
    pub name_id: u64,
    pub root_mnt: u64,
    pub root_dentry: u64,
    /// The directory move count in the low half, the mount count in the high half.
    pub sequences: u64,
    pub dentry_epoch: u64,
    pub bad: u64,
}

/// [`Opened`] for `file` (BTF-typed) and `task`, the current task (BTF-typed), read now
/// without a branch. The key's pointers become numbers through this CPU's record
/// (`line.record`) as in [`numbers`], with the record's `seq` read last and compared with
/// the one the fast path first read (`line.seq`), in place of comparing them: only a
/// program that preempted this one could have rewritten them in between, and the
/// context switch that let it run moved `seq`. An open (`open`) turns them into numbers
/// in the words it keeps for the exec that may follow ([`remember`]), other hooks in the
/// record's own words for it.
#[inline(always)]
pub fn opened_now(file: *const u8, task: *const u8, line: &Line, open: bool) -> Opened {
    // SAFETY (all loads): BTF-typed pointers (the hook's argument, the current task, and
    // pointers loaded from them) at offsets from the kernel's BTF; a load that faults
    // reads 0, which makes the word below non-zero wherever 0 cannot be right.
    let (dentry, pprev, mnt, fs) = unsafe {
        let dentry = load::<*const u8>(file, &OFF_FILE_DENTRY);
        (
            dentry,
            load::<u64>(dentry, &OFF_DENTRY_HASH_PPREV),
            load::<*const u8>(file, &OFF_FILE_MNT),
            load::<*const u8>(task, &OFF_TASK_FS),
        )
    };
    let name_id = name_id(dentry);
    // As in `key_now`: the root between two reads of its sequence count.
    let (before, root_mnt, root_dentry, after) = unsafe {
        (
            fresh::<u32>(fs, &OFF_FS_SEQ),
            fresh::<*const u8>(fs, &OFF_FS_ROOT_MNT),
            fresh::<*const u8>(fs, &OFF_FS_ROOT_DENTRY),
            fresh::<u32>(fs, &OFF_FS_SEQ),
        )
    };
    let record = line.record;
    // SAFETY: this CPU's record in our own global (see `numbers`); volatile, so each
    // word is stored and loaded back in this order.
    let ([mnt, dentry, root_mnt, root_dentry], seq_after) = unsafe {
        let at = if open {
            (&raw mut (*record).opened).cast::<u64>()
        } else {
            (&raw mut (*record).numbers).cast::<u64>()
        };
        for (i, pointer) in [mnt, dentry, root_mnt, root_dentry].iter().enumerate() {
            write_volatile(at.add(i), *pointer as u64);
        }
        let numbers =
            [read_volatile(at), read_volatile(at.add(1)), read_volatile(at.add(2)), read_volatile(at.add(3))];
        (numbers, read_volatile(&raw const (*record).seq))
    };
    let (rename_seq, rename_bad) = renames_word();
    let (mount_seq, mount_bad) = sequence_word(&MOUNT_LOCK_ADDR);
    let bad = (line.seq ^ seq_after)
        | u64::from(before & 1)
        | u64::from(before ^ after)
        | fast_path::any_not_kernel(pprev & mnt & dentry & root_mnt & root_dentry)
        | rename_bad
        | mount_bad;
    // SAFETY: a plain read of a counter only ever added to atomically.
    let dentry_epoch = unsafe { read_volatile(epoch_word(name_id)) };
    Opened {
        mnt,
        dentry,
        name_id: u64::from(name_id),
        root_mnt,
        root_dentry,
        sequences: rename_seq | mount_seq << 32,
        dentry_epoch,
        bad,
    }
}

/// Keeps the rest of `opened`, read by an open of `file` (BTF-typed) in the window of the
/// record's `seq` the fast path opened (`line.seq`), in this CPU's record
/// (`CpuTask::opened`), for [`recalled`]: its pointers are there already
/// ([`opened_now`]).
#[inline(always)]
pub fn remember(line: &Line, file: *const u8, opened: &Opened) {
    let words = [
        (opened::SEQ, line.seq),
        (opened::NAME_ID, opened.name_id),
        (opened::SEQUENCES, opened.sequences),
        (opened::DENTRY_EPOCH, opened.dentry_epoch),
        (opened::BAD, opened.bad),
    ];
    // SAFETY: words of this CPU's record in our own global. Only programs on this CPU
    // write them; one that preempted this program moved `seq` first, which the reader
    // compares.
    unsafe {
        let at = (&raw mut (*line.record).opened).cast::<u64>();
        write_volatile(at.add(opened::FILE), file as u64);
        for (i, word) in words {
            write_volatile(at.add(i), word);
        }
    }
}

/// What the last managed open for reading on this CPU read ([`remember`]), for the
/// program `file` (BTF-typed) an exec runs: its `bad` is 0 only if it read them whole,
/// for this very `struct file`, and no context switch came since (the record's `seq` is
/// the one the fast path read, `line.seq`, when read here last). The kernel opens the
/// program an exec runs just before its
/// `bprm_check_security`, in the same call and, unless it was preempted, with no switch
/// between: what the open read of the file and the caller's root then stands for the
/// exec, as the path the kernel resolved for it. A move or mount change on another CPU
/// in between is seen as at the open.
#[inline(always)]
pub fn recalled(line: &Line, file: *const u8) -> Opened {
    let record = line.record;
    // SAFETY: words of this CPU's record in our own global, each read once, volatile;
    // the file becomes a number through `numbers`, as in `opened_now`.
    unsafe {
        let numbers = (&raw mut (*record).numbers).cast::<u64>();
        write_volatile(numbers, file as u64);
        let file = read_volatile(numbers);
        let at = (&raw const (*record).opened).cast::<u64>();
        let word = |i: usize| read_volatile(at.add(i));
        let bad = word(opened::BAD) | (word(opened::FILE) ^ file) | (word(opened::SEQ) ^ line.seq);
        let mut recalled = Opened {
            mnt: word(opened::MNT),
            dentry: word(opened::DENTRY),
            name_id: word(opened::NAME_ID),
            root_mnt: word(opened::ROOT_MNT),
            root_dentry: word(opened::ROOT_DENTRY),
            sequences: word(opened::SEQUENCES),
            dentry_epoch: word(opened::DENTRY_EPOCH),
            bad,
        };
        // Last: a program that preempted this one and wrote the words moved `seq`.
        recalled.bad |= read_volatile(&raw const (*record).seq) ^ line.seq;
        recalled
    }
}

/// [`get`] for a caller its CPU's record shows managed (`line`, checked by the caller:
/// its slot and generation are taken from it), from what was read of the file and the
/// root (`opened`), with every check folded into one word and no branch (see `fast_path`
/// on why branches are what costs): the findings, and a word that is 0 only if the entry
/// holds for this call as [`get`]'s would.
#[inline(always)]
pub fn quick(opened: &Opened, line: &Line, kind: u32) -> (u64, Hit) {
    #[expect(clippy::cast_possible_truncation, reason = "the lowest bit")]
    let slot = line.stamp as u32 & 1;
    #[expect(clippy::cast_possible_truncation, reason = "a name id, stored widened")]
    let key = OpenCacheKey {
        mnt: opened.mnt,
        dentry: opened.dentry,
        name_id: opened.name_id as u32,
        who: OpenCacheKey::who(line.identity, kind, slot),
    };
    let generation = crate::cpu_tasks::word(word::SLOT_GENERATION + slot);
    let mut bad = line.bad | opened.bad;
    let entry = element(key.index());
    let (
        seq,
        key_bad,
        [entry_generation, dentry_epoch, root_mnt, root_dentry, sequences, hash, proof, rules, marks],
    ) = entry_words::<false>(entry, &key);
    bad |= key_bad
        | (entry_generation ^ generation)
        | (dentry_epoch ^ opened.dentry_epoch)
        | (root_mnt ^ opened.root_mnt)
        | (root_dentry ^ opened.root_dentry)
        | (sequences ^ opened.sequences)
        | (seq & 1);
    // SAFETY: our own global, read once more after the words.
    bad |= unsafe { read_volatile(&raw const (*entry).seq) } ^ seq;
    #[expect(clippy::cast_possible_truncation, reason = "unpacking what OpenFindings::words packed")]
    (bad, Hit { read: (marks as u8, rules as u32), hash, proof, len: usize::from((marks >> 16) as u16) })
}

/// [`renames`] without a branch: the directory move count, and a word that is non-zero
/// while a move is under way.
#[inline(always)]
fn renames_word() -> (u64, u64) {
    let word = crate::cpu_tasks::renames();
    (word >> 32, word & u64::from(u32::MAX))
}

/// [`sequence`] without a branch: the count, and a word that is non-zero if the address
/// is unknown (the read of address 0 fails), the read failed, or a writer holds the lock.
#[inline(always)]
fn sequence_word(addr: &'static u64) -> (u64, u64) {
    // SAFETY: a read of our own global; volatile so the compiler does not fold the 0.
    let at = unsafe { read_volatile(addr) };
    let mut seq = 0u32;
    // SAFETY: a checked kernel read into a local; a bad address returns an error (and
    // zeroes the local), never faults.
    let failed = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut seq).cast(),
            4,
            at as *const core::ffi::c_void,
        )
    };
    #[expect(clippy::cast_sign_loss, reason = "only zero or not matters")]
    (u64::from(seq), failed as u64 | u64::from(seq & 1))
}

/// The `seq` of `entry`, a word that is 0 only if its key is `key`, and its words,
/// each read once, in that order (see `OpenCacheEntry`); the caller reads `seq` again.
/// Without `ALL`, the words only a reported verdict needs (hash, proof, rules) are left
/// unread, as 0.
#[inline(always)]
fn entry_words<const ALL: bool>(
    entry: *const OpenCacheEntry,
    key: &OpenCacheKey,
) -> (u64, u64, [u64; OPEN_CACHE_WORDS]) {
    // SAFETY (all reads): an element of our own global, each word read once, volatile,
    // so in this order.
    unsafe {
        let seq = read_volatile(&raw const (*entry).seq);
        let at = (&raw const (*entry).key).cast::<u64>();
        let key_bad = (read_volatile(at) ^ key.mnt)
            | (read_volatile(at.add(1)) ^ key.dentry)
            | (read_volatile(at.add(2)) ^ (u64::from(key.name_id) | u64::from(key.who) << 32));
        let at = (&raw const (*entry).words).cast::<u64>();
        let mut words = [0u64; OPEN_CACHE_WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            // Hash, proof and rules: see `OpenFindings::words`.
            if ALL || !(5..8).contains(&i) {
                *word = read_volatile(at.add(i));
            }
        }
        (seq, key_bad, words)
    }
}

/// [`entry_words`] with the key's comparison as a flag, for [`get`].
#[inline(always)]
fn read_entry(entry: *const OpenCacheEntry, key: &OpenCacheKey) -> (u64, bool, [u64; OPEN_CACHE_WORDS]) {
    let (seq, key_bad, words) = entry_words::<true>(entry, key);
    (seq, key_bad == 0, words)
}

/// Stages the key and stamp of an open or exec (`kind`) of `file` in the per-CPU buffer,
/// before the full judgement resolves its path (`valid` 0 where the cache cannot be used).
#[inline(always)]
pub fn stage(staged: *mut OpenStaged, file: *const u8, identity: u32, kind: u32, slot: u32) {
    // SAFETY (all writes): `staged` points into the per-CPU buffer, a map value.
    unsafe { (*staged).valid = 0 };
    let Some((key, root)) = key_now::<false>(file, current_task(), identity, kind, slot) else { return };
    let Some(stamp) = stamp(key.name_id, root, slot) else { return };
    unsafe {
        (*staged).stamp = stamp;
        (*staged).key = key;
        (*staged).valid = 1;
    }
}

/// Caches what the full judgement of an open or exec (`kind`) of `file` found (a path of
/// `len` bytes), under the key and stamp staged before it. The caller has checked the
/// buffer is still its own; the key and root are read again and must be the staged ones.
/// The entry is built in the buffer too: the full judgement's stack frame has little room.
#[inline(always)]
pub fn put(
    staged: *mut OpenStaged,
    file: *const u8,
    subject: &Subject,
    kind: u32,
    found: &Found,
    len: usize,
) {
    // SAFETY (all accesses): `staged` points into the per-CPU buffer, a map value.
    if unsafe { (*staged).valid } != 1 {
        return;
    }
    let Some((key, root)) = key_now::<false>(file, current_task(), subject.identity, kind, subject.slot)
    else {
        return;
    };
    let same = unsafe {
        key == (*staged).key && root[0] == (*staged).stamp.root_mnt && root[1] == (*staged).stamp.root_dentry
    };
    if !same {
        return;
    }
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH")]
    let findings = OpenFindings {
        stamp: unsafe { (*staged).stamp },
        hash: found.hash,
        proof: found.proof,
        read: found.read,
        write: found.write,
        len: len as u16,
    };
    unsafe { (*staged).words = findings.words() };
    store(staged);
}

/// Writes the entry built in `staged` into its key's element, over whatever entry it
/// held: a key sharing it judges in full next time. In a frame of its own, after the
/// full judgement's, which has no room for the values this keeps.
#[inline(never)]
fn store(staged: *const OpenStaged) {
    // SAFETY (all accesses): `staged` points into the per-CPU buffer, `target` into our
    // own global.
    unsafe {
        let target = element((*staged).key.index());
        // Taken from even to odd, or left to the writer that holds it (see
        // `OpenCacheEntry`): readers meanwhile see an odd or moved count, and judge in full.
        // The exchange succeeded if it found what was read (see `aggregate` on why its
        // success flag is not used).
        let seq = read_volatile(&raw const (*target).seq);
        if seq & 1 != 0
            || atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*target).seq,
                seq,
                seq + 1,
            )
            .0 != seq
        {
            return;
        }
        let key = (*staged).key.words();
        let to = (&raw mut (*target).key).cast::<u64>();
        for (i, word) in key.iter().enumerate() {
            write_volatile(to.add(i), *word);
        }
        let (from, to) =
            ((&raw const (*staged).words).cast::<u64>(), (&raw mut (*target).words).cast::<u64>());
        for i in 0..OPEN_CACHE_WORDS {
            write_volatile(to.add(i), read_volatile(from.add(i)));
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*target).seq, 1);
    }
}

/// The key of findings of `kind` for `file` and `identity` under `slot` (the file's
/// mount and dentry), and the root (mount, dentry) of `task`, the current task. `None`
/// where the cache cannot be used: the file removed from its directory, or the root
/// unreadable or changing.
///
/// The lookup (`BY_STORE`) turns the addresses into numbers through this CPU's words (`CpuTask::numbers`): a few
/// loads and stores instead of two helper calls. The full judgement, whose frames already
/// fill 6.1's stack budget, keeps the helper reads, which need no stack of their own;
/// both give the same numbers.
#[inline(always)]
fn key_now<const BY_STORE: bool>(
    file: *const u8,
    task: *const u8,
    identity: u32,
    kind: u32,
    slot: u32,
) -> Option<(OpenCacheKey, [u64; 2])> {
    // SAFETY (all loads): BTF-typed pointers (the hook's argument, the current task, and
    // pointers loaded from them) at offsets from the kernel's BTF; a load that faults
    // reads 0, refused below wherever 0 cannot be right.
    let dentry = unsafe { load::<*const u8>(file, &OFF_FILE_DENTRY) };
    if dentry.is_null() {
        return None;
    }
    // An unhashed dentry (its name removed, or never given one: memfd, `O_TMPFILE`) is
    // shown with a ` (deleted)` suffix: judged in full every time, where an exec of it is
    // a fileless one.
    if unsafe { load::<*const u8>(dentry, &OFF_DENTRY_HASH_PPREV) }.is_null() {
        return None;
    }
    let name_id = name_id(dentry);
    if !BY_STORE {
        // The addresses read as numbers (helper reads): the verifier does not let a
        // pointer it knows as one be stored in an entry or compared with its key.
        let [mnt, dentry] = path_at(file, &OFF_FILE_MNT)?;
        let fs = unsafe { load::<*const u8>(task, &OFF_TASK_FS) };
        if fs.is_null() {
            return None;
        }
        // The root is read between two reads of its sequence count, as the kernel does:
        // an odd or moved count is a `chroot` or `pivot_root` under way. Volatile, so
        // the compiler keeps the reads in this order (x86 keeps loads in order).
        let before = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
        let root = path_at(fs, &OFF_FS_ROOT_MNT)?;
        let after = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
        if before & 1 != 0 || before != after || mnt == 0 || dentry == 0 || root[0] == 0 || root[1] == 0 {
            return None;
        }
        return Some((
            OpenCacheKey { mnt, dentry, name_id, who: OpenCacheKey::who(identity, kind, slot) },
            root,
        ));
    }
    let mnt = unsafe { load::<*const u8>(file, &OFF_FILE_MNT) };
    let fs = unsafe { load::<*const u8>(task, &OFF_TASK_FS) };
    if fs.is_null() {
        return None;
    }
    // As above, with plain loads.
    let before = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
    let root_mnt = unsafe { fresh::<*const u8>(fs, &OFF_FS_ROOT_MNT) };
    let root_dentry = unsafe { fresh::<*const u8>(fs, &OFF_FS_ROOT_DENTRY) };
    let after = unsafe { fresh::<u32>(fs, &OFF_FS_SEQ) };
    if before & 1 != 0 || before != after || mnt.is_null() || root_mnt.is_null() || root_dentry.is_null() {
        return None;
    }
    let [mnt, dentry, root_mnt, root_dentry] = numbers([mnt, dentry, root_mnt, root_dentry])?;
    Some((
        OpenCacheKey { mnt, dentry, name_id, who: OpenCacheKey::who(identity, kind, slot) },
        [root_mnt, root_dentry],
    ))
}

/// The `struct path` at `base + at` (its `mnt`, then its `dentry`) as two numbers, read
/// with one helper call; `None` if the read fails.
#[inline(always)]
fn path_at(base: *const u8, at: &'static u64) -> Option<[u64; 2]> {
    // SAFETY: a checked kernel read; a bad address returns an error, never faults.
    unsafe { bpf_probe_read_kernel(base.add(offset(at)).cast::<[u64; 2]>()) }.ok()
}

/// `pointers` (kernel pointers, as the verifier knows them) as numbers, which can be
/// stored in an entry or compared with its key: stored into this CPU's words in its task record
/// (`CpuTask::numbers`, in the page the hook read its caller from) and loaded back (a
/// privileged program may store a pointer in a map value, and what it loads from one is
/// a number). A store and a load each, where a helper read of the kernel's memory costs
/// a function call. `None` if the records are not in use, or a program that preempted this
/// one on this CPU rewrote the words in between: each number must equal its pointer.
#[inline(always)]
fn numbers(pointers: [*const u8; 4]) -> Option<[u64; 4]> {
    let entry = crate::cpu_tasks::record()?;
    // SAFETY: four words of this CPU's map value, used only here (a program preempting
    // this one may rewrite them: compared below); volatile, so each word is stored and
    // loaded back rather than forwarded.
    let loaded = unsafe {
        let at = (&raw mut (*entry).numbers).cast::<u64>();
        for (i, pointer) in pointers.iter().enumerate() {
            core::ptr::write_volatile(at.add(i), *pointer as u64);
        }
        [
            core::ptr::read_volatile(at),
            core::ptr::read_volatile(at.add(1)),
            core::ptr::read_volatile(at.add(2)),
            core::ptr::read_volatile(at.add(3)),
        ]
    };
    // Compared on one copy, returned from another the compiler cannot relate to it: were
    // it to know a number equal to its pointer, it could hand back the pointer.
    let numbers = core::hint::black_box(loaded);
    let same = loaded[0] == pointers[0] as u64
        && loaded[1] == pointers[1] as u64
        && loaded[2] == pointers[2] as u64
        && loaded[3] == pointers[3] as u64;
    same.then_some(numbers)
}

/// The [`dentry_name_id`] of `dentry` (BTF-typed). Plain loads of the kernel's own
/// pointers: a load that faulted would read 0.
#[inline(always)]
pub fn name_id(dentry: *const u8) -> u32 {
    // SAFETY: a BTF-typed pointer at offsets from the kernel's BTF. Two loads: 6.1's
    // verifier refuses one of the union's `hash_len`, taking its first member (`hash`).
    unsafe {
        dentry_name_id(load::<u32>(dentry, &OFF_DENTRY_NAME_HASH), load::<u32>(dentry, &OFF_DENTRY_NAME_LEN))
    }
}

/// `dentry` (BTF-typed) is being given an inode, or moved (`renames`): entries made for
/// any dentry in its name's bucket are stale from now on.
#[inline(always)]
pub fn dentry_moved(dentry: *const u8) {
    // SAFETY: an element of our own global; the add is atomic (several CPUs instantiate
    // at once).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(epoch_word(name_id(dentry)), 1) };
}

/// What the findings for a dentry named `name_id` under `slot` depend on, read now;
/// `None` if the cache is off or a dentry move or mount change is under way.
#[inline(always)]
fn stamp(name_id: u32, root: [u64; 2], slot: u32) -> Option<OpenStamp> {
    Some(OpenStamp {
        generation: slot_generation(slot)?,
        dentry_epoch: epoch(name_id),
        root_mnt: root[0],
        root_dentry: root[1],
        rename_seq: renames()?,
        mount_seq: sequence(&MOUNT_LOCK_ADDR)?,
    })
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
fn epoch(name_id: u32) -> u64 {
    // SAFETY: a plain read of a counter only ever added to atomically.
    unsafe { core::ptr::read_volatile(epoch_word(name_id)) }
}

/// The directory moves counted (`CpuRecords::renames`); `None` while a move is under way.
#[inline(always)]
fn renames() -> Option<u32> {
    enforcer_common::maps::renames::settled(crate::cpu_tasks::renames())
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
