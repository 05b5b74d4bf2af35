//! A small seeded generator: reconnect jitter and ActionID prefixes are reproducible from
//! the config's seed, so virtual-time tests can assert exact times and IDs.

/// SplitMix64: tiny, fast, and good enough for jitter and ID prefixes (not for secrets).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (tiny modulo bias is irrelevant for jitter).
    pub(crate) fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }

    /// Eight lowercase base-36 characters.
    pub(crate) fn prefix(&mut self) -> String {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut v = self.next_u64();
        (0..8)
            .map(|_| {
                let c = DIGITS[(v % 36) as usize] as char;
                v /= 36;
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).prefix(), Rng::new(2).prefix());
    }

    #[test]
    fn below_or_eq_stays_in_range() {
        let mut r = Rng::new(3);
        for max in [0u64, 1, 5, 1000] {
            for _ in 0..1000 {
                assert!(r.below_or_eq(max) <= max);
            }
        }
    }
}
