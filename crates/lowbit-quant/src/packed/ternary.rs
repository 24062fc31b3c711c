//! The BitNet b1.58 absmean rule: γ = mean |W| (floored at 1e-5), q = clamp(round(W/γ), −1, 1).

/// Σ|x|, accumulated in `f64` in index order (so a per-tensor sum over chunks, added in order,
/// does not depend on how the tensor was cut).
#[must_use]
pub fn abs_sum(x: &[f32]) -> f64 {
    todo!("helper: {}", x.len())
}

/// γ from Σ|W| over `count` elements: the mean rounded to `f32`, at least 1e-5.
#[must_use]
pub fn gamma(abs_sum: f64, count: u64) -> f32 {
    todo!("helper: {abs_sum} {count}")
}

/// Codes `q+1` ∈ {0, 1, 2} of `x` for scale `gamma` (`out.len() == x.len()`).
pub fn codes(x: &[f32], gamma: f32, out: &mut [u8]) {
    todo!("helper: {gamma} {} {}", x.len(), out.len())
}
