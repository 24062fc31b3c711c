//! lowbit's ggml quantizers against ggml's own C code and the `gguf` Python package, byte for byte.
//!
//! For every type lowbit quantizes, seeded inputs are generated here (Gaussian rows, FLUX-like
//! rows with outlier columns, and blocks chosen to hit the edges: zeros, constants, rounding ties
//! of the type's scale and one ulp either side, tiny and subnormal values, values near the f16
//! limit, alternating signs, signed zeros, …), in rows of 3072 and of 256. Then:
//!
//! - `lowbit_quant::quantize` and `quantize_ref` must produce exactly the bytes of ggml's
//!   `quantize_<type>` without an importance matrix (what `ggml_quantize_chunk` runs), compiled
//!   from the pinned ggml source by `tests/interop/ggml_ref.py`;
//! - where the `gguf` package quantizes the type, its bytes must be the same too;
//! - `lowbit_dtype::dequantize` must decode ggml's blocks, and blocks of random bytes, to the
//!   same `f32` bits as ggml's `dequantize_row_<type>` and as `gguf.quants.dequantize` (two NaNs
//!   count as equal: NaN payloads are the hardware's business, not the format's).
//!
//! A failure names the type, the block, the input pattern it came from and both byte strings.
//!
//! One corner is pinned to the CPU: when a block's largest magnitude is so small that ggml's
//! `id = 1/d` overflows to infinity (subnormal blocks; for Q8_0 anything below about 3.7e-37),
//! ggml converts ±inf or NaN to an integer, which C leaves undefined. On x86-64, gcc's
//! `cvttss2si` (and `lroundf`) give the "integer indefinite" value, so every quant of such a block
//! comes out as zero (the middle code for TQ1_0/TQ2_0); the `gguf` package agrees. An aarch64
//! build of ggml would saturate instead. The `subnormal` pattern expects the x86-64 bytes.

use crate::support::{root, run_script};
use lowbit_dtype::GgmlType;
use lowbit_fixtures::rng::Rng;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

/// Every type lowbit quantizes, in type-id order; [`every_quantizable_type_is_checked`] keeps
/// this in step.
const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::BF16,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// The types `gguf.quants.quantize` (gguf 0.19.0) implements; it dequantizes all of [`TYPES`].
const GGUF_QUANTIZES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// Compiles ggml's reference library once per test run (cached across runs under
/// `target/ggml-ref/`); every test waits for the same build and sees the same failure.
fn ggml_ref_built() {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::panic::catch_unwind(|| run_script("ggml_ref.py", &[OsStr::new("build")])).map_err(
            |e| e.downcast_ref::<String>().cloned().unwrap_or_else(|| "unknown panic".into()),
        )
    });
    if let Err(e) = built {
        panic!("building ggml's reference library failed:\n{e}");
    }
}

// --- inputs ------------------------------------------------------------------------------------

/// One input matrix, and which pattern filled each stretch of it (for failure messages).
struct Case {
    n_per_row: usize,
    x: Vec<f32>,
    /// `(first element, pattern)`, in order.
    spans: Vec<(usize, &'static str)>,
}

impl Case {
    fn new(n_per_row: usize) -> Case {
        Case { n_per_row, x: Vec::new(), spans: Vec::new() }
    }

    fn push(&mut self, pattern: &'static str, values: &[f32]) {
        self.spans.push((self.x.len(), pattern));
        self.x.extend_from_slice(values);
    }

    /// The pattern that filled element `i`.
    fn pattern(&self, i: usize) -> &'static str {
        self.spans[self.spans.partition_point(|&(s, _)| s <= i) - 1].1
    }

    /// "3072-wide row 5, columns 512..544, pattern `subnormal`" for the block starting at `start`.
    fn describe(&self, start: usize, len: usize) -> String {
        let row = start / self.n_per_row;
        let col = start % self.n_per_row;
        format!(
            "{}-wide row {row}, columns {col}..{}, pattern `{}`",
            self.n_per_row,
            col + len,
            self.pattern(start)
        )
    }

