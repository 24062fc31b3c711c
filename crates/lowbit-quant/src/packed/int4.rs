//! Group-wise int4 (`formats/int4.md`): symmetric (scale absmax/7, codes −7..=7) or asymmetric
//! (scale (max−min)/15 and a zero point, codes −8..=7).
//!
//! All arithmetic is `f32`, one rounding per operation, in the order the spec writes it; codes
//! are round-half-to-even of a clamped quotient (done with the 1.5·2²³ trick, exact for
//! |t| ≤ 8, so the loop vectorises on baseline x86-64).

use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};

/// 1.5 · 2²³: adding it to |t| < 2²² rounds t to an integer (half to even) in the low mantissa.
const MAGIC: f32 = 12_582_912.0;

/// Codes of `x` in a sub-chunk at most this long are built on the stack, then packed.
const CHUNK: usize = 128;

/// clamp(round_half_even((v − zero) / scale), lo, hi), with NaN to 0; `scale` is not 0.
#[inline(always)]
fn code(v: f32, zero: f32, scale: f32, lo: f32, hi: f32) -> i8 {
    let t = (v - zero) / scale;
    let t = if t > hi { hi } else { t };
    let t = if t < lo { lo } else { t };
    #[expect(clippy::eq_op, reason = "false only for NaN")]
    let t = if t == t { t } else { 0.0 };
    #[expect(clippy::cast_possible_wrap, clippy::cast_possible_truncation, reason = "|c| ≤ 8")]
    let c = ((t + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8;
    c
}

/// `(min, max)` of `x`, NaN ignored; `(0, 0)` when there is nothing else.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let mut min = tail.iter().fold(f32::INFINITY, |a, &v| if v < a { v } else { a });
    let mut max = tail.iter().fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    for i in 0..8 {
        min = if lo[i] < min { lo[i] } else { min };
        max = if hi[i] > max { hi[i] } else { max };
    }
    if min > max { (0.0, 0.0) } else { (min, max) }
}

/// Quantizes one group into `packed` (`x.len()/2` bytes) and returns its BF16 scale and zero
/// point (the zero point is 0 when symmetric).
#[inline(always)]
fn group(x: &[f32], asym: bool, packed: &mut [u8]) -> (u16, u16) {
    let (sb, zb, lo, hi) = if asym {
        let (min, max) = min_max(x);
        let sb = fp32_to_bf16((max - min) / 15.0);
        (sb, fp32_to_bf16(min + 8.0 * bf16_to_fp32(sb)), -8.0, 7.0)
    } else {
        (fp32_to_bf16(super::absmax(x) / 7.0), 0, -7.0, 7.0)
    };
    let (s, z) = (bf16_to_fp32(sb), bf16_to_fp32(zb));
    let mut codes = [0i8; CHUNK];
    for (x, packed) in x.chunks(CHUNK).zip(packed.chunks_mut(CHUNK / 2)) {
        let codes = &mut codes[..x.len()];
        if s == 0.0 {
            codes.fill(0);
        } else {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = code(v, z, s, lo, hi);
            }
        }
        lowbit_layout::int4::pack(codes, packed);
    }
    (sb, zb)
}

