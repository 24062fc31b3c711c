//! SDNQ's `uint4` (`formats/sdnq.md`), byte for byte as `sdnq` 0.2.8's `quantize_weight` on a
//! `Linear` (asymmetric, `dequantize_fp32`): per group of `g` elements of a row, in `f32`,
//! `scale = (max − min) / 15`, `zero_point = min`, `q = clamp(round_half_even((w − min) /
//! scale), 0, 15)` (a true division; a constant group's 0/0 gives code 0, as torch's NaN to
//! `uint8` does on x86-64), packed two per byte, element 2i in the low nibble.

/// Quantizes whole rows `x` (`rows · k` values, `rows · k` even) with groups of `g` along
/// each row (`g` divides `k`): packed codes into `w` (`x.len() / 2` bytes), per-group `scale`
/// and `zero` (row-major `[rows, k / g]`).
///
/// # Panics
/// When the lengths disagree.
pub fn quantize_rows(
    x: &[f32],
    k: usize,
    g: usize,
    w: &mut [u8],
    scale: &mut [f32],
    zero: &mut [f32],
) {
    assert!(g > 0 && k.is_multiple_of(g) && x.len().is_multiple_of(k.max(1)));
    assert!(w.len() * 2 == x.len() && scale.len() == x.len() / g && zero.len() == scale.len());
    let mut codes = vec![0u8; g];
    let mut pending: Option<u8> = None;
    let mut at = 0usize;
    for ((group, s), z) in x.chunks_exact(g).zip(scale.iter_mut()).zip(zero.iter_mut()) {
        let (mut lo, mut hi) = (group[0], group[0]);
        for &v in group {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let sc = (hi - lo) / 15.0;
        (*s, *z) = (sc, lo);
        for (c, &v) in codes.iter_mut().zip(group) {
            let t = ((v - lo) / sc).round_ties_even().clamp(0.0, 15.0);
            // NaN (0 / 0) saturates to 0.
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0..=15")]
            let q = t as u8;
            *c = q;
        }
        // Codes run on across groups and rows: a group of odd length shares a byte.
        for &c in &codes {
            match pending.take() {
                None => pending = Some(c),
                Some(first) => {
                    w[at] = first | (c << 4);
                    at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quantize_rows;

    #[test]
    fn codes_scales_and_nibble_order() {
        // One row of four: min −1, max 2, scale f32(0.2); 1.5 / scale is 7.5 in f32, which rounds
        // to even 8; the constant group has scale 0 and codes 0 (0 / 0).
        let x = [-1.0f32, 0.0, 0.5, 2.0, 3.0, 3.0, 3.0, 3.0];
        let (mut w, mut s, mut z) = ([0u8; 4], [0f32; 2], [0f32; 2]);
        quantize_rows(&x, 4, 4, &mut w, &mut s, &mut z);
        assert_eq!(s, [3.0f32 / 15.0, 0.0]);
        assert_eq!(z, [-1.0, 3.0]);
        assert_eq!(w, [0x50, 0xf8, 0x00, 0x00]);
    }
}