    /// How many of the blocks `bad` (indices of `qk` elements) each pattern holds.
    fn patterns_of(&self, bad: &[usize], qk: usize) -> String {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for &b in bad {
            *counts.entry(self.pattern(b * qk)).or_default() += 1;
        }
        counts.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
    }
}

/// The integer range of a block type's quantized levels, `(lo, hi)`, scaled by the block scale:
/// a value `(k + 0.5) * d` lands exactly on a rounding tie when the block's scale comes out `d`.
fn levels(ty: GgmlType) -> Option<(i32, i32)> {
    Some(match ty {
        GgmlType::Q8_0 => (-127, 127),
        GgmlType::Q4_0 => (-8, 7),
        GgmlType::Q5_0 => (-16, 15),
        GgmlType::Q4_1 | GgmlType::Q4_K => (0, 15),
        GgmlType::Q5_1 | GgmlType::Q5_K => (0, 31),
        GgmlType::Q2_K => (0, 3),
        GgmlType::Q3_K => (-4, 3),
        GgmlType::Q6_K => (-32, 31),
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => (-1, 1),
        _ => return None,
    })
}

fn normal(rng: &mut Rng, sigma: f64) -> f32 {
    (rng.normal() * sigma) as f32
}

/// `10^u` for `u` uniform in `[lo, hi)`.
fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    10f64.powf(lo + (hi - lo) * rng.uniform())
}

fn coin(rng: &mut Rng) -> bool {
    rng.next_u64() & 1 == 1
}

/// A power of two between 2^-8 and 2^8: scales that keep `(k + 0.5) * d` exact.
fn pow2(rng: &mut Rng) -> f32 {
    2f32.powi(i32::try_from(rng.below(17)).unwrap() - 8)
}

/// Values at rounding ties: for block types, on the half-integer grid of a scale the block's own
/// extremes pin down (the first two values of every 32 are `lo·d` and `hi·d`); for F16 and BF16,
/// halfway between two representable values. `nudge` moves each tie one ulp up or down.
fn ties(ty: GgmlType, rng: &mut Rng, len: usize, nudge: bool) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    if let Some((lo, hi)) = levels(ty) {
        let span = u64::try_from(hi - lo).unwrap();
        let d = pow2(rng);
        for _ in 0..len / 32 {
            let sign = if coin(rng) { -1.0 } else { 1.0 };
            v.push(sign * lo as f32 * d);
            v.push(sign * hi as f32 * d);
            for _ in 2..32 {
                let k = lo + i32::try_from(rng.below(span)).unwrap();
                v.push(sign * (k as f32 + 0.5) * d);
            }
        }
    } else {
        for i in 0..len {
            let sign = u32::from(coin(rng)) << 31;
            let bits = match (ty, i % 4) {
                // BF16 keeps the top 16 bits: a low half of exactly 0x8000 is a tie.
                (GgmlType::BF16, _) => (rng.next_u64() as u32 & 0x7fff_0000) | 0x8000,
                // F16 subnormal ties: (k + 1/2)·2^-24.
                (_, 0) => ((rng.below(1024) as f32 + 0.5) * 2f32.powi(-24)).to_bits(),
                // F16 normal ties: 10 mantissa bits kept, the 13 below exactly 0x1000.
                _ => {
                    let exp = 113 + rng.below(30) as u32; // f16 exponents -14..=15
                    (exp << 23) | ((rng.below(1024) as u32) << 13) | 0x1000
                }
            };
            v.push(f32::from_bits(sign | bits));
        }
    }
    if nudge {
        for x in &mut v {
            *x = if coin(rng) { x.next_up() } else { x.next_down() };
        }
    }
    v
}

/// The patterns a 256-wide stretch (or a 32-wide block) can hold.
const SPECIALS: [&str; 15] = [
    "zeros",
    "constant",
    "ties",
    "near-ties",
    "grid",
    "tiny",
    "subnormal",
    "large",
    "alternating",
    "sparse",
    "signed-zeros",
    "mixed-scale",
    "positive",
    "negative",
    "gaussian",
];

