//! A seeded generator with a fixed algorithm, so that fixtures never change with a crate update.
//!
//! SplitMix64 for bits and Box–Muller for normal samples; no dependency can alter either.
//! It is the one seeded generator of lowbit's tests: the fixtures and the quantizer tests
//! (through a dev-dependency) both draw from it.

/// SplitMix64 (Steele, Lea and Flood, 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for a seed and a name, so that each tensor has its own stream.
    #[must_use]
    pub fn for_name(seed: u64, name: &str) -> Rng {
        // FNV-1a over the name, mixed with the seed.
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform index in `[0, n)` (`n > 0`): [`Rng::below`] for `usize`.
    pub fn index(&mut self, n: usize) -> usize {
        #[expect(clippy::cast_possible_truncation, reason = "below n, which is a usize")]
        let i = self.below(n as u64) as usize;
        i
    }

    /// `lo + (hi − lo)·u` for `u` uniform in `[0, 1)` with 24 random bits (an `f32` mantissa's
    /// worth). The result is below `hi` unless the rounding of that expression reaches it, which
    /// it never does for `[−1, 1)`.
    pub fn uniform_f32(&mut self, lo: f32, hi: f32) -> f32 {
        #[expect(clippy::cast_precision_loss, reason = "24 bits are exact in f32")]
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// Standard normal sample.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn is_stable() {
        // Reference values of SplitMix64 from seed 0 (the published test vector).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn ranges_hold() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert!(r.index(7) < 7);
            let v = r.uniform_f32(-1.0, 1.0);
            assert!((-1.0..1.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / f64::from(n);
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }
}
