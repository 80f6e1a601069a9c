//! Rule filters: per policy slot, one bit per possible key of the path rules and one per
//! possible key of the rules by file identity. The agent sets the bit of every key it
//! writes into a slot before that slot is put in force; a hook looks a key up only when
//! its bit is set. A clear bit proves the key absent, a set bit proves nothing (another
//! key may share it), so a filter can only save lookups, never change a judgement.
//!
//! A path is looked up at every directory prefix and a file identity at every directory
//! level above it, and almost none of those keys exist: the filter turns each absent key
//! into one array read and one bit test instead of a hash lookup.
#![expect(clippy::inline_always, reason = "BPF-to-BPF calls cost verifier state; inlined on purpose")]

/// 2^18 bits (32 KiB) per filter: with 10,000 keys in a slot about 4% of absent keys
/// still cost their lookup.
pub const FILTER_BITS_LOG2: u32 = 18;
/// 64-bit words per filter.
pub const FILTER_WORDS: usize = 1 << (FILTER_BITS_LOG2 - 6);

/// Which filter of a slot.
pub mod which {
    /// Keys of `PATH_RULES`.
    pub const PATH: u32 = 0;
    /// Keys of `INODE_RULES`.
    pub const INODE: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Value of `RULE_FILTERS`: the bits of one filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleFilter {
    pub words: [u64; FILTER_WORDS],
}

const _: () = assert!(size_of::<RuleFilter>() == 32 * 1024);

impl RuleFilter {
    #[expect(clippy::large_stack_arrays, reason = "a constant; the agent keeps filters boxed")]
    pub const EMPTY: Self = Self { words: [0; FILTER_WORDS] };

    pub fn set(&mut self, bit: u32) {
        self.words[(bit >> 6) as usize & (FILTER_WORDS - 1)] |= 1 << (bit & 63);
    }

    #[must_use]
    #[inline(always)]
    pub fn has(&self, bit: u32) -> bool {
        self.words[(bit >> 6) as usize & (FILTER_WORDS - 1)] & (1 << (bit & 63)) != 0
    }
}

/// Index of `filter` (a [`which`]) of `slot` in `RULE_FILTERS`.
#[must_use]
#[inline(always)]
pub const fn index(slot: u32, filter: u32) -> u32 {
    slot * which::COUNT + filter
}

/// Multiplicative hashing (Fibonacci): the top bits of the product spread inputs that
/// differ in any bit, sequential inode numbers included.
#[inline(always)]
const fn spread(a: u64, b: u64) -> u32 {
    // The top FILTER_BITS_LOG2 bits: the cast keeps them all.
    ((a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILTER_BITS_LOG2)) as u32
}

/// The bit of a `PATH_RULES` key (its slot aside).
#[must_use]
#[inline(always)]
pub const fn path_bit(hash: u64, len: u16, identity: u32, kind: u8) -> u32 {
    spread(hash, (len as u64) | ((kind as u64) << 16) | ((identity as u64) << 24))
}

/// The bit of an `INODE_RULES` key (its slot aside).
#[must_use]
#[inline(always)]
pub const fn inode_bit(ino: u64, dev: u32, identity: u32, kind: u8) -> u32 {
    spread(ino ^ ((dev as u64) << 32), (identity as u64) | ((kind as u64) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_bit_is_found_and_absent_keys_mostly_are_not() {
        let mut filter = RuleFilter::EMPTY;
        for ino in 0..10_000u64 {
            filter.set(inode_bit(ino, 8, 1, 4));
        }
        for ino in 0..10_000u64 {
            assert!(filter.has(inode_bit(ino, 8, 1, 4)));
        }
        // Other identities, kinds, devices and inodes: few false positives.
        let mut hits = 0;
        for ino in 10_000..20_000u64 {
            hits += u32::from(filter.has(inode_bit(ino, 8, 1, 4)));
            hits += u32::from(filter.has(inode_bit(ino - 10_000, 8, 2, 4)));
            hits += u32::from(filter.has(inode_bit(ino - 10_000, 8, 1, 3)));
            hits += u32::from(filter.has(inode_bit(ino - 10_000, 9, 1, 4)));
        }
        assert!(hits < 40_000 / 10, "{hits} false positives of 40,000");
    }

    #[test]
    fn path_bits_depend_on_every_key_field() {
        let base = path_bit(0x1234_5678_9abc_def0, 10, 1, 4);
        assert_ne!(base, path_bit(0x1234_5678_9abc_def1, 10, 1, 4));
        assert_ne!(base, path_bit(0x1234_5678_9abc_def0, 11, 1, 4));
        assert_ne!(base, path_bit(0x1234_5678_9abc_def0, 10, 2, 4));
        assert_ne!(base, path_bit(0x1234_5678_9abc_def0, 10, 1, 3));
        assert!(base < 1 << FILTER_BITS_LOG2);
    }
}
