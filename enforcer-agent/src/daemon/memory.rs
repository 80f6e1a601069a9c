//! Giving freed heap memory back to the system after large, rare allocations (loading
//! the programs, parsing and compiling a large policy set), so the agent's resident
//! memory follows what it holds rather than its peak.

/// Returns the heap's free pages to the system (glibc keeps them otherwise).
pub fn trim_heap() {
    // SAFETY: glibc's malloc_trim only releases free memory; no pointer is involved.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When the last large allocation ended, if the heap has not been trimmed since.
static TRIM_DUE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// How long the agent must have been without a policy apply before the heap is trimmed:
/// trimming right after each apply made the next one fault every page back in.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Asks for [`trim_heap`] once the agent has been quiet for a while (see
/// [`trim_if_quiet`]); called after each policy apply.
pub fn trim_later() {
    *TRIM_DUE.lock().expect("trim lock") = Some(std::time::Instant::now());
}

/// Trims the heap if an apply asked for it and none came for [`QUIET`] since; called on
/// the agent's housekeeping tick.
pub fn trim_if_quiet() {
    let mut due = TRIM_DUE.lock().expect("trim lock");
    if due.is_some_and(|since| since.elapsed() >= QUIET) {
        *due = None;
        drop(due);
        // Off the calling thread: trimming a large heap takes milliseconds, which the
        // main loop (draining verdicts, answering the API) should not wait for.
        if let Err(e) = std::thread::Builder::new().name("trim".into()).spawn(trim_heap) {
            tracing::debug!(error = %e, "no thread for trimming the heap; trimming here");
            trim_heap();
        }
    }
}
