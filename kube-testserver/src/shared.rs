//! The server's state, shared by the connections, the watches and the test's handle.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::resource::Registry;
use crate::store::Store;

/// State shared by the connections, the watches and the test's own handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) store: Mutex<Store>,
    pub(crate) requests: Mutex<Vec<String>>,
    pub(crate) bookmark_interval: Mutex<Duration>,
}

/// Locks `mutex`, going on after a panic elsewhere: the test that panicked reports
/// itself, and the server should not add a second, misleading failure.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
