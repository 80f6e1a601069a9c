//! Diagnostics of the programs' own failures, through aya-log.
//!
//! Only error paths log: a helper, map or kernel read that failed and left the hook to
//! its fail-open or fail-closed choice (`error!`), a refusal or a lost event that is not
//! the rules' doing (`warning!`), a failure that changes nothing but the cost of the next
//! call (`info!`). Never the per-call path of a judged access.
//!
//! Off unless the agent asks: every call is gated on [`KERNEL_LOG`], a read-only global
//! the agent sets at load (0 = off). The verifier reads frozen read-only globals as
//! constants, so with logging off it never walks a log call. Each call's aya-log code
//! lives in its own function, outside the hook's body: inlined, it changed the hooks'
//! code enough to double the work the verifier does on `file_open` even with logging
//! off (245k → 645k instructions on 6.12).
//!
//! A message about a hook starts with `hook {}: ` and the hook's code
//! (`enforcer_common::verdict::hook`); the agent shows the hook's name instead. Each
//! argument is written `name: type = value`.

pub const ERROR: u8 = 1;
pub const WARN: u8 = 2;
pub const INFO: u8 = 3;

/// The most verbose level logged (aya-log's numbering; 0 = nothing), set at load.
#[unsafe(no_mangle)]
static KERNEL_LOG: u8 = 0;

/// Whether calls at `level` log.
#[inline(always)]
pub fn enabled(level: u8) -> bool {
    // SAFETY: a read of our own global; volatile so the compiler keeps the read (and the
    // verifier, which knows its value, drops the dead branch).
    level <= unsafe { core::ptr::read_volatile(&raw const KERNEL_LOG) }
}

/// One gated log call, its aya-log code in a function of its own.
macro_rules! emit {
    ($gate:ident, $aya:ident, $fmt:literal $(, $name:ident: $ty:ty = $value:expr)* $(,)?) => {
        if $crate::diag::enabled($crate::diag::$gate) {
            #[inline(never)]
            fn emit($($name: $ty),*) {
                aya_log_ebpf::$aya!(&(), $fmt $(, $name)*);
            }
            emit($($value),*);
        }
    };
}

macro_rules! error {
    ($($args:tt)*) => { $crate::diag::emit!(ERROR, error, $($args)*) };
}

macro_rules! warning {
    ($($args:tt)*) => { $crate::diag::emit!(WARN, warn, $($args)*) };
}

macro_rules! info {
    ($($args:tt)*) => { $crate::diag::emit!(INFO, info, $($args)*) };
}

pub(crate) use {emit, error, info, warning};
