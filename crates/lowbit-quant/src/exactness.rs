//! Byte-for-byte checks of both fast copies (the AVX2 one that [`crate::quantize`] picks where
//! the CPU has it, and [`crate::quantize_baseline`]) against [`crate::quantize_ref`], for every
//! quantized type.
//!
//! The inputs are seeded sweeps of 32-element pieces, each of a kind chosen to reach a branch of
//! the reference or a fallback of the fast paths: ordinary values over many magnitudes, values
//! on grids that land on rounding ties, both `+amax` and `−amax` in either order, signed zeros
//! as extremes, all-zero and constant pieces, subnormal and tiny values (where `1/d` overflows),
//! huge values (where `max − min` overflows), and infinities and NaNs. The row lengths vary so
//! that the partly filled last group of the lockstep paths is exercised too.
//!
//! NaN pieces are left out for the K-quants: their bytes depend on which NaN payload each
//! operation propagates, which is the compiler's choice (see `kquants`).

use lowbit_dtype::GgmlType;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::rng::Rng;

/// Uniform in `[−1, 1)`.
fn sym(r: &mut Rng) -> f32 {
    r.uniform_f32(-1.0, 1.0)
}

/// Number of piece kinds; the last two hold NaN.
const KINDS: usize = 22;

/// One 32-element piece of kind `kind`.
fn piece(r: &mut Rng, kind: usize) -> [f32; 32] {
    let mut x = [0.0f32; 32];
    let scale = 10f32.powi(r.index(13) as i32 - 6);
    match kind {
        // Ordinary values over many magnitudes.
        0..=2 => x.iter_mut().for_each(|v| *v = sym(r) * scale),
        // bf16-rounded, like checkpoint weights: equal magnitudes are common.
        3 => x.iter_mut().for_each(|v| *v = bf16_to_fp32(fp32_to_bf16(sym(r) * scale))),
        // A grid: codes land exactly on rounding ties.
        4 => {
            let step = [0.5f32, 0.25, 1.0, 0.125, 1.0 / 3.0][r.index(5)];
            x.iter_mut().for_each(|v| *v = (r.index(33) as f32 - 16.0) * step);
        }
        // Both +amax and −amax, in either order, possibly several times.
        5 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            let a = scale * 1.5;
            let (i, j) = (r.index(32), r.index(32));
            x[i] = a;
            x[j] = -a;
            if r.index(2) == 0 {
                x[r.index(32)] = a;
            }
        }
        // One sign only, with a signed zero as the extreme.
        6 => {
            let neg = r.index(2) == 0;
            x.iter_mut().for_each(|v| *v = sym(r).abs() * scale * if neg { -1.0 } else { 1.0 });
            for _ in 0..1 + r.index(3) {
                x[r.index(32)] = if r.index(2) == 0 { 0.0 } else { -0.0 };
            }
        }
        // All zeros, of one sign or mixed.
        7 => x.iter_mut().for_each(|v| *v = [0.0, -0.0][r.index(2)]),
        8 => x.fill([0.0, -0.0][r.index(2)]),
        // Constant.
        9 => x.fill(sym(r) * scale),
        // Subnormal and tiny: 1/d overflows, or d is subnormal.
        10 => x.iter_mut().for_each(|v| *v = sym(r) * 1e-39),
        11 => x.iter_mut().for_each(|v| *v = sym(r) * [1e-37, 3e-38, 1e-38, 1e-44][r.index(4)]),
        12 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            x[r.index(32)] = f32::MIN_POSITIVE * [1.0, -0.5, 0.25][r.index(3)];
        }
        // Huge: max − min overflows to infinity.
        13 => x.iter_mut().for_each(|v| *v = sym(r) * 3.3e38),
        14 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            x[r.index(32)] = f32::MAX;
            x[r.index(32)] = -f32::MAX;
        }
        // Exact ties of roundf for Q8_0 (amax 127 → d = 1) and of the trits (amax 2).
        15 => {
            x.iter_mut().for_each(|v| *v = (r.index(255) as f32 - 127.0) * 0.5);
            x[r.index(32)] = [127.0, -127.0][r.index(2)];
        }
        16 => {
            x.iter_mut().for_each(|v| *v = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -1.5][r.index(7)]);
            x[r.index(32)] = 2.0;
        }
        // One lone outlier.
        17 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            x[r.index(32)] *= 1e4;
        }
        // Infinities.
        18 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            x[r.index(32)] = f32::INFINITY;
        }
        19 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            x[r.index(32)] = f32::NEG_INFINITY;
            if r.index(2) == 0 {
                x[r.index(32)] = f32::INFINITY;
            }
        }
        // NaN: one, or several with infinities, or everything.
        20 => {
            x.iter_mut().for_each(|v| *v = sym(r) * scale);
            for _ in 0..1 + r.index(3) {
                x[r.index(32)] = [f32::NAN, -f32::NAN, f32::from_bits(0x7fa0_1234)][r.index(3)];
            }
            if r.index(3) == 0 {
                x[r.index(32)] = f32::INFINITY;
            }
        }
        _ => x.fill(f32::NAN),
    }
    x
}

