//! The rule filters of a slot (`enforcer_common::rule_filter`): a lookup is made only
//! where the key's bit is set.
//!
//! A scan takes its filter once, before its loop, and hands the loop a pointer the
//! verifier knows is valid: checked inside the loop, each filter read would add a map
//! lookup and a null branch to every state the loop's verification explores.

use enforcer_common::rule_filter::{RuleFilter, index, inode_bit, path_bit};

use crate::maps::RULE_FILTERS;

/// Filter `which` (a `rule_filter::which`) of `slot`; `None` only if the array lacks an
/// index below its size, which cannot happen (callers then refuse: fail-closed).
#[inline(always)]
pub fn of(slot: u32, which: u32) -> Option<*const RuleFilter> {
    RULE_FILTERS.get_ptr(index(slot, which))
}

/// Whether a path filter may hold this `PATH_RULES` key: false only when it certainly
/// does not.
#[inline(always)]
pub fn may_hold_path(filter: *const RuleFilter, hash: u64, len: u16, identity: u32, kind: u8) -> bool {
    // SAFETY: `filter` came from `of`, a map value valid for the program's run.
    unsafe { (*filter).has(path_bit(hash, len, identity, kind)) }
}

/// Whether an inode filter may hold this `INODE_RULES` key.
#[inline(always)]
pub fn may_hold_inode(filter: *const RuleFilter, ino: u64, dev: u32, identity: u32, kind: u8) -> bool {
    // SAFETY: as above.
    unsafe { (*filter).has(inode_bit(ino, dev, identity, kind)) }
}