fn special(pattern: &str, ty: GgmlType, rng: &mut Rng, len: usize) -> Vec<f32> {
    let sigma = 1.0 / 3072f64.sqrt();
    match pattern {
        "zeros" => vec![0.0; len],
        "constant" => {
            let c = [0.3, -0.3, 1.0, -2.5, 1e-30, 6e4, -6e4, 12_345.678][rng.below(8) as usize];
            vec![c; len]
        }
        "ties" => ties(ty, rng, len, false),
        "near-ties" => ties(ty, rng, len, true),
        "grid" => {
            // Exactly representable: integer levels times a power of two, or random halves.
            let d = pow2(rng);
            let (lo, hi) = levels(ty).unwrap_or((-1024, 1024));
            let span = u64::try_from(hi - lo + 1).unwrap();
            (0..len)
                .map(|i| match i % 32 {
                    0 => lo as f32 * d,
                    1 => hi as f32 * d,
                    _ => (lo + i32::try_from(rng.below(span)).unwrap()) as f32 * d,
                })
                .collect()
        }
        "tiny" => (0..len).map(|_| normal(rng, 1e-30)).collect(),
        "subnormal" => (0..len)
            .map(|i| {
                if i % 8 == 0 {
                    // The smallest subnormals themselves, both signs.
                    let x = f32::from_bits(1 + rng.below(4) as u32);
                    if coin(rng) { -x } else { x }
                } else {
                    normal(rng, 1e-40)
                }
            })
            .collect(),
        "large" => (0..len)
            .map(|i| {
                if i % 32 == 0 {
                    if coin(rng) { 6e4 } else { -6e4 }
                } else {
                    normal(rng, 2e4).clamp(-6e4, 6e4)
                }
            })
            .collect(),
        "alternating" => {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len / 32 {
                let a = log_uniform(rng, -3.0, 3.0) as f32;
                let first = if coin(rng) { a } else { -a };
                v.extend((0..32).map(|i| if i % 2 == 0 { first } else { -first }));
            }
            v
        }
        "sparse" => {
            let mut v = vec![0.0; len];
            for block in v.chunks_mut(32) {
                let at = rng.below(32) as usize;
                block[at] = normal(rng, 1.0);
            }
            v
        }
        "signed-zeros" => (0..len)
            .map(|_| match rng.below(8) {
                0..=2 => 0.0,
                3..=5 => -0.0,
                _ => normal(rng, 1e-3),
            })
            .collect(),
        "mixed-scale" => {
            // Each 32 its own scale, over ten decades: K-quant sub-blocks that disagree.
            let mut v = Vec::with_capacity(len);
            for _ in 0..len / 32 {
                let s = log_uniform(rng, -6.0, 4.0);
                v.extend((0..32).map(|_| normal(rng, s)));
            }
            v
        }
        "positive" => (0..len).map(|_| normal(rng, sigma).abs() + 1e-3).collect(),
        "negative" => (0..len).map(|_| -normal(rng, sigma).abs() - 1e-3).collect(),
        "gaussian" => (0..len).map(|_| normal(rng, sigma)).collect(),
        other => unreachable!("unknown pattern {other}"),
    }
}

/// A FLUX-like weight row: N(0, 1/3072) with a few outlier columns 10–30 times larger.
fn flux_row(rng: &mut Rng, n: usize) -> Vec<f32> {
    const OUTLIERS: [usize; 5] = [7, 300, 1111, 2048, 3001];
    let sigma = 1.0 / 3072f64.sqrt();
    (0..n)
        .map(|c| {
            let x = normal(rng, sigma);
            match OUTLIERS.iter().position(|&o| o % n == c) {
                Some(i) => x * [10.0, 14.0, 19.0, 24.0, 30.0][i],
                None => x,
            }
        })
        .collect()
}

