//! A tiny seeded PRNG (SplitMix64): deterministic, no dependency, good enough for a simulator.

/// SplitMix64 generator. The same seed always gives the same sequence.
#[derive(Debug, Clone)]
pub(crate) struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator starting from `seed`.
    pub(crate) fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi` (`lo` when the range is empty).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        lo + self.next_u64() % span
    }

    /// True with probability `p` (clamped to 0..=1). Draws nothing when `p` is 0 or 1, so a
    /// disabled fault does not shift the sequence of the others.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 || p.is_nan() {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
}

#[cfg(test)]
mod tests {
    use super::SimRng;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..100 {
            let x = a.range(100_000_000, 999_999_999);
            assert_eq!(x, b.range(100_000_000, 999_999_999));
            assert!((100_000_000..=999_999_999).contains(&x));
        }
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
    }
}
