//! bitsandbytes NF4, byte for byte as `quantize_4bit(quant_type="nf4", blocksize=64)` on CPU
//! (bitsandbytes 0.50.2, `backends/default/ops.py`), and its double quantization
//! (`compress_statistics=True`: the CPU blockwise 8-bit quantizer of `libbitsandbytes_cpu`).
//!
//! - absmax per block of 64 in F32; a full block is scaled by the reciprocal
//!   `1 / max(absmax, 1e-38)` (a multiply), the trailing partial block by division by
//!   `max(absmax, 1e-38)`, whose clamped value is also what is stored; then clamped to [−1, 1].
//! - the code is the number of F32 midpoints of the sorted table strictly below the scaled value
//!   (`torch.bucketize`, `right=False`: a tie goes to the lower code).
//! - two codes per byte, the first in the high nibble; an odd tail is padded with code 7 (0.0).

use lowbit_layout::NF4_BLOCK;
use lowbit_layout::nf4::{CODE, nested_code};

const BLOCK: usize = NF4_BLOCK as usize;

/// The 15 F32 midpoints `(code[i] + code[i+1]) / 2`.
#[inline(always)]
fn bounds() -> [f32; 15] {
    let mut b = [0.0f32; 15];
    for (i, m) in b.iter_mut().enumerate() {
        *m = (CODE[i] + CODE[i + 1]) / 2.0;
    }
    b
}

/// `torch.bucketize(v, bounds)`: the count of bounds strictly below `v`, found by a
/// branch-free binary search over the 15 sorted bounds (four compares and selects of
/// thresholds instead of fifteen compares, so a vector lane does a quarter of the work).
#[inline(always)]
fn bucket(v: f32, b: &[f32; 15]) -> u8 {
    let sel = |m: bool, x: f32, y: f32| if m { x } else { y };
    let m1 = v > b[7];
    let m2 = v > sel(m1, b[11], b[3]);
    let t3 = sel(m1, sel(m2, b[13], b[9]), sel(m2, b[5], b[1]));
    let m3 = v > t3;
    let t4 = sel(
        m1,
        sel(m2, sel(m3, b[14], b[12]), sel(m3, b[10], b[8])),
        sel(m2, sel(m3, b[6], b[4]), sel(m3, b[2], b[0])),
    );
    let m4 = v > t4;
    8 * u8::from(m1) + 4 * u8::from(m2) + 2 * u8::from(m3) + u8::from(m4)
}

/// Quantizes `x` (a run of whole 64-blocks, except possibly the tensor's last one) into
/// `packed` (`x.len().div_ceil(2)` bytes, first element in the high nibble, an odd tail padded
/// with code 7) and `absmax` (one per block).
pub fn quantize(x: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    struct K<'a>(&'a [f32], &'a mut [u8], &'a mut [f32]);
    impl crate::simd::Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            quantize_inline(self.0, self.1, self.2);
        }
    }
    crate::simd::run(K(x, packed, absmax));
}

