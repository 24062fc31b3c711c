//! The quantizers of the ternary types TQ1_0 and TQ2_0: 256 elements in {−1, 0, +1} times one
//! f16 scale. Their block structs and dequantizers are in [`lowbit_dtype::blocks`].
//!
//! Both quantizers take `d = max |x|` and `trit = lroundf(x / d) + 1`, as ggml's
//! `quantize_row_tq1_0_ref` / `quantize_row_tq2_0_ref` do; they are lossless only for weights
//! that are already ternary (BitNet b1.58 style), which is what they are for.

use crate::QuantBlock;
use lowbit_dtype::blocks::{BlockTQ1_0, BlockTQ2_0, QK_K};
use lowbit_dtype::f16::fp32_to_fp16;

/// `max |x|` with ggml's `MAX(a, b) = a > b ? a : b`.
fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, &v| if a > v.abs() { a } else { v.abs() })
}

/// `int xi = lroundf(v·id) + 1`: the trit code 0, 1 or 2 for in-range values; for the undefined
/// cases (1/d overflowed) the x86-64 result, truncated to the `uint8_t` arithmetic that follows.
#[inline]
fn trit(v: f32, id: f32) -> u8 {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "C truncates")]
    let t = ((crate::cconv::lroundf(v * id) as i32).wrapping_add(1)) as u8;
    t
}

/// Packs up to five trits (most significant first) into one byte, rounding `v · 256 / 243` up.
#[inline]
fn pack5(q: u8) -> u8 {
    #[expect(clippy::cast_possible_truncation, reason = "at most 255")]
    let b = (u16::from(q) * 256).div_ceil(243) as u8;
    b
}

impl QuantBlock for BlockTQ1_0 {
    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        crate::groups::for_groups(x, y);
    }

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK_K).zip(y) {
            let d = absmax(x);
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            y.d = fp32_to_fp16(d).to_le_bytes();
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..5 {
                    q = q.wrapping_mul(3).wrapping_add(trit(x[m + n * 32], id));
                }
                y.qs[m] = pack5(q);
            }
            let x = &x[160..];
            for m in 0..16 {
                let mut q = 0u8;
                for n in 0..5 {
                    q = q.wrapping_mul(3).wrapping_add(trit(x[m + n * 16], id));
                }
                y.qs[32 + m] = pack5(q);
            }
            let x = &x[80..];
            for j in 0..4 {
                let mut q = 0u8;
                for m in 0..4 {
                    q = q.wrapping_mul(3).wrapping_add(trit(x[j + m * 4], id));
                }
                y.qh[j] = pack5(q.wrapping_mul(3));
            }
        }
    }
}

impl QuantBlock for BlockTQ2_0 {
    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        crate::groups::for_groups(x, y);
    }

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK_K).zip(y) {
            let d = absmax(x);
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            y.d = fp32_to_fp16(d).to_le_bytes();
            for (half, x) in x.chunks_exact(128).enumerate() {
                for m in 0..32 {
                    let mut q = 0u8;
                    for n in 0..4 {
                        q = q.wrapping_add((trit(x[m + n * 32], id) & 3) << (2 * n));
                    }
                    y.qs[half * 32 + m] = q;
                }
            }
        }
    }
}

/// The fast quantizers, equal to the reference byte for byte.
///
/// Blocks go through in lockstep groups (see [`crate::groups`]): each block's `max |x|` is
/// reduced as integer bits, `1/d` and the f16 scale are computed with one block per lane, and the
/// trits come from an element-wise `roundf` with the block's `1/d` broadcast. A block holding an
/// infinity or a NaN (where the C's running maximum depends on the element order) or whose
/// `1/d` overflows (C's conversions of ±inf are undefined; see `cconv`) goes to the reference.
mod fast {
    use super::pack5;
    use crate::groups::{
        G, Lockstep, abs_max_bits, from_bits, inverse, low_bytes, reference, round_away,
    };
    use lowbit_dtype::blocks::{BlockTQ1_0, BlockTQ2_0, QK_K};
    use lowbit_dtype::f16::fp32_to_fp16_lanes;

    /// A group's f16 scales and `1/d`, and which blocks the lanes reproduce.
    #[inline(always)]
    fn scales(s: &[u32; G]) -> ([[u8; 2]; G], [f32; G], [bool; G]) {
        let d = from_bits(s);
        let id = inverse(d);
        let exact = d.is_finite().and(id.is_finite()).to_bools();
        (fp32_to_fp16_lanes(d.0).map(u16::to_le_bytes), id.0, exact)
    }