/// `blocks` blocks of `ty` built from seeded pieces; NaN only where `nan` allows.
fn input(ty: GgmlType, seed: u64, blocks: usize, nan: bool) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let n = blocks * ty.block_size();
    let kinds = if nan { KINDS } else { KINDS - 2 };
    let mut x = Vec::with_capacity(n);
    // Whole blocks of one kind, or (for the 256-element types) mixed pieces.
    while x.len() < n {
        let per_block = ty.block_size() / 32;
        if r.index(2) == 0 {
            let kind = r.index(kinds);
            for _ in 0..per_block {
                x.extend(piece(&mut r, kind));
            }
        } else {
            for _ in 0..per_block {
                let kind = r.index(kinds);
                x.extend(piece(&mut r, kind));
            }
        }
    }
    x.truncate(n);
    x
}

/// [`crate::quantize`] and its siblings.
type QuantizeFn = fn(GgmlType, &[f32], &mut [u8]) -> Result<(), crate::Error>;

/// Checks both fast copies against the reference on `x`.
fn check(ty: GgmlType, x: &[f32]) {
    let len = x.len() / ty.block_size() * ty.type_size();
    let mut want = vec![0u8; len];
    crate::quantize_ref(ty, x, &mut want).expect("reference");
    for (name, f) in [
        ("dispatched (AVX2 where available)", crate::quantize as QuantizeFn),
        ("baseline", crate::quantize_baseline),
    ] {
        let mut got = vec![0xa5u8; len];
        f(ty, x, &mut got).expect("fast");
        if got != want {
            let bs = ty.type_size();
            let b = (0..len / bs).find(|&b| got[b * bs..][..bs] != want[b * bs..][..bs]);
            let b = b.expect("some block differs");
            let xs = &x[b * ty.block_size()..][..ty.block_size()];
            panic!(
                "{ty:?} {name}: block {b} differs\n x = {xs:?}\n want {:?}\n got  {:?}",
                &want[b * bs..][..bs],
                &got[b * bs..][..bs]
            );
        }
    }
}

const QUANTIZED: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn is_k_quant(ty: GgmlType) -> bool {
    ty.block_size() == 256 && !matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0)
}

#[test]
fn every_type_equals_the_reference_on_adversarial_sweeps() {
    for (t, &ty) in QUANTIZED.iter().enumerate() {
        let blocks = if ty.block_size() == 32 { 12_000 } else { 1_500 };
        let x = input(ty, 0x5eed + t as u64, blocks, !is_k_quant(ty));
        check(ty, &x);
    }
}

#[test]
fn partial_groups_and_short_rows() {
    for &ty in &QUANTIZED {
        for blocks in [1, 2, 7, 8, 9, 15, 17, 31] {
            let x = input(ty, 77 + blocks as u64, blocks, !is_k_quant(ty));
            check(ty, &x);
            // Each block alone too, so that every kind also sits in lane 0 of a padded group.
            for b in x.chunks_exact(ty.block_size()).take(4) {
                check(ty, b);
            }
        }
    }
}

#[test]
fn flux_like_rows() {
    // N(0, 1/3072)-like rows with outlier columns, as the benchmark quantizes them.
    let mut r = Rng::new(3);
    let cols = 3072;
    let mut x: Vec<f32> =
        (0..cols * 8).map(|_| (sym(&mut r) + sym(&mut r) + sym(&mut r)) * 0.018).collect();
    for row in x.chunks_exact_mut(cols) {
        for c in [5, 700, 701, 2047, 3000] {
            row[c] *= 25.0;
        }
    }
    for &ty in &QUANTIZED {
        check(ty, &x);
    }
}
