//! The boot clock the kernel stamps events with, turned into wall-clock time.

/// This boot's id (`/proc/sys/kernel/random/boot_id`; empty if unreadable, which makes
/// every boot-clock instant saved with it count as from another boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Now on the boot clock (`CLOCK_BOOTTIME`, the clock of kernel events), in nanoseconds.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Now, as RFC 3339 text.
pub fn wall_now() -> String {
    Clock::now().wall(boot_ns())
}

/// Converts `CLOCK_BOOTTIME` nanoseconds to RFC 3339 UTC.
pub struct Clock {
    /// Wall-clock nanoseconds at boot.
    boot_epoch_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let boot_ns = i128::from(boot_ns());
        let wall_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
        Self { boot_epoch_ns: wall_ns - boot_ns }
    }

    /// The boot-clock instant of a Unix time in nanoseconds (0 if before boot).
    pub fn boot_ns_at(&self, unix_ns: i64) -> u64 {
        u64::try_from(i128::from(unix_ns) - self.boot_epoch_ns).unwrap_or(0)
    }

    /// Now, in Unix nanoseconds.
    pub fn unix_now_ns() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn wall(&self, boot_ns: u64) -> String {
        rfc3339(self.boot_epoch_ns + i128::from(boot_ns))
    }
}

/// RFC 3339 with nanoseconds, UTC (`1970-01-01T00:00:00.000000000Z`). Instants outside
/// jiff's range (years −9999 to 9999) are clamped to its bounds.
pub fn rfc3339(epoch_ns: i128) -> String {
    let at = jiff::Timestamp::from_nanosecond(epoch_ns).unwrap_or(if epoch_ns < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    format!("{at:.9}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_310_000_123_456_789), "2026-11-22T01:13:20.123456789Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000000Z");
        assert!(rfc3339(i128::MAX).starts_with("9999-12-"), "clamped to the last representable instant");
    }
}
