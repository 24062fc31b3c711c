//! Group-wise int4 (`formats/int4.md`): symmetric (scale absmax/7, codes −7..=7) or asymmetric
//! (scale (max−min)/15 and a zero point, codes −8..=7).

/// Quantizes whole rows of length `k` (`x.len()` a multiple of `k`) in groups of `group`:
/// `packed` gets `x.len()/2` bytes (`lowbit_layout::int4::pack`), `scales` (and, when `asym`,
/// `zeros`) get the BF16 bits of one value per group, row-major `[rows, k/group]` (the writer
/// transposes them to `[K/g, N]`). `zeros` is ignored when not `asym`.
pub fn quantize_rows(
    x: &[f32],
    k: usize,
    group: usize,
    asym: bool,
    packed: &mut [u8],
    scales: &mut [u16],
    zeros: &mut [u16],
) {
    todo!(
        "helper: {} {k} {group} {asym} {} {} {}",
        x.len(),
        packed.len(),
        scales.len(),
        zeros.len()
    )
}
