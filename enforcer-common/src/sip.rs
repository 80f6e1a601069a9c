//! SipHash-1-3 with a secret key: the proof that a path the kernel found by its (public,
//! forgeable) FNV-1a index is the path a rule, grant or revoked credential names.
//!
//! Written out here rather than taken from a crate because the kernel programs feed it
//! one 8-byte word at a time from a `bpf_loop` callback; the agent runs the same code over
//! whole paths, and a test checks it against the `siphasher` crate.

/// The running state of one hash.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Sip {
    v: [u64; 4],
}

#[expect(clippy::inline_always, reason = "BPF-to-BPF calls cost verifier state; inlined on purpose")]
impl Sip {
    #[inline(always)]
    #[must_use]
    pub const fn new(key: [u64; 2]) -> Self {
        Self {
            v: [
                key[0] ^ 0x736f_6d65_7073_6575,
                key[1] ^ 0x646f_7261_6e64_6f6d,
                key[0] ^ 0x6c79_6765_6e65_7261,
                key[1] ^ 0x7465_6462_7974_6573,
            ],
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        let v = &mut self.v;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    /// Absorbs one full 8-byte little-endian word of the input.
    #[inline(always)]
    pub fn word(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }

    /// The hash of an input of `len` bytes whose last `len % 8` bytes are `tail` (little
    /// endian, upper bytes zero).
    #[inline(always)]
    #[must_use]
    pub fn finish(mut self, tail: u64, len: usize) -> u64 {
        self.word(tail | ((len as u64) << 56));
        self.v[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// The keyed hash of `bytes`.
#[must_use]
pub fn keyed(key: [u64; 2], bytes: &[u8]) -> u64 {
    let mut sip = Sip::new(key);
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        sip.word(u64::from_le_bytes(*word));
    }
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    sip.finish(u64::from_le_bytes(tail), bytes.len())
}

#[cfg(test)]
mod tests {
    use core::hash::Hasher as _;

    use super::keyed;

    #[test]
    fn matches_the_reference_siphash_1_3() {
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let text = b"/etc/payments/signing.key and some more bytes past a word";
        for len in 0..text.len() {
            let mut reference = siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]);
            reference.write(&text[..len]);
            assert_eq!(keyed(key, &text[..len]), reference.finish(), "length {len}");
        }
    }
}
