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
