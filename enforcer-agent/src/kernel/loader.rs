//! Loading, feature-probing and attaching the kernel programs.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, FEntry, FExit, Lsm, RawTracePoint, links::FdLink,
    },
};
use enforcer_common::maps::{RECORDED_CPUS, globals};

use crate::kernel::{
    btf::{Btf, BtfError},
    kallsyms,
};

/// The kernel object, built by `aya-build` and embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

/// LSM programs: (program name, hook).
pub const LSM_PROGRAMS: [(&str, &str); 30] = [
    // First: it must run for every dentry given an inode while `file_open` caches.
    ("d_instantiate", "d_instantiate"),
    ("bprm_check_security", "bprm_check_security"),
    ("file_open", "file_open"),
    ("mmap_file", "mmap_file"),
    ("file_mprotect", "file_mprotect"),
    ("task_alloc", "task_alloc"),
    ("bpf", "bpf"),
    ("task_kill", "task_kill"),
    ("ptrace_access_check", "ptrace_access_check"),
    ("inode_unlink", "inode_unlink"),
    ("inode_rmdir", "inode_rmdir"),
    ("inode_rename", "inode_rename"),
    ("inode_link", "inode_link"),
    ("inode_create", "inode_create"),
    ("inode_mkdir", "inode_mkdir"),
    ("inode_mknod", "inode_mknod"),
    ("inode_symlink", "inode_symlink"),
    ("path_truncate", "path_truncate"),
    ("path_chmod", "path_chmod"),
    ("path_chown", "path_chown"),
    ("inode_setxattr", "inode_setxattr"),
    ("inode_removexattr", "inode_removexattr"),
    ("sb_mount", "sb_mount"),
    ("move_mount", "move_mount"),
    ("sb_umount", "sb_umount"),
    ("sb_pivotroot", "sb_pivotroot"),
    ("path_chroot", "path_chroot"),
    ("socket_create", "socket_create"),
    ("unix_stream_connect", "unix_stream_connect"),
    ("unix_may_send", "unix_may_send"),
];
/// cgroup socket-address programs, attached to the cgroup root.
pub const CGROUP_PROGRAMS: [&str; 6] = ["connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6"];
/// BTF tracepoints: (program name, tracepoint). Loaded in every mode.
pub const TRACE_PROGRAMS: [(&str, &str); 5] = [
    ("sched_switch", "sched_switch"),
    ("cgroup_attach_task", "cgroup_attach_task"),
    ("cgroup_mkdir", "cgroup_mkdir"),
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exit", "sched_process_exit"),
];

/// The dentry moves the open cache depends on (`renames` in the kernel crate): (program
/// name, `fexit` or `fentry`, traced function). Attached after the tracepoints and
/// before the LSM programs, the ends first, so that no move's start is counted without
/// its end; loaded where the LSM programs are.
pub const RENAME_PROGRAMS: [(&str, &str, &str); 4] = [
    ("rename_done", "fexit", "d_move"),
    ("exchange_done", "fexit", "d_exchange"),
    ("rename_started", "fentry", "d_move"),
    ("exchange_started", "fentry", "d_exchange"),
];

/// Programs the hooks depend on: the record of each CPU's task (`CpuTask`) and the count
/// of dentry moves. While hooks of the same instance are attached, these stay attached,
/// so they detach last.
pub const DETACH_LAST: [&str; 6] = [
    "sched_switch",
    "cgroup_attach_task",
    "rename_started",
    "exchange_started",
    "rename_done",
    "exchange_done",
];

/// The program that writes the slot in force and the binding epoch (run, never attached;
/// see `KernelMaps::publish`).
pub const PUBLISH: &str = "publish";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("reading kernel BTF for LSM attachment: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {name}: its link is not a BPF link: {message}")]
    Link { name: &'static str, message: String },
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("opening cgroup root {path}: {source}")]
    CgroupRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "BPF LSM is not active on this kernel ({active}): exec and file rules cannot be \
         enforced. Enable it by adding `bpf` to the kernel's `lsm=` boot parameter (keeping \
         the current list, e.g. lsm={example}) and rebooting, or pass --network-only to \
         enforce network rules only"
    )]
    NoBpfLsm { active: String, example: String },
}

