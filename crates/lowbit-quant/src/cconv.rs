//! C's float-to-integer conversions as ggml's reference build performs them on x86-64.
//!
//! When a block's largest value is tiny, ggml's `1/d` overflows to infinity and the quantizers
//! convert ±inf or NaN to an integer, which C leaves undefined. gcc on x86-64 emits `cvttss2si`,
//! which returns `0x80000000` for NaN, infinities and out-of-range values, and a narrowing to
//! `int8_t`/`uint8_t` keeps the low byte; glibc's `lroundf` returns `LONG_MIN` in the same cases.
//! Rust's `as` saturates instead, so these helpers reproduce the x86-64 bytes exactly. The scale
//! stored for such a block is an f16 zero, so every version decodes to zeros; only the bytes
//! would differ (and an aarch64 build of ggml writes yet other bytes).

/// `cvttss2si`: truncation toward zero; NaN, ±inf and values outside `i32` give `i32::MIN`.
#[inline]
pub(crate) fn f32_to_i32(f: f32) -> i32 {
    if f > -2_147_483_904.0 && f < 2_147_483_648.0 { f as i32 } else { i32::MIN }
}

/// `(int8_t)f` as gcc compiles it: a 32-bit conversion, then the low byte.
#[inline]
pub(crate) fn f32_to_i8(f: f32) -> i8 {
    #[expect(clippy::cast_possible_truncation, reason = "C keeps the low byte")]
    let b = f32_to_i32(f) as i8;
    b
}

/// `(uint8_t)f` as gcc compiles it: a 32-bit conversion, then the low byte.
#[inline]
pub(crate) fn f32_to_u8(f: f32) -> u8 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "C keeps the low byte"
    )]
    let b = f32_to_i32(f) as u8;
    b
}

/// glibc's `lroundf` on x86-64: round half away from zero; NaN, ±inf and values outside `i64`
/// give `i64::MIN`.
#[inline]
pub(crate) fn lroundf(f: f32) -> i64 {
    if f > -9.223_372e18 && f < 9.223_372e18 { f.round() as i64 } else { i64::MIN }
}

#[cfg(test)]
mod tests {
    use super::{f32_to_i8, f32_to_i32, f32_to_u8, lroundf};

    #[test]
    fn in_range_values_truncate_or_round() {
        assert_eq!(f32_to_i32(-2.9), -2);
        assert_eq!(f32_to_i8(16.4), 16);
        assert_eq!(f32_to_u8(31.6), 31);
        assert_eq!(lroundf(2.5), 3);
        assert_eq!(lroundf(-2.5), -3);
        assert_eq!(f32_to_i32(-2_147_483_648.0), i32::MIN);
        assert_eq!(f32_to_i32(2_147_483_520.0), 2_147_483_520);
    }

    #[test]
    fn undefined_cases_follow_x86_64() {
        for f in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9] {
            assert_eq!(f32_to_i32(f), i32::MIN, "{f}");
            assert_eq!(f32_to_i8(f), 0, "{f}");
            assert_eq!(f32_to_u8(f), 0, "{f}");
        }
        assert_eq!(lroundf(f32::INFINITY), i64::MIN);
        assert_eq!(lroundf(f32::NAN), i64::MIN);
        assert_eq!(lroundf(1e19), i64::MIN);
        // 300 fits in 32 bits: the low byte of 300 is 44.
        assert_eq!(f32_to_i8(300.0), 44);
    }
}
