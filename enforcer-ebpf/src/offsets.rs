//! Offsets of the kernel struct members the programs read, set by the agent from the
//! running kernel's BTF at load time (read-only globals: the verifier sees constants),
//! and the checked read that uses them.

use aya_ebpf::helpers::bpf_probe_read_kernel;

#[unsafe(no_mangle)]
pub static OFF_FILE_F_INODE: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_INODE_I_SB: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_INODE_I_INO: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_INODE_I_PRIVATE: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_INODE_I_MODE: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_SB_S_MAGIC: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_SB_S_DEV: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_KERNFS_PARENT: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_KERNFS_ID: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_KERNFS_NAME: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_DENTRY_D_INODE: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_DENTRY_D_PARENT: u64 = 0;
/// `file.f_path` plus `path.dentry`: the opened file's dentry.
#[unsafe(no_mangle)]
pub static OFF_FILE_DENTRY: u64 = 0;
/// `dentry.d_name` plus `qstr.name`: the pointer to the entry's name.
#[unsafe(no_mangle)]
pub static OFF_DENTRY_NAME: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_TASK_TGID: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_TASK_CGROUPS: u64 = 0;
/// `task_struct.stack`: the lowest address of the task's kernel stack.
#[unsafe(no_mangle)]
pub static OFF_TASK_STACK: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_CSS_SET_DFL_CGRP: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_CGROUP_KN: u64 = 0;

#[unsafe(no_mangle)]
pub static OFF_BPRM_FILE: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_FILE_F_PATH: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_FILE_F_MODE: u64 = 0;

/// `vm_area_struct.vm_file`.
#[unsafe(no_mangle)]
pub static OFF_VMA_VM_FILE: u64 = 0;
/// `unix_sock.path` plus `path.dentry`: the socket file a bound Unix socket lives at.
#[unsafe(no_mangle)]
pub static OFF_UNIX_SOCK_DENTRY: u64 = 0;
/// `socket.sk`.
#[unsafe(no_mangle)]
pub static OFF_SOCKET_SK: u64 = 0;
/// `path.dentry`.
#[unsafe(no_mangle)]
pub static OFF_PATH_DENTRY: u64 = 0;
/// `task_struct.fs`.
#[unsafe(no_mangle)]
pub static OFF_TASK_FS: u64 = 0;
/// `fs_struct.seq` (its sequence count is the first word).
#[unsafe(no_mangle)]
pub static OFF_FS_SEQ: u64 = 0;
/// `fs_struct.root` plus `path.mnt`: a `struct path` (mount, then dentry).
#[unsafe(no_mangle)]
pub static OFF_FS_ROOT_MNT: u64 = 0;
/// `fs_struct.root` plus `path.dentry`.
#[unsafe(no_mangle)]
pub static OFF_FS_ROOT_DENTRY: u64 = 0;
/// `file.f_path` plus `path.mnt`.
#[unsafe(no_mangle)]
pub static OFF_FILE_MNT: u64 = 0;
/// `dentry.d_hash` plus `hlist_bl_node.pprev`.
#[unsafe(no_mangle)]
pub static OFF_DENTRY_HASH_PPREV: u64 = 0;
/// `dentry.d_name` plus `qstr.hash` / `qstr.len`.
#[unsafe(no_mangle)]
pub static OFF_DENTRY_NAME_HASH: u64 = 0;
#[unsafe(no_mangle)]
pub static OFF_DENTRY_NAME_LEN: u64 = 0;

#[inline(always)]
pub fn offset(global: &'static u64) -> usize {
    // SAFETY: a read of our own global; volatile so the compiler does not fold the 0.
    #[expect(clippy::cast_possible_truncation, reason = "struct offsets are small")]
    unsafe {
        core::ptr::read_volatile(global) as usize
    }
}

/// Reads a `T` at `base + offset` with a plain load, where `base` is a BTF-typed kernel
/// pointer: a hook's argument or a pointer loaded this way from one. The verifier checks
/// the load against the member's type at that offset (the offsets are read-only globals,
/// so it sees constants), and a faulting load reads 0 instead of trapping: callers treat
/// a 0 they cannot expect as unreadable. One instruction, where [`read`] is a helper call.
///
/// # Safety
/// `base` must be BTF-typed in the verifier's eyes; otherwise the program fails to load.
#[inline(always)]
pub unsafe fn load<T: Copy>(base: *const u8, at: &'static u64) -> T {
    // SAFETY: see above; the verifier rewrites the load into a fault-tolerant one.
    unsafe { *base.add(offset(at)).cast::<T>() }
}

/// Reads a `T` at `base + offset`; `None` if the kernel refuses the read.
#[inline(always)]
pub fn read<T>(base: *const u8, at: &'static u64) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: a checked kernel read; a bad address returns an error, never faults.
    unsafe { bpf_probe_read_kernel(base.add(offset(at)).cast::<T>()).ok() }
}