/// Quantizes whole rows of length `k` (`x.len()` a multiple of `k`) in groups of `group`:
/// `packed` gets `x.len()/2` bytes (`lowbit_layout::int4::pack`), `scales` (and, when `asym`,
/// `zeros`) get the BF16 bits of one value per group, row-major `[rows, k/group]` (the writer
/// transposes them to `[K/g, N]`). `zeros` is ignored when not `asym`.
///
/// `group` must be even and divide `k`; with another `group`, or buffers too short, only the
/// whole groups that fit are written.
pub fn quantize_rows(
    x: &[f32],
    k: usize,
    group: usize,
    asym: bool,
    packed: &mut [u8],
    scales: &mut [u16],
    zeros: &mut [u16],
) {
    debug_assert!(
        group > 0
            && group.is_multiple_of(2)
            && k.is_multiple_of(group)
            && x.len().is_multiple_of(k)
    );
    debug_assert!(packed.len() == x.len() / 2 && scales.len() == x.len() / group);
    if group == 0 || !group.is_multiple_of(2) {
        return;
    }
    struct K<'a>(&'a [f32], usize, bool, &'a mut [u8], &'a mut [u16], &'a mut [u16]);
    impl crate::simd::Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            let K(x, group, asym, packed, scales, zeros) = self;
            let groups = x.chunks_exact(group).zip(packed.chunks_exact_mut(group / 2));
            for (i, ((x, packed), s)) in groups.zip(scales.iter_mut()).enumerate() {
                let (sb, zb) = self::group(x, asym, packed);
                *s = sb;
                if asym && let Some(z) = zeros.get_mut(i) {
                    *z = zb;
                }
            }
        }
    }
    crate::simd::run(K(x, group, asym, packed, scales, zeros));
}

#[cfg(test)]
mod tests {
    use super::quantize_rows;
    use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
    use lowbit_fixtures::rng::Rng;

    /// The spec written out plainly, one element at a time, with `f32::round_ties_even`.
    fn plain(x: &[f32], asym: bool) -> (Vec<i8>, u16, u16) {
        let finite = x.iter().copied();
        let (sb, zb) = if asym {
            let min = finite.clone().fold(f32::INFINITY, f32::min);
            let max = finite.fold(f32::NEG_INFINITY, f32::max);
            let sb = fp32_to_bf16((max - min) / 15.0);
            (sb, fp32_to_bf16(min + 8.0 * bf16_to_fp32(sb)))
        } else {
            (fp32_to_bf16(finite.map(f32::abs).fold(0.0, f32::max) / 7.0), 0)
        };
        let (s, z, lo) = (bf16_to_fp32(sb), bf16_to_fp32(zb), if asym { -8.0 } else { -7.0 });
        let codes =
            x.iter()
                .map(|&v| {
                    if s == 0.0 { 0 } else { ((v - z) / s).round_ties_even().clamp(lo, 7.0) as i8 }
                })
                .collect();
        (codes, sb, zb)
    }

    #[test]
    fn matches_the_plain_rule() {
        let mut rng = Rng::new(7);
        for group in [32usize, 64, 128] {
            for asym in [false, true] {
                let k = 256;
                let mut x: Vec<f32> = (0..2 * k).map(|_| rng.normal() as f32 * 0.02).collect();
                // Edges: a zero group, a constant group, an exact tie of the scale, an outlier.
                x[..group].fill(0.0);
                x[group..2 * group].fill(-0.3);
                x[2 * group] = 7.0;
                x[2 * group + 1] = 2.5;
                x[2 * group + 2] = -3.5;
                x[2 * k - 1] = 40.0;
                let mut packed = vec![0u8; k];
                let mut scales = vec![0u16; 2 * k / group];
                let mut zeros = vec![0u16; 2 * k / group];
                quantize_rows(&x, k, group, asym, &mut packed, &mut scales, &mut zeros);
                let mut codes = vec![0i8; 2 * k];
                lowbit_layout::int4::unpack(&packed, &mut codes);
                for (j, xg) in x.chunks(group).enumerate() {
                    let (want, sb, zb) = plain(xg, asym);
                    assert_eq!(
                        &codes[j * group..(j + 1) * group],
                        &want[..],
                        "g{group} {asym} {j}"
                    );
                    assert_eq!(scales[j], sb, "scale g{group} {asym} {j}");
                    if asym {
                        assert_eq!(zeros[j], zb, "zero g{group} {j}");
                    }
                }
                // The tie 2.5 (scale exactly 1) rounds to 2, −3.5 to −4.
                if !asym {
                    assert_eq!(&codes[2 * group..2 * group + 3], &[7, 2, -4]);
                }
            }
        }
    }
}
