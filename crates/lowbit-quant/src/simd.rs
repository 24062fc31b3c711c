//! Runtime dispatch to an AVX2 build of the fast quantizers.
//!
//! The fast paths are portable Rust written so that the compiler vectorises them; compiled for
//! baseline x86-64 that means SSE2. This module compiles the same code a second time with AVX2
//! enabled (wider lanes, integer min/max, variable shifts) and picks that copy at run time when
//! the CPU has AVX2. Both copies do the same IEEE operations in the same order — AVX2 adds no
//! fused multiply-add, and Rust never contracts — so they write the same bytes; the tests check
//! both against the reference.
//!
//! It also holds [`trunc_clamped`], the float-to-int conversion of the block quantizers' codes:
//! Rust's saturating `as` is correct but LLVM turns it into scalar code inside vector loops,
//! while `to_int_unchecked` on a value already clamped into range becomes one `cvttps2dq`.
#![allow(unsafe_code, reason = "calling a #[target_feature] function after detecting the feature")]

use crate::QuantBlock;

/// Whether the AVX2 copy can run here (detected once, cached by std).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `B::quantize` compiled with AVX2; the hot paths are `#[inline(always)]`, so they are
/// instantiated inside this function and take its target features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_avx2<B: QuantBlock>(x: &[f32], y: &mut [B]) {
    B::quantize(x, y);
}

/// The fast quantizer, on the widest SIMD the CPU offers.
#[inline]
pub(crate) fn quantize<B: QuantBlock>(x: &[f32], y: &mut [B]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `quantize_avx2` only requires AVX2, which `has_avx2` has just confirmed on
        // this CPU; it has no other preconditions.
        unsafe { quantize_avx2(x, y) };
        return;
    }
    B::quantize(x, y);
}

/// A computation over slices to run on the widest SIMD the CPU offers: the packed quantizers
/// wrap their loops in one, with `run` marked `#[inline(always)]`, so [`run`] compiles them a
/// second time with AVX2 exactly as [`quantize`] does for the block quantizers.
pub(crate) trait Kernel {
    /// Does the work.
    fn run(self);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Kernel>(k: K) {
    k.run();
}

/// Runs `k` on the widest SIMD the CPU offers.
#[inline]
pub(crate) fn run<K: Kernel>(k: K) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `run_avx2` only requires AVX2, which `has_avx2` has just confirmed on this
        // CPU; it has no other preconditions.
        unsafe { run_avx2(k) };
        return;
    }
    k.run();
}

/// `t` clamped to `−256..=256` and truncated toward zero; NaN gives −256.
///
/// The quantizers pass values whose C conversion (`(int)t`, `(int8_t)t`, `(uint8_t)t`) is
/// defined, well inside the clamp, or NaN. For NaN, x86-64's `cvttss2si` returns `0x80000000`,
/// whose low byte is 0; −256's low byte is 0 too, so the narrowed result matches the C.
/// Written as C-style compares (`maxps`/`minps`) and an unchecked conversion, it vectorises to
/// three instructions per register, where Rust's saturating `as` would be scalarised.
#[inline(always)]
pub(crate) fn trunc_clamped(t: f32) -> i32 {
    let c = if t > -256.0 { t } else { -256.0 };
    let c = if c < 256.0 { c } else { 256.0 };
    // SAFETY: `c` lies in −256..=256 (a NaN `t` fails the first compare and becomes −256), so it
    // is finite and its truncation fits an `i32`, as `to_int_unchecked` requires.
    unsafe { c.to_int_unchecked::<i32>() }
}
