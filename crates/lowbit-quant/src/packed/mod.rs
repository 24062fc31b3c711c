//! Quantizers for the packed safetensors layouts of `lowbit-layout`, one module per scheme
//! (`ternary` also serves `bitnet`, whose weights are the same ternary codes).
//!
//! Pure functions over slices, like the ggml quantizers: no I/O, no threads.

pub mod fp8;
pub mod int4;
pub mod nf4;
pub mod nvfp4;
pub mod sdnq;
pub mod ternary;

/// max |x|: NaN ignored, 0 for an empty (or all-NaN) `x`. Sixteen lanes of branch-free
/// compares, so it vectorises; the maximum does not depend on the order, so any lane count
/// gives the same value.
#[inline(always)]
#[must_use]
pub fn absmax(x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let mut chunks = x.chunks_exact(L);
    for c in &mut chunks {
        for (m, &v) in acc.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let mut m = 0.0f32;
    for a in acc.into_iter().chain(chunks.remainder().iter().map(|v| v.abs())) {
        m = if a > m { a } else { m };
    }
    m
}