#[inline(always)]
fn quantize_inline(x: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    let bounds = bounds();
    let mut codes = [0u8; BLOCK];
    for ((block, bytes), am) in x.chunks(BLOCK).zip(packed.chunks_mut(BLOCK / 2)).zip(absmax) {
        let m = super::absmax(block);
        let clamped = m.max(1e-38);
        if block.len() == BLOCK {
            *am = m;
            let r = 1.0 / clamped;
            for (c, &v) in codes.iter_mut().zip(block) {
                *c = bucket((v * r).clamp(-1.0, 1.0), &bounds);
            }
        } else {
            *am = clamped;
            for (c, &v) in codes.iter_mut().zip(block) {
                *c = bucket((v / clamped).clamp(-1.0, 1.0), &bounds);
            }
            codes[block.len()..].fill(7);
        }
        for (byte, pair) in bytes.iter_mut().zip(codes.chunks_exact(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
    }
}

/// The double-quantization offset: the mean of all of a tensor's absmax values. bitsandbytes
/// takes torch's F32 `mean()`, whose summation order depends on the CPU's vector width and
/// thread count; this is the correctly rounded mean (an F64 sum, exact for any realistic count
/// of F32 values to well below F32 precision, divided, rounded once).
#[must_use]
pub fn mean(absmax: &[f32]) -> f32 {
    if absmax.is_empty() {
        return 0.0;
    }
    let sum: f64 = absmax.iter().map(|&v| f64::from(v)).sum();
    #[expect(clippy::cast_precision_loss, reason = "block counts are far below 2^53")]
    #[expect(clippy::cast_possible_truncation, reason = "rounded to F32 as torch's mean is")]
    let m = (sum / absmax.len() as f64) as f32;
    m
}

/// Double quantization of a run of absmax values (whole nested blocks of 256, except possibly
/// the last): `codes` one byte per absmax, `nested_absmax` one per nested block.
///
/// As bitsandbytes' CPU `quantize_blockwise` (F32): `a = absmax − offset` in F32, the block's
/// max |a| stored as is, `a / max` (a division) searched in the signed dynamic map for the
/// entry at or below it, then moved up one when the next entry is strictly nearer (ties stay
/// low).
pub fn double_quant(absmax: &[f32], offset: f32, codes: &mut [u8], nested_absmax: &mut [f32]) {
    let map = nested_code();
    let mut a = [0.0f32; 256];
    for ((block, out), nm) in absmax.chunks(256).zip(codes.chunks_mut(256)).zip(nested_absmax) {
        let a = &mut a[..block.len()];
        for (d, &v) in a.iter_mut().zip(block) {
            *d = v - offset;
        }
        let m = super::absmax(a);
        *nm = m;
        for (c, &v) in out.iter_mut().zip(a.iter()) {
            let x = v / m;
            // Index of the last entry <= x, or 0 below the map's smallest entry.
            let mut lo = 0usize;
            let mut len = 256usize;
            while len > 1 {
                let half = len / 2;
                if map[lo + half] <= x {
                    lo += half;
                }
                len -= half;
            }
            if lo < 255 {
                let left = (x - map[lo]).abs();
                let right = (x - map[lo + 1]).abs();
                if right < left {
                    lo += 1;
                }
            }
            #[expect(clippy::cast_possible_truncation, reason = "an index below 256")]
            let q = lo as u8;
            *c = q;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{double_quant, mean, quantize};

    #[test]
    fn binary_search_counts_the_bounds_below() {
        let b = super::bounds();
        let count = |v: f32| b.iter().filter(|&&x| x < v).count() as u8;
        let mut probes = vec![-1.0f32, 1.0, 0.0, -0.0];
        for &x in &b {
            probes.extend([x, f32::from_bits(x.to_bits() + 1), f32::from_bits(x.to_bits() - 1)]);
        }
        // Every BF16 value in [-1, 1].
        probes.extend(
            (0..=u16::MAX).map(|h| f32::from_bits(u32::from(h) << 16)).filter(|v| v.abs() <= 1.0),
        );
        for v in probes {
            assert_eq!(super::bucket(v, &b), count(v), "{v}");
        }
    }

    #[test]
    fn packs_high_nibble_first_and_pads_with_seven() {
        let x = [1.0f32, -1.0, 0.0];
        let mut packed = [0u8; 2];
        let mut absmax = [0.0f32; 1];
        quantize(&x, &mut packed, &mut absmax);
        assert_eq!(packed, [0xf0, 0x77]);
        assert_eq!(absmax, [1.0]);
        let zeros = [0.0f32; 64];
        let mut packed = [0u8; 32];
        quantize(&zeros, &mut packed, &mut absmax);
        assert!(packed.iter().all(|&b| b == 0x77));
        assert_eq!(absmax, [0.0]);
    }

    #[test]
    fn double_quant_hits_the_ends() {
        let absmax = [1.0f32, 3.0];
        assert_eq!(mean(&absmax), 2.0);
        let mut codes = [0u8; 2];
        let mut nested = [0.0f32; 1];
        double_quant(&absmax, 2.0, &mut codes, &mut nested);
        assert_eq!((codes, nested), ([0, 255], [1.0]));
    }
}