    /// The trit codes `lroundf(v·id) + 1` (0, 1 or 2: |v·id| ≤ 1 for a finite block).
    #[inline(always)]
    fn trits(x: &[f32; QK_K], id: f32) -> [u8; QK_K] {
        let mut q = [0i32; QK_K];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = round_away(v * id) + 1;
        }
        low_bytes(q)
    }

    /// Packs five trits per byte, `t[m + n·N]` for n = 0..5 into byte `m`, first most significant.
    #[inline(always)]
    fn pack_bytes<const N: usize>(t: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        for (m, o) in out.iter_mut().enumerate() {
            let v = t[m] * 81 + t[m + N] * 27 + t[m + 2 * N] * 9 + t[m + 3 * N] * 3 + t[m + 4 * N];
            *o = pack5(v);
        }
        out
    }

    impl Lockstep<QK_K> for BlockTQ1_0 {
        type Stats = u32;

        #[inline(always)]
        fn stats(x: &[f32; QK_K]) -> u32 {
            abs_max_bits(x)
        }

        #[inline(always)]
        fn group(x: &[[f32; QK_K]; G], s: &[u32; G], y: &mut [Self; G]) {
            let (dh, id, exact) = scales(s);
            for b in 0..G {
                if !exact[b] {
                    reference(&x[b], &mut y[b]);
                    continue;
                }
                let t = trits(&x[b], id[b]);
                let mut qs = [0u8; 48];
                qs[..32].copy_from_slice(&pack_bytes::<32>(&t[..160]));
                qs[32..].copy_from_slice(&pack_bytes::<16>(&t[160..240]));
                let mut qh = [0u8; 4];
                for (j, qh) in qh.iter_mut().enumerate() {
                    let v = t[240 + j] * 27 + t[244 + j] * 9 + t[248 + j] * 3 + t[252 + j];
                    *qh = pack5(v * 3);
                }
                y[b] = BlockTQ1_0 { qs, qh, d: dh[b] };
            }
        }
    }

    impl Lockstep<QK_K> for BlockTQ2_0 {
        type Stats = u32;

        #[inline(always)]
        fn stats(x: &[f32; QK_K]) -> u32 {
            abs_max_bits(x)
        }

        #[inline(always)]
        fn group(x: &[[f32; QK_K]; G], s: &[u32; G], y: &mut [Self; G]) {
            let (dh, id, exact) = scales(s);
            for b in 0..G {
                if !exact[b] {
                    reference(&x[b], &mut y[b]);
                    continue;
                }
                let t = trits(&x[b], id[b]);
                let mut qs = [0u8; 64];
                for (q, t) in qs.chunks_exact_mut(32).zip(t.chunks_exact(128)) {
                    for (m, q) in q.iter_mut().enumerate() {
                        *q = t[m] | (t[m + 32] << 2) | (t[m + 64] << 4) | (t[m + 96] << 6);
                    }
                }
                y[b] = BlockTQ2_0 { qs, d: dh[b] };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::QuantBlock;
    use lowbit_dtype::blocks::{Block, BlockTQ1_0, BlockTQ2_0, QK_K};
    use lowbit_fixtures::rng::Rng;

    /// Already-ternary weights (values in {−s, 0, s}) survive both types exactly when s is an f16.
    #[test]
    fn ternary_weights_are_lossless() {
        let s = 0.375f32;
        let x: Vec<f32> =
            (0..QK_K * 3).map(|i| [s, 0.0, -s, 0.0, s][(i * 7 + i / 5) % 5]).collect();
        let mut y1 = vec![BlockTQ1_0::default(); 3];
        BlockTQ1_0::quantize_ref(&x, &mut y1);
        let mut back = vec![0.0; x.len()];
        BlockTQ1_0::dequantize(&y1, &mut back);
        assert_eq!(back, x);
        let mut y2 = vec![BlockTQ2_0::default(); 3];
        BlockTQ2_0::quantize_ref(&x, &mut y2);
        BlockTQ2_0::dequantize(&y2, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn fast_paths_equal_the_reference() {
        let mut r = Rng::new(3);
        let mut next = move || r.uniform_f32(-1.0, 1.0);
        let specials = [0.0, -0.0, 0.5, -0.5, 1e-40, f32::NAN, f32::INFINITY, 1e30, -1.0];
        let mut x = Vec::new();
        for b in 0..300 {
            for i in 0..QK_K {
                x.push(match b % 4 {
                    0 => specials[(i + b) % specials.len()],
                    1 => (next() * 4.0).round() / 4.0, // ties at ±0.5·d
                    2 => next() * 1e-39,
                    _ => next() * 10f32.powi((b % 9) as i32 - 4),
                });
            }
        }
        let n = x.len() / QK_K;
        let (mut a, mut b) = (vec![BlockTQ1_0::default(); n], vec![BlockTQ1_0::default(); n]);
        BlockTQ1_0::quantize_ref(&x, &mut a);
        BlockTQ1_0::quantize(&x, &mut b);
        assert!(a == b, "TQ1_0 fast path differs");
        let (mut a, mut b) = (vec![BlockTQ2_0::default(); n], vec![BlockTQ2_0::default(); n]);
        BlockTQ2_0::quantize_ref(&x, &mut a);
        BlockTQ2_0::quantize(&x, &mut b);
        assert!(a == b, "TQ2_0 fast path differs");
    }

    #[test]
    fn tq2_0_layout_by_hand() {
        let mut x = [0.0f32; QK_K];
        x[0] = 1.0; // code 2 at bits 0–1 of byte 0
        x[32] = -1.0; // code 0 at bits 2–3 of byte 0
        x[128 + 96 + 5] = 1.0; // second half, bits 6–7 of byte 32 + 5
        let mut y = [BlockTQ2_0::default()];
        BlockTQ2_0::quantize_ref(&x, &mut y);
        assert_eq!(y[0].qs[0], 2 | (1 << 4) | (1 << 6), "codes 2, 0, 1, 1");
        assert_eq!(y[0].qs[37] >> 6, 2);
    }

    #[test]
    fn tq1_0_packs_base_3_rounding_up() {
        // All-zero trits (code 1 each): 11111 in base 3 = 121, ceil(121·256/243) = 128.
        let x = [0.0f32; QK_K];
        let mut y = [BlockTQ1_0::default()];
        BlockTQ1_0::quantize_ref(&x, &mut y);
        assert!(y[0].qs.iter().all(|&b| b == 128));
        // qh: four trits 1111 = 40, shifted one trit: 120, ceil(120·256/243) = 127.
        assert!(y[0].qh.iter().all(|&b| b == 127));
    }
}
