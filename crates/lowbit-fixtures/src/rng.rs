//! A seeded generator with a fixed algorithm, so that fixtures never change with a crate update.
//!
//! SplitMix64 for bits, Box–Muller for [`Rng::normal`] and a 256-layer ziggurat for the faster
//! [`Rng::normal_f32`]; no dependency can alter any of them.
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

    /// Standard normal sample by Marsaglia and Tsang's ziggurat (256 layers, the layout of
    /// `rand_distr`): one 64-bit draw for about 99 % of samples, against two uniforms, a
    /// logarithm, a square root and a cosine for [`Rng::normal`], so several times faster.
    /// A different stream from [`Rng::normal`]: the committed fixtures keep that one.
    pub fn normal_f32(&mut self) -> f32 {
        let (x_tab, f_tab) = ziggurat_tables();
        loop {
            let bits = self.next_u64();
            let i = (bits & 0xff) as usize;
            // Bits 12..64 give u in [-1, 1); bits 0..8 chose the layer.
            let u = (bits >> 12) as f64 / (1u64 << 51) as f64 - 1.0;
            let x = u * x_tab[i];
            if x.abs() < x_tab[i + 1] {
                return x as f32;
            }
            if i == 0 {
                // The tail beyond R (Marsaglia, 1964).
                let (mut x, mut y) = (1.0f64, 0.0f64);
                while -2.0 * y < x * x {
                    x = (1.0 - self.uniform()).ln() / ZIG_R;
                    y = (1.0 - self.uniform()).ln();
                }
                return (if u < 0.0 { x - ZIG_R } else { ZIG_R - x }) as f32;
            }
            if f_tab[i + 1] + (f_tab[i] - f_tab[i + 1]) * self.uniform() < (-0.5 * x * x).exp() {
                return x as f32;
            }
        }
    }
}

/// Where the ziggurat's base layer meets the tail, and each layer's area (256 layers).
const ZIG_R: f64 = 3.654_152_885_361_009;
const ZIG_V: f64 = 0.004_928_673_233_99;

/// The layers' right edges `x[0..=256]` (`x[0] = V/f(R)` for the base strip, `x[1] = R`, …,
/// `x[256] = 0`) and the density at each, computed once.
fn ziggurat_tables() -> &'static ([f64; 257], [f64; 257]) {
    static TABLES: std::sync::OnceLock<([f64; 257], [f64; 257])> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let f = |x: f64| (-0.5 * x * x).exp();
        let mut x = [0.0; 257];
        x[0] = ZIG_V / f(ZIG_R);
        x[1] = ZIG_R;
        for i in 2..256 {
            x[i] = (-2.0 * (ZIG_V / x[i - 1] + f(x[i - 1])).ln()).sqrt();
        }
        x[256] = 0.0;
        let mut fx = [0.0; 257];
        for i in 0..257 {
            fx[i] = f(x[i]);
        }
        (x, fx)
    })
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

    #[test]
    fn ziggurat_is_standard_normal() {
        let (x, _) = super::ziggurat_tables();
        // The layers close: the top one ends at the mode.
        assert!(x[255] > 0.0 && x[255] < 0.3, "{}", x[255]);
        let mut r = Rng::new(11);
        let n = 2_000_000;
        let xs: Vec<f64> = (0..n).map(|_| f64::from(r.normal_f32())).collect();
        let mean = xs.iter().sum::<f64>() / f64::from(n);
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / f64::from(n) / var / var;
        assert!(mean.abs() < 0.003 && (var - 1.0).abs() < 0.005, "{mean} {var}");
        assert!((kurt - 3.0).abs() < 0.03, "{kurt}");
        // Tail masses: P(|x| > 1) = 0.3173, P(|x| > 3) = 0.0027, P(|x| > 4) = 6.3e-5.
        let frac = |t: f64| xs.iter().filter(|x| x.abs() > t).count() as f64 / f64::from(n);
        assert!((frac(1.0) - 0.3173).abs() < 0.002, "{}", frac(1.0));
        assert!((frac(3.0) - 0.0027).abs() < 0.0002, "{}", frac(3.0));
        assert!((frac(4.0) - 6.33e-5).abs() < 2.5e-5, "{}", frac(4.0));
    }
}