/// What the running kernel offers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Features {
    pub kernel: String,
    pub btf: bool,
    pub bpf_lsm: bool,
    pub active_lsms: String,
}

impl Features {
    /// The error that explains how to enable BPF LSM on this machine.
    pub fn no_bpf_lsm(&self) -> LoadError {
        if self.active_lsms.is_empty() {
            return LoadError::NoBpfLsm {
                active: "/sys/kernel/security/lsm is unreadable; is securityfs mounted?".to_owned(),
                example: "lockdown,capability,landlock,yama,apparmor,bpf".to_owned(),
            };
        }
        LoadError::NoBpfLsm {
            active: format!("active LSMs: {}", self.active_lsms),
            example: format!("{},bpf", self.active_lsms),
        }
    }

    pub fn probe() -> Self {
        let active_lsms = std::fs::read_to_string("/sys/kernel/security/lsm")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            bpf_lsm: active_lsms.split(',').any(|l| l == "bpf"),
            active_lsms,
        }
    }
}

/// How to load.
pub struct Options {
    /// The cgroup (v2) the socket programs attach to; it and its descendants are covered.
    pub cgroup_root: PathBuf,
    /// Skip the LSM programs (exec and file rules are then not enforced).
    pub network_only: bool,
    /// Kernel diagnostics the programs emit (see `kernel_log`).
    pub kernel_log: crate::kernel::log::Level,
}

/// Loads the object with the running kernel's struct offsets and loads every program into
/// the kernel (verifier included) without attaching any.
pub fn load(options: &Options) -> Result<Ebpf, LoadError> {
    let features = Features::probe();
    if !options.network_only && !features.bpf_lsm {
        return Err(features.no_bpf_lsm());
    }
    let btf = Btf::from_sys()?;
    let offsets = offsets(&btf)?;
    let mount_lock = if options.network_only { 0 } else { mount_lock_address() };
    let mut loader = EbpfLoader::new();
    for (global, value) in &offsets {
        loader.override_global(global, value, true);
    }
    if mount_lock != 0 {
        loader.override_global(globals::MOUNT_LOCK_ADDR, &mount_lock, true);
    }
    let cpu_records = u8::from(records_fit());
    loader.override_global(globals::CPU_RECORDS, &cpu_records, true);
    let [key0, key1] = crate::kernel::path_key::key();
    loader.override_global(globals::PATH_KEY0, &key0, true);
    loader.override_global(globals::PATH_KEY1, &key1, true);
    // Every log call is gated on KERNEL_LOG; aya-log's own level says the same, for any
    // call made without the gate.
    let log_level = options.kernel_log.global();
    loader.override_global(globals::KERNEL_LOG, &log_level, true);
    loader.override_global(aya_log::LEVEL, &log_level, true);
    if options.kernel_log == crate::kernel::log::Level::Off {
        // Nothing is written to it: the smallest ring buffer the kernel accepts.
        loader.map_max_entries(crate::kernel::log::MAP, page_size());
    }
    let at = Instant::now();
    let mut ebpf = loader.load(OBJECT)?;
    let maps_created = at.elapsed();
    let at = Instant::now();
    let kernel_btf = aya::Btf::from_sys_fs()?;
    let btf_read = at.elapsed();
    let at = Instant::now();
    let mut jobs = Vec::new();
    if !options.network_only {
        jobs.extend(LSM_PROGRAMS.iter().map(|&(name, hook)| (name, Kind::Lsm(hook))));
        jobs.extend(RENAME_PROGRAMS.iter().map(|&(name, kind, function)| match kind {
            "fentry" => (name, Kind::Entry(function)),
            _ => (name, Kind::Exit(function)),
        }));
    }
    jobs.extend(TRACE_PROGRAMS.iter().map(|&(name, tracepoint)| (name, Kind::Trace(tracepoint))));
    jobs.extend(CGROUP_PROGRAMS.iter().map(|&name| (name, Kind::Cgroup)));
    jobs.push((PUBLISH, Kind::Run));
    load_programs(&mut ebpf, jobs, &kernel_btf)?;
    tracing::info!(
        maps_ms = maps_created.as_millis(),
        btf_ms = btf_read.as_millis(),
        programs_ms = at.elapsed().as_millis(),
        "kernel object loaded"
    );
    Ok(ebpf)
}

