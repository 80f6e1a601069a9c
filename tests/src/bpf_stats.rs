//! Program run time from the kernel's BPF statistics, and empty programs to measure it
//! against: the floor a hook of that type costs before it does anything.
//!
//! The empty programs are two instructions (`r0 = ret; exit`), loaded and attached with
//! `bpf(2)` directly: aya loads programs from an object file only, and an object built
//! for two instructions would be a second eBPF crate to build.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::programs::loaded_programs;

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_DETACH: i64 = 9;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_CREATE: i64 = 28;
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const PROG_TYPE_LSM: u32 = 29;
const ATTACH_CGROUP_INET4_CONNECT: u32 = 10;
const ATTACH_LSM_MAC: u32 = 27;
const F_ALLOW_MULTI: u32 = 2;

/// Statistics are collected while the returned descriptor is open.
pub fn enable() -> anyhow::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")
}

/// Total run time and run count of the program with this id so far.
pub fn counters(id: u32) -> anyhow::Result<(Duration, u64)> {
    for info in loaded_programs() {
        let info = info.context("listing loaded programs")?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("no loaded program has id {id}")
}

/// Run time and count of several programs, read before and after some work.
pub struct Sample(Vec<(u32, Duration, u64)>);

impl Sample {
    pub fn take(ids: &[u32]) -> anyhow::Result<Self> {
        ids.iter().map(|&id| counters(id).map(|(t, n)| (id, t, n))).collect::<anyhow::Result<_>>().map(Self)
    }

    /// Nanoseconds per run of `id` between `self` and `later`, and the runs counted.
    pub fn per_run(&self, later: &Self, id: u32) -> (f64, u64) {
        let find = |s: &Self| s.0.iter().find(|(i, _, _)| *i == id).map(|(_, t, n)| (*t, *n));
        let ((t0, n0), (t1, n1)) = (find(self).unwrap_or_default(), find(later).unwrap_or_default());
        let runs = n1.saturating_sub(n0);
        #[expect(clippy::cast_precision_loss, reason = "nanosecond totals far below 2^52")]
        let ns = if runs == 0 { 0.0 } else { t1.saturating_sub(t0).as_nanos() as f64 / runs as f64 };
        (ns, runs)
    }
}

/// The median of `values` (0 if there are none): a figure taken over batches of calls,
/// which a batch held up now and then does not move.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// An empty program, attached; detached and unloaded when dropped.
pub struct EmptyProgram {
    pub id: u32,
    prog: OwnedFd,
    attachment: Attachment,
    /// Programs loaded only to fill the code page around an LSM program's code (see
    /// [`lsm`](Self::lsm)), unloaded with it.
    _fillers: Vec<OwnedFd>,
}

enum Attachment {
    Cgroup {
        cgroup: OwnedFd,
        attach_type: u32,
    },
    /// An LSM program's link, while attached: it lives as long as its descriptor.
    Link(Option<OwnedFd>),
}

impl EmptyProgram {
    /// A `cgroup/connect4` program that allows, attached to `cgroup` next to any others.
    pub fn connect4(cgroup: &Path) -> anyhow::Result<Self> {
        let prog = load(PROG_TYPE_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_CONNECT, 0, 0, 1, "empty_connect4")?;
        let dir = std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        let cgroup = OwnedFd::from(dir);
        let mut attr = Attr::default();
        attr.u32_at(0, fd_u32(&cgroup));
        attr.u32_at(4, fd_u32(&prog));
        attr.u32_at(8, ATTACH_CGROUP_INET4_CONNECT);
        attr.u32_at(12, F_ALLOW_MULTI);
        bpf(BPF_PROG_ATTACH, &mut attr).context("attaching the empty connect4 program")?;
        let id = id_of(&prog)?;
        Ok(Self {
            id,
            prog,
            attachment: Attachment::Cgroup { cgroup, attach_type: ATTACH_CGROUP_INET4_CONNECT },
            _fillers: Vec::new(),
        })
    }

    /// An LSM program on `hook` (e.g. `file_open`) that allows: non-sleepable, as ours are,
    /// and with a page of code to itself, as ours has in effect.
    ///
    /// The kernel packs the code of BPF programs and of the trampolines that call them
    /// into shared pages, 64-byte chunks handed out first fit. An empty program loaded
    /// last and attached then can have its hook's trampoline, built at the attach, in
    /// the chunks right after it: the call into it runs on a page the trampoline has
    /// just run, where ours (loaded with the agent, long before any trampoline) runs on a
    /// page of its own. Under emulation, at an exec, just after a switch of address
    /// space, a page of code first run costs about half a microsecond, and the empty
    /// program measured 1.0 µs beside its trampoline and 1.5 µs apart from it in two
    /// runs. So empty programs (one chunk each) are loaded until one takes the first chunk
    /// of a page and the next 63 the rest of it, and those are kept loaded with it: the
    /// page held no code before, and no trampoline built later can land on it.
    pub fn lsm(hook: &str) -> anyhow::Result<Self> {
        let btf = aya::Btf::from_sys_fs().context("reading kernel BTF")?;
        let func = format!("bpf_lsm_{hook}");
        let btf_id = btf
            .id_by_type_name_kind(&func, aya_obj::btf::BtfKind::Func)
            .with_context(|| format!("kernel BTF has no {func}"))?;
        let load_empty = || load(PROG_TYPE_LSM, ATTACH_LSM_MAC, btf_id, 0, 0, &format!("empty_{hook}"));
        let mut fillers = Vec::new();
        let prog = loop {
            let prog = load_empty()?;
            // The kernel hides code addresses: nothing to place by.
            let Some(at) = code_address(&prog)? else { break prog };
            if at % PAGE >= CHUNK || fillers.len() + CHUNKS_PER_PAGE > MAX_FILLERS {
                if fillers.len() >= MAX_FILLERS {
                    break prog;
                }
                fillers.push(prog);
                continue;
            }
            // Fill the rest of the page: first fit takes its free chunks before any on a
            // later page. All of them free means the page held no code before.
            let mut on_page = 0;
            loop {
                let filler = load_empty()?;
                let page = code_address(&filler)?.map(|a| a / PAGE);
                fillers.push(filler);
                if page != Some(at / PAGE) {
                    break;
                }
                on_page += 1;
            }
            if on_page == CHUNKS_PER_PAGE - 1 {
                break prog;
            }
            // A page with code on it already (a chunk freed among others): this one is a
            // filler too.
            fillers.push(prog);
        };
        let id = id_of(&prog)?;
        let mut empty = Self { id, prog, attachment: Attachment::Link(None), _fillers: fillers };
        empty.attach_lsm(true)?;
        Ok(empty)
    }

    /// Attaches an LSM program made by [`lsm`](Self::lsm) again, or detaches it: it
    /// stays loaded, with its id and counters. The kernel runs the programs on one hook
    /// from the last attached to the first, so detaching this one puts the first
    /// attached in the first place again. Does nothing to a cgroup program.
    pub fn attach_lsm(&mut self, attached: bool) -> anyhow::Result<()> {
        let Attachment::Link(link) = &mut self.attachment else { return Ok(()) };
        if !attached {
            *link = None;
            return Ok(());
        }
        if link.is_none() {
            let mut attr = Attr::default();
            attr.u32_at(0, fd_u32(&self.prog));
            attr.u32_at(8, ATTACH_LSM_MAC);
            let fd = bpf(BPF_LINK_CREATE, &mut attr).context("attaching the empty LSM program")?;
            // SAFETY: BPF_LINK_CREATE returned a new descriptor we now own.
            *link = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(())
    }
}

impl Drop for EmptyProgram {
    fn drop(&mut self) {
        if let Attachment::Cgroup { cgroup, attach_type } = &self.attachment {
            let mut attr = Attr::default();
            attr.u32_at(0, fd_u32(cgroup));
            attr.u32_at(4, fd_u32(&self.prog));
            attr.u32_at(8, *attach_type);
            // Nothing to do about a failure: the cgroup is removed by its owner anyway.
            let _ = bpf(BPF_PROG_DETACH, &mut attr);
        }
    }
}

/// `union bpf_attr`, as bytes: each command reads its own fields at fixed offsets and
/// requires the rest to be zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Default for Attr {
    fn default() -> Self {
        Self([0; 128])
    }
}

impl Attr {
    fn u32_at(&mut self, at: usize, value: u32) {
        self.0[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn u64_at(&mut self, at: usize, value: u64) {
        self.0[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i32> {
    // SAFETY: `attr` is a zero-padded `bpf_attr` of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(ret).map_err(|_| std::io::Error::other("bpf(2) returned an out-of-range value"))
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Loads `r0 = ret; exit` as a program of `prog_type`.
fn load(
    prog_type: u32,
    attach_type: u32,
    attach_btf_id: u32,
    flags: u32,
    ret: u32,
    name: &str,
) -> anyhow::Result<OwnedFd> {
    // BPF_MOV64_IMM(r0, ret) and BPF_EXIT_INSN(), little-endian encoding.
    let insns: [u64; 2] = [0xb7 | (u64::from(ret) << 32), 0x95];
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 4096];
    let mut attr = Attr::default();
    attr.u32_at(0, prog_type);
    attr.u32_at(4, 2);
    attr.u64_at(8, insns.as_ptr() as u64);
    attr.u64_at(16, license.as_ptr() as u64);
    attr.u32_at(24, 1);
    attr.u32_at(28, u32::try_from(log.len()).expect("small"));
    attr.u64_at(32, log.as_mut_ptr() as u64);
    attr.u32_at(44, flags);
    let name = name.as_bytes();
    attr.0[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    attr.u32_at(68, attach_type);
    attr.u32_at(108, attach_btf_id);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!("loading an empty program: {e}: {}", String::from_utf8_lossy(&log[..end]))
        }
    }
}

/// Bytes in a page of code and in a chunk of the kernel's BPF code packs.
const PAGE: u64 = 4096;
const CHUNK: u64 = 64;
const CHUNKS_PER_PAGE: usize = 64;

/// Programs loaded at most to place one empty program (sixteen pages' chunks): first fit
/// fills the free chunks of earlier pages first, and a page found with code on it costs
/// up to 63. Past it the program is used where it lies, which the bench prints.
const MAX_FILLERS: usize = 1024;

/// Where the code of the program with this id starts, and its main function's length
/// in bytes, if the kernel shows them.
pub fn code_span_of(id: u32) -> anyhow::Result<Option<(u64, u32)>> {
    let mut attr = Attr::default();
    attr.u32_at(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).with_context(|| format!("opening program {id}"))?;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new descriptor we now own.
    code_span(&unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address of the program's code, if the kernel shows it.
fn code_address(prog: &OwnedFd) -> anyhow::Result<Option<u64>> {
    Ok(code_span(prog)?.map(|(address, _)| address))
}

/// The address of the program's code and its main function's length (`jited_ksyms` and
/// `jited_func_lens` of `bpf_prog_info`, first of each), if the kernel shows them.
fn code_span(prog: &OwnedFd) -> anyhow::Result<Option<(u64, u32)>> {
    let mut address = 0u64;
    let mut length = 0u32;
    // `struct bpf_prog_info` up to `jited_func_lens`: `nr_jited_ksyms` and
    // `nr_jited_func_lens` at 104 and 108, the pointers to fill at 112 and 120.
    let mut info = [0u8; 128];
    info[104..108].copy_from_slice(&1u32.to_ne_bytes());
    info[108..112].copy_from_slice(&1u32.to_ne_bytes());
    info[112..120].copy_from_slice(&(&raw mut address as u64).to_ne_bytes());
    info[120..128].copy_from_slice(&(&raw mut length as u64).to_ne_bytes());
    let mut attr = Attr::default();
    attr.u32_at(0, fd_u32(prog));
    attr.u32_at(4, 128);
    attr.u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("reading a program's information")?;
    Ok((address != 0).then_some((address, length)))
}

/// The BPF code symbols (`/proc/kallsyms`) other than `except` that start on the page of
/// code at `address`, as `name`.
pub fn page_neighbours(address: u64, except: u64) -> anyhow::Result<Vec<String>> {
    let symbols = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(symbols
        .lines()
        .filter(|line| line.ends_with("[bpf]"))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let at = u64::from_str_radix(fields.next()?, 16).ok()?;
            let name = fields.nth(1)?;
            (at / PAGE == address / PAGE && at != except).then(|| name.to_owned())
        })
        .collect())
}

/// The kernel's id of the program behind `fd`.
fn id_of(fd: &OwnedFd) -> anyhow::Result<u32> {
    // fdinfo of a program descriptor names its id.
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).context("reading fdinfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
        .context("fdinfo names no prog_id")
}