/// Rows of `n` (3072 or 256): Gaussian and FLUX-like rows, rows whose 256-wide stretches cycle
/// through every special pattern, and rows where each block of 32 draws a pattern at random.
fn case(ty: GgmlType, n: usize) -> Case {
    let mut rng = Rng::for_name(lowbit_fixtures::SEED, &format!("quant_exact/{}/{n}", ty.name()));
    let mut c = Case::new(n);
    let sigma = 1.0 / 3072f64.sqrt();
    for _ in 0..4 {
        c.push("gaussian", &(0..n).map(|_| normal(&mut rng, sigma)).collect::<Vec<_>>());
        c.push("flux", &flux_row(&mut rng, n));
    }
    c.push("gaussian-unit", &(0..n).map(|_| normal(&mut rng, 1.0)).collect::<Vec<_>>());
    // Stretches of 256 cycling through the specials: every pattern fills whole super-blocks.
    let stretches = if n == 256 { 2 * SPECIALS.len() } else { 5 * 12 };
    for s in 0..stretches {
        let p = SPECIALS[s % SPECIALS.len()];
        c.push(p, &special(p, ty, &mut rng, 256));
    }
    // Blocks of 32 with patterns at random: super-blocks that mix them.
    for _ in 0..(if n == 256 { 8 } else { 3 }) {
        for _ in 0..n / 32 {
            let p = SPECIALS[rng.below(SPECIALS.len() as u64) as usize];
            c.push(p, &special(p, ty, &mut rng, 32));
        }
    }
    assert_eq!(c.x.len() % n, 0);
    c
}

// --- running the references --------------------------------------------------------------------

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// `<script> quantize TYPE N_PER_ROW IN OUT`, returning OUT's bytes.
fn reference_quantize(script: &str, dir: &Path, ty: GgmlType, case: &Case) -> Vec<u8> {
    let input = dir.join(format!("{}-{}.f32", ty.name(), case.n_per_row));
    let output = dir.join(format!("{}-{}-{script}.bin", ty.name(), case.n_per_row));
    std::fs::write(&input, f32_bytes(&case.x)).unwrap();
    let n = case.n_per_row.to_string();
    run_script(
        script,
        &[
            OsStr::new("quantize"),
            OsStr::new(ty.name()),
            OsStr::new(&n),
            input.as_os_str(),
            output.as_os_str(),
        ],
    );
    std::fs::read(&output).unwrap()
}

/// `<script> dequantize TYPE IN OUT`, returning OUT's values.
fn reference_dequantize(script: &str, dir: &Path, ty: GgmlType, blocks: &[u8]) -> Vec<f32> {
    let input = dir.join(format!("{}-{script}-blocks.bin", ty.name()));
    let output = dir.join(format!("{}-{script}-decoded.f32", ty.name()));
    std::fs::write(&input, blocks).unwrap();
    run_script(
        script,
        &[OsStr::new("dequantize"), OsStr::new(ty.name()), input.as_os_str(), output.as_os_str()],
    );
    bytes_f32(&std::fs::read(&output).unwrap())
}

// --- comparing ---------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

/// Compares packed blocks; `None` when equal, else the count and the first differing block.
fn compare_blocks(
    what: &str,
    ty: GgmlType,
    case: &Case,
    ours: &[u8],
    theirs: &[u8],
) -> Option<String> {
    let (qk, size) = (ty.block_size(), ty.type_size());
    let blocks = case.x.len() / qk;
    if ours.len() != theirs.len() || ours.len() != blocks * size {
        return Some(format!(
            "{}: {what}: {} bytes from lowbit, {} from the reference, {} expected",
            ty.name(),
            ours.len(),
            theirs.len(),
            blocks * size
        ));
    }
    let bad: Vec<usize> =
        (0..blocks).filter(|&b| ours[b * size..][..size] != theirs[b * size..][..size]).collect();
    let &first = bad.first()?;
    let x = &case.x[first * qk..][..qk];
    let input: Vec<String> = x.iter().take(32).map(|v| format!("{v:e}")).collect();
    Some(format!(
        "{}: {what}: {} of {blocks} blocks differ (by pattern: {}); first is block {first} ({})\n  \
         lowbit    {}\n  reference {}\n  input{} [{}]",
        ty.name(),
        bad.len(),
        case.patterns_of(&bad, qk),
        case.describe(first * qk, qk),
        hex(&ours[first * size..][..size]),
        hex(&theirs[first * size..][..size]),
        if qk > 32 { " (first 32)" } else { "" },
        input.join(", ")
    ))
}

