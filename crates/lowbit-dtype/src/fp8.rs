//! 8-bit float formats decoded through 256-entry tables built at compile time.
//!
//! `E4M3` is `float8_e4m3fn`: bias 7, no infinities, `S.1111.111` is NaN, largest finite 448.
//! `E5M2` is `float8_e5m2`: bias 15, IEEE-like with infinities and NaNs.
//! `E8M0` is `float8_e8m0fnu`: an unsigned power of two `2^(e-127)`, `0xFF` is NaN.
//! The tables are checked against `ml_dtypes` by the interop tests.

/// Builds the `f32` bit pattern of a small float with `ebits` exponent bits and `mbits` mantissa
/// bits (sign bit on top), for finite codes only.
const fn small_float_bits(code: u8, ebits: u32, mbits: u32, bias: i32) -> u32 {
    let sign = ((code >> (ebits + mbits)) & 1) as u32;
    let exp = ((code >> mbits) & ((1 << ebits) - 1)) as i32;
    let mut mant = (code & ((1 << mbits) - 1)) as u32;
    if exp == 0 {
        if mant == 0 {
            return sign << 31;
        }
        // Subnormal: value = mant · 2^(1 - bias - mbits); normalise it for f32.
        let mut e = 1 - bias;
        while mant & (1 << mbits) == 0 {
            mant <<= 1;
            e -= 1;
        }
        mant &= (1 << mbits) - 1;
        return (sign << 31) | (((e + 127) as u32) << 23) | (mant << (23 - mbits));
    }
    (sign << 31) | (((exp - bias + 127) as u32) << 23) | (mant << (23 - mbits))
}

const fn e4m3_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let code = i as u8;
        t[i] = if code & 0x7f == 0x7f {
            0x7fc0_0000 | (((code >> 7) as u32) << 31)
        } else {
            small_float_bits(code, 4, 3, 7)
        };
        i += 1;
    }
    t
}

const fn e5m2_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let code = i as u8;
        let sign = ((code >> 7) as u32) << 31;
        t[i] = if code & 0x7c == 0x7c {
            if code & 0x03 == 0 { sign | 0x7f80_0000 } else { sign | 0x7fc0_0000 }
        } else {
            small_float_bits(code, 5, 2, 15)
        };
        i += 1;
    }
    t
}

const fn e8m0_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i == 255 {
            0x7fc0_0000
        } else if i == 0 {
            // 2^-127 is an f32 subnormal: mantissa bit 22.
            0x0040_0000
        } else {
            (i as u32) << 23
        };
        i += 1;
    }
    t
}

static E4M3: [u32; 256] = e4m3_table();
static E5M2: [u32; 256] = e5m2_table();
static E8M0: [u32; 256] = e8m0_table();

/// Decodes one `float8_e4m3fn` code.
#[must_use]
pub fn e4m3_to_f32(code: u8) -> f32 {
    f32::from_bits(E4M3[code as usize])
}

/// Decodes one `float8_e5m2` code.
#[must_use]
pub fn e5m2_to_f32(code: u8) -> f32 {
    f32::from_bits(E5M2[code as usize])
}

/// Decodes one `float8_e8m0fnu` code.
#[must_use]
pub fn e8m0_to_f32(code: u8) -> f32 {
    f32::from_bits(E8M0[code as usize])
}

#[cfg(test)]
mod tests {
    use super::{e4m3_to_f32, e5m2_to_f32, e8m0_to_f32};

    #[test]
    fn e4m3_landmarks() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x80).is_sign_negative());
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0xfe), -448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9), "smallest subnormal");
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9), "largest subnormal");
        assert!(e4m3_to_f32(0x7f).is_nan());
        assert!(e4m3_to_f32(0xff).is_nan());
        assert_eq!((0..=255u8).filter(|&c| e4m3_to_f32(c).is_infinite()).count(), 0);
    }

    #[test]
    fn e5m2_landmarks() {
        assert_eq!(e5m2_to_f32(0x3c), 1.0);
        assert_eq!(e5m2_to_f32(0x7b), 57344.0);
        assert_eq!(e5m2_to_f32(0x01), 2f32.powi(-16));
        assert_eq!(e5m2_to_f32(0x7c), f32::INFINITY);
        assert_eq!(e5m2_to_f32(0xfc), f32::NEG_INFINITY);
        assert!(e5m2_to_f32(0x7d).is_nan());
    }

    #[test]
    fn e8m0_landmarks() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(128), 2.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert!(e8m0_to_f32(255).is_nan());
    }
}
