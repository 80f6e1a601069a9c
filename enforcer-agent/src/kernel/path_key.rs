//! The agent's secret key for path proofs (`enforcer_common::sip`): random per agent
//! process, handed to the kernel programs as read-only globals at load and used for every
//! path rule, grant and revoked credential this process writes into their maps.

use std::sync::OnceLock;

use enforcer_common::sip;

/// This process's key (drawn from the kernel's random source on first use).
pub fn key() -> [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // SAFETY: `bytes` is a writable buffer of the length passed.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        assert_eq!(got, 16, "getrandom: {}", std::io::Error::last_os_error());
        let (a, b) = bytes.split_at(8);
        [
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        ]
    })
}

/// The proof of `path` the kernel checks on a hit.
pub fn check(path: &str) -> u64 {
    sip::keyed(key(), path.as_bytes())
}