/// Whether every possible CPU has a task record in the programs' global state
/// (`enforcer_common::maps::CpuRecords`); if not, the programs use none.
fn records_fit() -> bool {
    match aya::util::nr_cpus() {
        Ok(cpus) => usize::try_from(cpus.get()).is_ok_and(|n| n <= RECORDED_CPUS),
        Err((path, e)) => {
            tracing::warn!("reading {path}: {e}: the hooks find their caller without the CPUs' task records");
            false
        }
    }
}

/// The kernel address of `mount_lock`, or 0: without it `file_open` caches nothing (see
/// `open_cache` in the kernel crate).
fn mount_lock_address() -> u64 {
    let [mount] = kallsyms::data_addresses([kallsyms::MOUNT_LOCK]);
    if mount == 0 {
        tracing::warn!(
            "kernel symbol {} not found in /proc/kallsyms (kernel built without \
             CONFIG_KALLSYMS_ALL?): file opens are judged in full every time",
            kallsyms::MOUNT_LOCK,
        );
    }
    mount
}

/// What kind of program a name in the object is, with its attach point.
#[derive(Clone, Copy)]
enum Kind {
    Lsm(&'static str),
    Trace(&'static str),
    /// `fentry` / `fexit` of a kernel function.
    Entry(&'static str),
    Exit(&'static str),
    Cgroup,
    /// Never attached: run by the agent (`BPF_PROG_TEST_RUN`).
    Run,
}

/// Loads `jobs` into the kernel one after another, each timed in the log (the kernel's
/// verifier is most of an agent's start).
///
/// One at a time on purpose: the kernel would verify privileged loads in parallel (1.7×
/// faster in an emulated guest with both CPUs to itself), but where the CPUs are shared,
/// as by the test guests that run side by side, parallel loads made every start slower.
fn load_programs(ebpf: &mut Ebpf, jobs: Vec<(&'static str, Kind)>, btf: &aya::Btf) -> Result<(), LoadError> {
    for (name, kind) in jobs {
        let program = ebpf.program_mut(name).ok_or(LoadError::MissingProgram(name))?;
        let at = Instant::now();
        load_one(name, kind, program, btf)?;
        let verified = program.info().ok().and_then(|info| info.verified_instruction_count());
        tracing::debug!(program = name, ms = at.elapsed().as_millis(), verified, "program loaded");
    }
    Ok(())
}

fn load_one(
    name: &'static str,
    kind: Kind,
    program: &mut aya::programs::Program,
    btf: &aya::Btf,
) -> Result<(), LoadError> {
    let failed = |source| LoadError::Program { name, source };
    match kind {
        Kind::Lsm(hook) => {
            let program: &mut Lsm = program.try_into().map_err(failed)?;
            program.load(hook, btf).map_err(failed)
        }
        Kind::Trace(tracepoint) => {
            let program: &mut BtfTracePoint = program.try_into().map_err(failed)?;
            program.load(tracepoint, btf).map_err(failed)
        }
        Kind::Entry(function) => {
            let program: &mut FEntry = program.try_into().map_err(failed)?;
            program.load(function, btf).map_err(failed)
        }
        Kind::Exit(function) => {
            let program: &mut FExit = program.try_into().map_err(failed)?;
            program.load(function, btf).map_err(failed)
        }
        Kind::Cgroup => {
            let program: &mut CgroupSockAddr = program.try_into().map_err(failed)?;
            program.load().map_err(failed)
        }
        Kind::Run => {
            let program: &mut RawTracePoint = program.try_into().map_err(failed)?;
            program.load().map_err(failed)
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Every struct member offset the kernel programs read, from the running kernel's BTF.
fn offsets(btf: &Btf) -> Result<Vec<(&'static str, u64)>, LoadError> {
    let member = |ty: &str, name: &str| btf.member_offset(ty, name);
    Ok(vec![
        (globals::OFF_BPRM_FILE, member("linux_binprm", "file")?),
        (globals::OFF_FILE_F_PATH, member("file", "f_path")?),
        (globals::OFF_FILE_F_MODE, member("file", "f_mode")?),
        (globals::OFF_FILE_F_INODE, member("file", "f_inode")?),
        (globals::OFF_INODE_I_SB, member("inode", "i_sb")?),
        (globals::OFF_INODE_I_INO, member("inode", "i_ino")?),
        (globals::OFF_INODE_I_PRIVATE, member("inode", "i_private")?),
        (globals::OFF_INODE_I_MODE, member("inode", "i_mode")?),
        (globals::OFF_SB_S_MAGIC, member("super_block", "s_magic")?),
        (globals::OFF_SB_S_DEV, member("super_block", "s_dev")?),
        // Renamed `__parent` when it became RCU-protected (6.15).
        (
            globals::OFF_KERNFS_PARENT,
            member("kernfs_node", "parent").or_else(|_| member("kernfs_node", "__parent"))?,
        ),
        (globals::OFF_KERNFS_ID, member("kernfs_node", "id")?),
        (
            globals::OFF_KERNFS_NAME,
            member("kernfs_node", "name").or_else(|_| member("kernfs_node", "__name"))?,
        ),
        (globals::OFF_DENTRY_D_INODE, member("dentry", "d_inode")?),
        (globals::OFF_DENTRY_NAME, member("dentry", "d_name")? + member("qstr", "name")?),
        (globals::OFF_DENTRY_D_PARENT, member("dentry", "d_parent")?),
        (globals::OFF_FILE_DENTRY, member("file", "f_path")? + member("path", "dentry")?),
        (globals::OFF_TASK_TGID, member("task_struct", "tgid")?),
        (globals::OFF_TASK_CGROUPS, member("task_struct", "cgroups")?),
        (globals::OFF_TASK_STACK, member("task_struct", "stack")?),
        (globals::OFF_CSS_SET_DFL_CGRP, member("css_set", "dfl_cgrp")?),
        (globals::OFF_CGROUP_KN, member("cgroup", "kn")?),
        (globals::OFF_VMA_VM_FILE, member("vm_area_struct", "vm_file")?),
        (globals::OFF_PATH_DENTRY, member("path", "dentry")?),
        (globals::OFF_UNIX_SOCK_DENTRY, member("unix_sock", "path")? + member("path", "dentry")?),
        (globals::OFF_SOCKET_SK, member("socket", "sk")?),
        (globals::OFF_TASK_FS, member("task_struct", "fs")?),
        (globals::OFF_FS_SEQ, member("fs_struct", "seq")?),
        (globals::OFF_FS_ROOT_MNT, member("fs_struct", "root")? + member("path", "mnt")?),
        (globals::OFF_FS_ROOT_DENTRY, member("fs_struct", "root")? + member("path", "dentry")?),
        (globals::OFF_FILE_MNT, member("file", "f_path")? + member("path", "mnt")?),
        (globals::OFF_DENTRY_HASH_PPREV, member("dentry", "d_hash")? + member("hlist_bl_node", "pprev")?),
        (globals::OFF_DENTRY_NAME_HASH, member("dentry", "d_name")? + member("qstr", "hash")?),
        (globals::OFF_DENTRY_NAME_LEN, member("dentry", "d_name")? + member("qstr", "len")?),
    ])
}

/// Gives back the embedded object's pages once the programs are loaded (read again from
/// the binary should anything touch them): megabytes of the agent's resident memory.
pub fn release_object_pages() {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = OBJECT.as_ptr() as usize;
    let (first, end) = (start.next_multiple_of(page), (start + OBJECT.len()) / page * page);
    if end > first {
        // SAFETY: whole pages inside a read-only static mapped from the binary: dropping
        // them only means the next access reads the same bytes from the file again.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
    }
}

/// A loaded program as the kernel knows it.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    pub name: String,
    /// The kernel's program id (what `bpftool prog show id N` and BPF statistics name).
    pub id: u32,
    /// Instructions the verifier processed to load it (kernel ≥ 5.16).
    pub verified_insns: Option<u32>,
}

/// Every loaded program of `ebpf` (programs the kernel cannot describe are left out).
pub fn loaded(ebpf: &Ebpf) -> Vec<LoadedProgram> {
    ebpf.programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            Some(LoadedProgram {
                name: name.to_owned(),
                id: info.id(),
                verified_insns: info.verified_instruction_count(),
            })
        })
        .collect()
}

fn lsm<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

fn trace<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut BtfTracePoint, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

fn sock_addr<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

/// Attaches the loaded programs and hands back their links, named after the programs.
/// A link detaches when dropped unless it was pinned first.
pub fn attach(ebpf: &mut Ebpf, options: &Options) -> Result<Vec<(&'static str, FdLink)>, LoadError> {
    let mut links = Vec::new();
    // The tracepoints first: the context-switch record fills before any hook reads it.
    for (name, _) in TRACE_PROGRAMS {
        let program = trace(ebpf, name)?;
        let id = program.attach().map_err(|source| LoadError::Program { name, source })?;
        let link = program.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        links.push((name, FdLink::from(link)));
    }
    if !options.network_only {
        for (name, kind, _) in RENAME_PROGRAMS {
            let failed = |source| LoadError::Program { name, source };
            let program = ebpf.program_mut(name).ok_or(LoadError::MissingProgram(name))?;
            let link = if kind == "fentry" {
                let program: &mut FEntry = program.try_into().map_err(failed)?;
                let id = program.attach().map_err(failed)?;
                FdLink::from(program.take_link(id).map_err(failed)?)
            } else {
                let program: &mut FExit = program.try_into().map_err(failed)?;
                let id = program.attach().map_err(failed)?;
                FdLink::from(program.take_link(id).map_err(failed)?)
            };
            links.push((name, link));
        }
        for (name, _) in LSM_PROGRAMS {
            let program = lsm(ebpf, name)?;
            let id = program.attach().map_err(|source| LoadError::Program { name, source })?;
            let link = program.take_link(id).map_err(|source| LoadError::Program { name, source })?;
            links.push((name, FdLink::from(link)));
        }
    }
    let root = File::open(&options.cgroup_root)
        .map_err(|source| LoadError::CgroupRoot { path: options.cgroup_root.clone(), source })?;
    for name in CGROUP_PROGRAMS {
        let program = sock_addr(ebpf, name)?;
        // Attached as a BPF link, which always coexists with other programs on the cgroup;
        // the kernel rejects link creation with the ALLOW_MULTI flag, so pass no flag.
        let id = program
            .attach(&root, CgroupAttachMode::Single)
            .map_err(|source| LoadError::Program { name, source })?;
        let link = program.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| LoadError::Link { name, message: e.to_string() })?;
        links.push((name, link));
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded object defines every map and program the agent expects.
    #[test]
    fn object_has_every_map_and_program() {
        let object = aya_obj::Object::parse(OBJECT).expect("parsing the embedded eBPF object");
        let sections = [enforcer_common::maps::RECORDS_SECTION, enforcer_common::maps::OPEN_CACHE_SECTION];
        for name in enforcer_common::maps::ALL.iter().chain(&[crate::kernel::log::MAP]).chain(&sections) {
            assert!(object.maps.contains_key(*name), "map {name} missing from the eBPF object");
        }
        let renames = RENAME_PROGRAMS.iter().map(|(p, _, _)| *p);
        for name in
            LSM_PROGRAMS.iter().chain(&TRACE_PROGRAMS).map(|(p, _)| *p).chain(CGROUP_PROGRAMS).chain(renames)
        {
            assert!(object.programs.contains_key(name), "program {name} missing from the eBPF object");
        }
        for global in [
            globals::OFF_BPRM_FILE,
            globals::OFF_FILE_F_PATH,
            globals::OFF_FILE_F_MODE,
            globals::OFF_FILE_F_INODE,
            globals::OFF_KERNFS_PARENT,
            globals::OFF_DENTRY_NAME,
            globals::OFF_TASK_CGROUPS,
            globals::OFF_CGROUP_KN,
            globals::OFF_VMA_VM_FILE,
            globals::OFF_PATH_DENTRY,
            globals::OFF_UNIX_SOCK_DENTRY,
            globals::OFF_SOCKET_SK,
            globals::KERNEL_LOG,
            aya_log::LEVEL,
        ] {
            // Symbol names live in the ELF string table.
            assert!(OBJECT.windows(global.len()).any(|w| w == global.as_bytes()), "global {global} missing");
        }
    }
}