/// Compares decoded values bit for bit (any NaN equals any NaN), reporting per block.
fn compare_decoded(
    what: &str,
    ty: GgmlType,
    blocks: &[u8],
    ours: &[f32],
    theirs: &[f32],
) -> Option<String> {
    let (qk, size) = (ty.block_size(), ty.type_size());
    let n = blocks.len() / size;
    if ours.len() != theirs.len() || ours.len() != n * qk {
        return Some(format!(
            "{}: {what}: {} values from lowbit, {} from the reference, {} expected",
            ty.name(),
            ours.len(),
            theirs.len(),
            n * qk
        ));
    }
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let bad: Vec<usize> =
        (0..n).filter(|&b| (b * qk..(b + 1) * qk).any(|i| !same(ours[i], theirs[i]))).collect();
    let &first = bad.first()?;
    let i = (first * qk..(first + 1) * qk).find(|&i| !same(ours[i], theirs[i])).unwrap();
    Some(format!(
        "{}: {what}: {} of {n} blocks decode differently; first is block {first}, element {i}: \
         lowbit {:e} ({:#010x}), reference {:e} ({:#010x})\n  block bytes {}",
        ty.name(),
        bad.len(),
        ours[i],
        ours[i].to_bits(),
        theirs[i],
        theirs[i].to_bits(),
        hex(&blocks[first * size..][..size])
    ))
}

fn lowbit_quantize(ty: GgmlType, x: &[f32], reference: bool) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    let r = if reference {
        lowbit_quant::quantize_ref(ty, x, &mut out)
    } else {
        lowbit_quant::quantize(ty, x, &mut out)
    };
    r.unwrap_or_else(|e| panic!("{}: lowbit cannot quantize: {e}", ty.name()));
    out
}

fn lowbit_dequantize(ty: GgmlType, blocks: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; blocks.len() / ty.type_size() * ty.block_size()];
    lowbit_dtype::dequantize(ty, blocks, &mut out)
        .unwrap_or_else(|e| panic!("{}: lowbit cannot dequantize: {e}", ty.name()));
    out
}

/// Every check for one type; panics with every failure found, not just the first.
fn check(ty: GgmlType) {
    assert!(lowbit_quant::supports_quantize(ty), "lowbit does not quantize {}", ty.name());
    ggml_ref_built();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for n in [3072, 256] {
        let case = case(ty, n);
        compared += case.x.len() / ty.block_size();
        let ggml = reference_quantize("ggml_ref.py", dir.path(), ty, &case);
        let ours = lowbit_quantize(ty, &case.x, false);
        let ours_ref = lowbit_quantize(ty, &case.x, true);
        failures.extend(compare_blocks("quantize vs ggml", ty, &case, &ours, &ggml));
        failures.extend(compare_blocks("quantize_ref vs ggml", ty, &case, &ours_ref, &ggml));
        if GGUF_QUANTIZES.contains(&ty) {
            let mut gguf = reference_quantize("gguf_quant.py", dir.path(), ty, &case);
            accept_gguf_signed_zero_minimum(ty, &case, &ours, &mut gguf);
            failures.extend(compare_blocks("quantize vs gguf", ty, &case, &ours, &gguf));
        }
        check_decoding(ty, dir.path(), &format!("{n}-wide rows"), &ggml, &mut failures);
    }
    // Blocks no quantizer writes: every scale and code pattern, NaN and infinite scales too.
    let mut rng = Rng::for_name(lowbit_fixtures::SEED, &format!("quant_exact/{}/raw", ty.name()));
    let n_blocks = if ty.block_size() == 1 { 4096 } else { 256 };
    let raw: Vec<u8> =
        (0..n_blocks * ty.type_size()).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
    check_decoding(ty, dir.path(), "random bytes", &raw, &mut failures);
    assert!(
        failures.is_empty(),
        "{}: {} of the checks failed ({compared} blocks of input):\n{}",
        ty.name(),
        failures.len(),
        failures.join("\n")
    );
}

