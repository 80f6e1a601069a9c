//! The kernel's dentry moves (`d_move`, `d_exchange`: every rename, and the moves some
//! network file systems make), counted for the open cache (`open_cache`) by programs at
//! the start (`fentry`) and the end (`fexit`) of each.
//!
//! A move changes the path of the dentries it moves and, for a directory, of every file
//! beneath it. A moved file's entries miss by their key already (its name's hash, which
//! the kernel salts with the directory, changes with the move); each move also moves,
//! at its start and at its end, the `OpenCache::dentry_epochs` buckets of the names it
//! involves (the moved dentry's and the one it takes, before and after), for the move
//! whose new hash collides with the old. A directory's move counts in the directory
//! moves (`CpuRecords::renames`), which ends every entry. A file's rename elsewhere on
//! the host, such as an atomic replace of a state file, leaves the other entries
//! standing.
//!
//! While any move is under way (started, not yet ended) no entry is made or used
//! (`enforcer_common::maps::renames`): an entry judged before a move's end and used
//! after it would otherwise hold until the end's count. A start and its end are paired
//! by the task making the move (`MOVING`): an end whose start was not counted takes
//! nothing off.
//!
//! Not seen: `d_splice_alias` moving a directory alias (a network or FUSE file system
//! whose server moved a directory, or a directory decoded from a file handle, connected
//! before `open_by_handle_at` returns it).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext},
};
use enforcer_common::maps::renames;

use crate::{
    cpu_tasks, diag,
    offsets::{OFF_DENTRY_D_INODE, OFF_INODE_I_MODE, load},
    open_cache,
};

/// Tasks in a move whose start was counted (by `pid_tgid`). A task makes one move at a
/// time, and no more tasks than CPUs can be inside one move's few instructions at once
/// but for preemption: a few thousand is far more than enough.
#[map]
static MOVING: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;

/// `d_move(dentry, target)`: `dentry` takes `target`'s name and place.
#[fentry(function = "d_move")]
pub fn rename_started(ctx: FEntryContext) -> i32 {
    started(ctx.arg(0), ctx.arg(1));
    0
}

#[fexit(function = "d_move")]
pub fn rename_done(ctx: FExitContext) -> i32 {
    done(ctx.arg(0), ctx.arg(1));
    0
}

/// `d_exchange(dentry1, dentry2)`: the two swap names and places.
#[fentry(function = "d_exchange")]
pub fn exchange_started(ctx: FEntryContext) -> i32 {
    started(ctx.arg(0), ctx.arg(1));
    0
}

#[fexit(function = "d_exchange")]
pub fn exchange_done(ctx: FExitContext) -> i32 {
    done(ctx.arg(0), ctx.arg(1));
    0
}

/// The start of a move of `a` to `b`'s place (both BTF-typed, the traced function's
/// own arguments).
#[inline(always)]
fn started(a: *const u8, b: *const u8) {
    open_cache::dentry_moved(a);
    open_cache::dentry_moved(b);
    let task = bpf_get_current_pid_tgid();
    if MOVING.insert(&task, &1, 0).is_err() {
        // Fail-closed: counted under way all the same, its end will not take it off, and
        // the open cache stays off (every open judged in full) for this agent's life.
        diag::error!("rename start: the table of moves under way is full: the open cache turns off");
    }
    cpu_tasks::add_renames(renames::started(directory(a) | directory(b)));
}

/// The end of a move of `a` to `b`'s place.
#[inline(always)]
fn done(a: *const u8, b: *const u8) {
    // The names again, as they are now (each move changes at most these two): the
    // buckets move before the move stops counting as under way.
    open_cache::dentry_moved(a);
    open_cache::dentry_moved(b);
    let task = bpf_get_current_pid_tgid();
    let paired = MOVING.remove(&task).is_ok();
    cpu_tasks::add_renames(renames::done(directory(a) | directory(b), paired));
}

/// Whether `dentry` (BTF-typed) is a directory's. A negative dentry (a rename's new
/// name) has no inode: the load through its null pointer reads 0, not a directory.
#[inline(always)]
fn directory(dentry: *const u8) -> bool {
    // SAFETY: BTF-typed loads at offsets from the kernel's BTF; a faulting one reads 0.
    let mode = unsafe {
        let inode = load::<*const u8>(dentry, &OFF_DENTRY_D_INODE);
        load::<u16>(inode, &OFF_INODE_I_MODE)
    };
    mode & S_IFMT == S_IFDIR
}