/// The one place the `gguf` package and ggml disagree: Q4_1/Q5_1 store the block minimum, and for
/// a block of signed zeros numpy's `min` returns −0.0 where ggml's `v < min` loop keeps +0.0.
/// lowbit follows ggml (checked against ggml above), so where the package's bytes differ from
/// ours only in the sign bit of a zero minimum, take ours.
fn accept_gguf_signed_zero_minimum(ty: GgmlType, case: &Case, ours: &[u8], gguf: &mut [u8]) {
    if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) || ours.len() != gguf.len() {
        return;
    }
    let (qk, size) = (ty.block_size(), ty.type_size());
    for b in 0..case.x.len() / qk {
        let (o, g) = (&ours[b * size..][..size], &mut gguf[b * size..][..size]);
        // Bytes 2..4 are the f16 minimum `m`.
        let only_m_sign =
            o[..2] == g[..2] && o[4..] == g[4..] && o[2..4] == [0, 0] && g[2..4] == [0, 0x80];
        let block_min = case.x[b * qk..][..qk].iter().fold(f32::MAX, |m, &v| m.min(v));
        if only_m_sign && block_min == 0.0 {
            g.copy_from_slice(o);
        }
    }
}

/// lowbit's dequantize of `blocks` against ggml's and the `gguf` package's.
fn check_decoding(
    ty: GgmlType,
    dir: &Path,
    label: &str,
    blocks: &[u8],
    failures: &mut Vec<String>,
) {
    let ours = lowbit_dequantize(ty, blocks);
    let ggml = reference_dequantize("ggml_ref.py", dir, ty, blocks);
    let gguf = reference_dequantize("gguf_quant.py", dir, ty, blocks);
    failures.extend(compare_decoded(
        &format!("dequantize vs ggml, {label}"),
        ty,
        blocks,
        &ours,
        &ggml,
    ));
    failures.extend(compare_decoded(
        &format!("dequantize vs gguf, {label}"),
        ty,
        blocks,
        &ours,
        &gguf,
    ));
}

/// The list above is every type lowbit quantizes, and the reference library knows each of them.
#[test]
fn every_quantizable_type_is_checked() {
    let supported: Vec<GgmlType> =
        GgmlType::ALL.iter().copied().filter(|&t| lowbit_quant::supports_quantize(t)).collect();
    assert_eq!(supported, TYPES, "add new types to TYPES (and to tests/interop/ggml_shim.c)");
    let shim = std::fs::read_to_string(root().join("tests/interop/ggml_shim.c")).unwrap();
    for ty in TYPES {
        assert!(
            shim.contains(&format!("[GGML_TYPE_{}]", ty.name())),
            "{} not in the shim",
            ty.name()
        );
    }
}

macro_rules! exact {
    ($($test:ident: $ty:ident,)*) => {$(
        #[doc = concat!("`", stringify!($ty), "` matches ggml (and the `gguf` package) bit for bit.")]
        #[test]
        fn $test() {
            check(GgmlType::$ty);
        }
    )*};
}

exact! {
    f32_matches_ggml: F32,
    f16_matches_ggml: F16,
    bf16_matches_ggml: BF16,
    q4_0_matches_ggml: Q4_0,
    q4_1_matches_ggml: Q4_1,
    q5_0_matches_ggml: Q5_0,
    q5_1_matches_ggml: Q5_1,
    q8_0_matches_ggml: Q8_0,
    q2_k_matches_ggml: Q2_K,
    q3_k_matches_ggml: Q3_K,
    q4_k_matches_ggml: Q4_K,
    q5_k_matches_ggml: Q5_K,
    q6_k_matches_ggml: Q6_K,
    tq1_0_matches_ggml: TQ1_0,
    tq2_0_matches_ggml: TQ2_0,
}
