//! The CPU reference GEMM (`formats/gemm.md`): `Y[m, c] = Σ_k X[m, k] · W[c, k] (+ bias[c])`
//! for a weight as stored (a packed scheme, a GGUF tensor or a dense tensor), from the weight
//! the layout's own decoder gives, accumulated in `f64`. GPU kernels are checked against it with
//! [`compare`].
//!
//! The weight is decoded [`CHUNK_ROWS`] rows at a time, and only the rows of the output columns
//! asked for, so memory stays at a few rows of the weight whatever its size; a caller splits the
//! columns over threads (this crate runs none).

use crate::{Error, Scheme, check_len};
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_dtype::fp8::{e4m3_to_f32, f32_to_e4m3};
use lowbit_dtype::{Dtype, GgmlType, decode_to_f32, dequantize, supports_dequantize};
use std::borrow::Cow;
use std::ops::Range;

/// Rows of the weight decoded at a time.
pub(crate) const CHUNK_ROWS: usize = 64;

/// A weight as stored.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    /// A packed scheme: the bytes of `Scheme::stored`'s tensors, in that order.
    Packed {
        /// The scheme.
        scheme: Scheme,
        /// The stored tensors' bytes, in [`Scheme::stored`] order.
        stored: &'a [&'a [u8]],
    },
    /// A GGUF (ggml) tensor: rows of K elements, blocks along K.
    Ggml {
        /// The ggml type.
        ty: GgmlType,
        /// The tensor's bytes, `N` rows of `ty.row_bytes(K)`.
        bytes: &'a [u8],
    },
    /// A dense tensor (BF16, F16, F32, FP8 …) `[N, K]`.
    Dense {
        /// The element type.
        dtype: Dtype,
        /// The tensor's bytes, little-endian, row-major.
        bytes: &'a [u8],
    },
}

impl Weight<'_> {
    /// Whether the weight's elements are FP8 codes (W8A8 kernels take only those).
    fn is_fp8(&self) -> bool {
        matches!(
            self,
            Weight::Packed {
                scheme: Scheme::Fp8 { .. } | Scheme::ComfyFp8 { .. } | Scheme::BflFp8,
                ..
            } | Weight::Dense { dtype: Dtype::F8E4M3 | Dtype::F8E5M2, .. }
        )
    }

    /// The weight's kind, for messages.
    fn kind(&self) -> String {
        match self {
            Weight::Packed { scheme, .. } => scheme.to_string(),
            Weight::Ggml { ty, .. } => format!("GGUF {ty}"),
            Weight::Dense { dtype, .. } => dtype.to_string(),
        }
    }
}

/// How the kernel treats the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// X as given (its values are BF16 numbers): weight-only kernels, SVDQuant W4A16, and
    /// SVDQuant W4A4 (whose own int4 activation quantization is part of `svdq::forward`).
    Bf16,
    /// W8A8: each token (row of X) quantized to `float8_e4m3fn` with one f32 scale
    /// ([`fp8_token`]).
    Fp8PerToken,
}

/// W8A8's activation quantizer on one token: amax = max |x| (f32; NaN ignored), scale
/// s = amax / 448 (f32 division), or 1 when amax is 0; `codes[i]` = `f32_to_e4m3(x[i] / s)`.
/// Returns s; the token's values are then `s · e4m3(code)`. Pairs of `x` and `codes` are taken
/// up to the shorter length.
///
/// For BF16 inputs s is never 0 (amax ≥ 2^-133, and 2^-133 / 448 is an f32 subnormal).
#[must_use]
pub fn fp8_token(x: &[f32], codes: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = if amax == 0.0 { 1.0 } else { amax / 448.0 };
    for (c, v) in codes.iter_mut().zip(x) {
        *c = f32_to_e4m3(v / s);
    }
    s
}

/// `Σ a[i] · b[i]` in `f64`: each product is exact (two f32 significands fit in an f64's), summed
/// in 8 lanes (`i mod 8`, over whole groups of 8), the lanes added in order, then the remaining
/// products in order. A fixed order, so the reference is deterministic.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    const L: usize = 8;
    let mut lanes = [0.0f64; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *s += f64::from(x) * f64::from(y);
        }
    }
    let mut sum: f64 = lanes.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        sum += f64::from(x) * f64::from(y);
    }
    sum
}

/// An [`Error::Value`] about `tensor` (`input`, `bias`, `weight`, `output`).
fn value(tensor: &str, reason: String) -> Error {
    Error::Value { tensor: tensor.to_owned(), reason }
}

/// Bytes of one row of a GGUF or dense weight, lengths checked against `[n, k]`.
fn row_bytes(w: &Weight<'_>, n: u64, k: u64) -> Result<u64, Error> {
    let (bytes, row) = match *w {
        Weight::Packed { .. } => return Ok(0),
        Weight::Ggml { ty, bytes } => {
            if !supports_dequantize(ty) {
                return Err(value("weight", format!("GGUF type {ty} cannot be decoded")));
            }
            let row = ty.row_bytes(k).ok_or_else(|| {
                value("weight", format!("row length {k} is not a whole number of {ty} blocks"))
            })?;
            (bytes, row)
        }
        Weight::Dense { dtype, bytes } => (bytes, crate::error::mul(k, dtype.size() as u64)?),
    };
    check_len("weight", bytes, crate::error::mul(n, row)?)?;
    Ok(row)
}

/// Decodes rows `rows` (inside `0..n`) of `w` into `out` (`rows.len() · k` values); `row` is
/// [`row_bytes`]'s answer.
fn decode_rows(
    w: &Weight<'_>,
    n: u64,
    k: u64,
    row: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    // Lengths checked by `row_bytes`: n rows of `row` bytes are in memory.
    let part = (rows.start * row) as usize..(rows.end * row) as usize;
    let decoded = match *w {
        Weight::Packed { scheme, stored } => return scheme.decode(stored, n, k, rows, out),
        Weight::Ggml { ty, bytes } => dequantize(ty, &bytes[part], out).map_err(|e| e.to_string()),
        Weight::Dense { dtype, bytes } => {
            decode_to_f32(dtype, &bytes[part], out).map_err(|e| e.to_string())
        }
    };
    decoded.map_err(|reason| value("weight", reason))
}

/// The reference product `Y = X · Wᵀ (+ bias)` for output columns `cols` of a weight `[n, k]`:
/// `x` is `[m, k]` row-major (m = `x.len() / k`), the result `[m, cols.len()]` row-major, each
/// value `Σ_k x[m, k] · W[c, k]` accumulated in `f64` (for [`Activation::Fp8PerToken`],
/// `s_m · Σ_k e4m3(code[m, k]) · W[c, k]`), plus `bias[c]` (`n` values) when given, then rounded
/// to f32. `W` is the weight the layout's decoder gives; only rows `cols` are decoded,
/// [`CHUNK_ROWS`] at a time, so a column range gives exactly the matching columns of the whole
/// product. SVDQuant (`Scheme::Svdq`) is its layer, timestep group 0, through
/// [`crate::svdq::forward`]. With no token or no column the result is empty and no row of the
/// weight is decoded.
///
/// # Errors
/// `k == 0`, `x` not whole rows of `k`, `cols` outside `0..n`, `bias` not of `n` values,
/// [`Activation::Fp8PerToken`] with a weight that is not FP8, and a stored weight that does not
/// fit `[n, k]` (lengths, codes, a GGUF type without a decoder).
pub fn reference(
    w: &Weight<'_>,
    n: u64,
    k: u64,
    cols: Range<u64>,
    x: &[f32],
    act: Activation,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, Error> {
    if k == 0 {
        return Err(value("input", "rows of 0 values".to_owned()));
    }
    if !(x.len() as u64).is_multiple_of(k) {
        return Err(value("input", format!("{} input values are not rows of {k}", x.len())));
    }
    if cols.start > cols.end || cols.end > n {
        return Err(value("input", format!("columns {cols:?} are not inside the {n} outputs")));
    }
    if let Some(b) = bias.filter(|b| b.len() as u64 != n) {
        return Err(value("bias", format!("{} values for {n} outputs", b.len())));
    }
    if act == Activation::Fp8PerToken && !w.is_fp8() {
        return Err(value(
            "input",
            format!("FP8 activations (W8A8) need an FP8 weight, not {}", w.kind()),
        ));
    }
    if let Weight::Packed { scheme: Scheme::Svdq { act4, rank, groups }, stored } = *w {
        return crate::svdq::forward(stored, rank, groups, 0, act4, n, k, cols, x, bias);
    }
    let row = row_bytes(w, n, k)?;
    if x.is_empty() || cols.is_empty() {
        return Ok(Vec::new());
    }
    // x holds at least one row of k values, and cols.end ≤ n, whose rows are in memory for GGUF
    // and dense weights (checked above) and checked by the decoder for packed ones before `y`
    // is allocated.
    let (k, width) = (k as usize, (cols.end - cols.start) as usize);
    let m = x.len() / k;
    let (xa, scales): (Cow<'_, [f32]>, Vec<f32>) = match act {
        Activation::Bf16 => (Cow::Borrowed(x), Vec::new()),
        Activation::Fp8PerToken => {
            let mut codes = vec![0u8; k];
            let mut xa = vec![0.0f32; x.len()];
            let mut scales = Vec::with_capacity(m);
            for (xr, ar) in x.chunks_exact(k).zip(xa.chunks_exact_mut(k)) {
                scales.push(fp8_token(xr, &mut codes));
                for (a, &c) in ar.iter_mut().zip(&codes) {
                    *a = e4m3_to_f32(c);
                }
            }
            (Cow::Owned(xa), scales)
        }
    };
    let mut w_rows = vec![0.0f32; CHUNK_ROWS.min(width) * k];
    let mut y = Vec::new();
    for first in (0..width).step_by(CHUNK_ROWS) {
        let last = (first + CHUNK_ROWS).min(width);
        let wc = &mut w_rows[..(last - first) * k];
        let rows = cols.start + first as u64..cols.start + last as u64;
        decode_rows(w, n, k as u64, row, rows, wc)?;
        if y.is_empty() {
            y = vec![0.0f32; m * width];
        }
        for (i, xr) in xa.chunks_exact(k).enumerate() {
            let yr = &mut y[i * width..(i + 1) * width];
            for (c, wr) in (first..last).zip(wc.chunks_exact(k)) {
                let mut acc = dot(xr, wr);
                if let Some(s) = scales.get(i) {
                    acc *= f64::from(*s);
                }
                if let Some(b) = bias {
                    acc += f64::from(b[cols.start as usize + c]);
                }
                #[expect(clippy::cast_possible_truncation, reason = "the one rounding to f32")]
                let v = acc as f32;
                yr[c] = v;
            }
        }
    }
    Ok(y)
}

/// How far a GPU output is from the reference ([`compare`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// `‖gpu − bf16(ref)‖₂ / ‖ref‖₂`; infinite when any value (GPU or reference) is not finite,
    /// or when the reference is all zero and the GPU output is not; 0 when both are all zero.
    pub rel: f64,
    /// `max |gpu − ref|`; infinite when any GPU value is not finite.
    pub max_abs: f64,
    /// GPU values that are NaN or infinite.
    pub nonfinite: usize,
    /// `‖bf16(ref) − ref‖₂ / ‖ref‖₂`: what rounding the reference to BF16 alone costs (0 for an
    /// all-zero reference; infinite for a reference that is not finite).
    pub rel_bf16_floor: f64,
}

/// Compares a GPU output with the reference, value for value (norms in `f64`). The relative
/// error is measured against the reference rounded to BF16 (nearest even), which is the best a
/// BF16 output can give; that rounding alone is `rel_bf16_floor` from the true reference.
///
/// # Errors
/// Slices of different lengths.
pub fn compare(gpu: &[f32], reference: &[f32]) -> Result<Comparison, Error> {
    if gpu.len() != reference.len() {
        return Err(value(
            "output",
            format!("{} GPU values for {} reference values", gpu.len(), reference.len()),
        ));
    }
    let (mut diff, mut norm, mut floor, mut max_abs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut nonfinite = 0;
    let mut ref_finite = true;
    for (&g, &r) in gpu.iter().zip(reference) {
        nonfinite += usize::from(!g.is_finite());
        ref_finite &= r.is_finite();
        let rb = f64::from(bf16_to_fp32(fp32_to_bf16(r)));
        let (g, r) = (f64::from(g), f64::from(r));
        // Squares of f32 values cannot overflow an f64.
        diff += (g - rb) * (g - rb);
        norm += r * r;
        floor += (rb - r) * (rb - r);
        let d = (g - r).abs();
        max_abs = if d.is_nan() { f64::INFINITY } else { max_abs.max(d) };
    }
    if nonfinite > 0 {
        max_abs = f64::INFINITY;
    }
    // ‖·‖ / ‖ref‖: 0 for a zero numerator (so 0/0 = 0), infinite for x/0.
    let ratio = |num: f64| if num == 0.0 { 0.0 } else { (num / norm).sqrt() };
    let rel = if nonfinite == 0 && ref_finite { ratio(diff) } else { f64::INFINITY };
    let rel_bf16_floor = if ref_finite { ratio(floor) } else { f64::INFINITY };
    Ok(Comparison { rel, max_abs, nonfinite, rel_bf16_floor })
}

#[cfg(test)]
mod tests {
    use super::{Activation, Comparison, Weight, compare, fp8_token, reference};
    use crate::svdq::forward;
    use crate::{Error, Fp8Format, ScaleGranularity, Scheme};
    use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
    use lowbit_dtype::{Dtype, GgmlType};
    use std::ops::Range;

    fn bf(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| fp32_to_bf16(*x).to_le_bytes()).collect()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The reference of a packed weight, BF16 activations.
    fn run(
        scheme: Scheme,
        stored: &[Vec<u8>],
        n: u64,
        k: u64,
        cols: Range<u64>,
        x: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>, Error> {
        let stored: Vec<&[u8]> = stored.iter().map(Vec::as_slice).collect();
        let w = Weight::Packed { scheme, stored: &stored };
        reference(&w, n, k, cols, x, Activation::Bf16, bias)
    }

    /// [`run`] over all columns, no bias.
    fn packed(scheme: Scheme, stored: &[Vec<u8>], n: u64, k: u64, x: &[f32]) -> Vec<f32> {
        run(scheme, stored, n, k, 0..n, x, None).unwrap()
    }

    /// Each column range's output `f(cols)` is the matching columns of `y` (`[m, n]`).
    fn slices_match(y: &[f32], n: u64, ranges: &[Range<u64>], f: impl Fn(Range<u64>) -> Vec<f32>) {
        for cols in ranges {
            let width = (cols.end - cols.start) as usize;
            for (i, row) in f(cols.clone()).chunks_exact(width).enumerate() {
                let start = i * n as usize + cols.start as usize;
                assert_eq!(row, &y[start..start + width], "{cols:?}");
            }
        }
    }

    const TERNARY: Scheme = Scheme::Ternary { scale: ScaleGranularity::Channel };

    #[test]
    fn ternary_by_hand() {
        // Row 0: q = [1, 0, −1, 1] → codes [2, 1, 0, 2] → 0x86; row 1: q = [−1, −1, 0, 1] → 0x90.
        // Scales 0.5 and 2; two tokens; bias [0.25, −1].
        let stored = [vec![0x86, 0x90], bf(&[0.5, 2.0])];
        let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 0.5];
        let y = run(TERNARY, &stored, 2, 4, 0..2, &x, Some(&[0.25, -1.0])).unwrap();
        // 0.5·(1 − 3 + 4) + 0.25, 2·(−1 − 2 + 4) − 1, 0.5·(−1 − 1 + 0.5) + 0.25, 2·(1 + 0.5) − 1.
        assert_eq!(y, [1.25, 1.0, -0.5, 2.0]);
    }

    #[test]
    fn bitnet_by_hand() {
        // [4, 2], q by row: [1, −1], [0, 1], [−1, 0], [1, 1]; codes q+1 of row i in bits 2i.
        // Column 0: 2 | 1<<2 | 0<<4 | 2<<6 = 134; column 1: 0 | 2<<2 | 1<<4 | 2<<6 = 152.
        // weight_scale = 1/γ = 2, so W = q / 2.
        let y = packed(Scheme::Bitnet, &[vec![134, 152], bf(&[2.0])], 4, 2, &[2.0, 6.0]);
        assert_eq!(y, [-2.0, 3.0, -1.0, 4.0]);
    }

    #[test]
    fn int4_by_hand() {
        // [2, 32], group 32: row 0 bytes 0x71 (even k code 1, odd k code 7), row 1 0xee (−2, −2);
        // scales 0.5; x_k = k + 1 (even k sum to 256, odd k to 272, all to 528).
        let mut q = vec![0x71u8; 16];
        q.extend([0xee; 16]);
        let x: Vec<f32> = (1..=32).map(|v| v as f32).collect();
        let sym = Scheme::Int4 { group: 32, asym: false };
        let y = packed(sym, &[q.clone(), bf(&[0.5, 0.5])], 2, 32, &x);
        assert_eq!(y, [0.5 * (256.0 + 7.0 * 272.0), -528.0]);
        // Zero points 1 and −3 add 528 and −3·528.
        let asym = Scheme::Int4 { group: 32, asym: true };
        let y = packed(asym, &[q, bf(&[0.5, 0.5]), bf(&[1.0, -3.0])], 2, 32, &x);
        assert_eq!(y, [1080.0 + 528.0, -528.0 - 3.0 * 528.0]);
    }

    #[test]
    fn nf4_by_hand() {
        // [1, 64], one block: bytes 0xf0, so even elements (high nibble) take code 15 = 1.0 and
        // odd ones code 0 = −1.0; absmax 0.5. x_k = k + 1: 32 pairs of (x − (x + 1)) · 0.5.
        let json = crate::nf4::quant_state_json([1, 64], Dtype::BF16, None);
        let stored = [vec![0xf0; 32], f32s(&[0.5]), f32s(&crate::nf4::CODE), json.into_bytes()];
        let x: Vec<f32> = (1..=64).map(|v| v as f32).collect();
        assert_eq!(packed(Scheme::Nf4 { double_quant: false }, &stored, 1, 64, &x), [-16.0]);
    }

    #[test]
    fn fp8_layouts_by_hand() {
        // E4M3 0x38 = 1, 0xb8 = −1, 0x40 = 2, 0x7e = 448; E5M2 0x3c = 1, 0x40 = 2.
        let w = vec![0x38, 0xb8, 0x40, 0x7e];
        let plain = Scheme::Fp8 { format: Fp8Format::E4M3 };
        assert_eq!(packed(plain, std::slice::from_ref(&w), 2, 2, &[3.0, 0.5]), [2.5, 230.0]);
        let e5m2 = Scheme::Fp8 { format: Fp8Format::E5M2 };
        assert_eq!(packed(e5m2, &[vec![0x3c, 0x40]], 1, 2, &[3.0, 0.5]), [4.0]);
        // ComfyUI: per-tensor scale 0.5 → W = [[0.5, −0.5], [1, 224]].
        let marker = crate::fp8::comfy_marker(Fp8Format::E4M3).into_bytes();
        let comfy = Scheme::ComfyFp8 { format: Fp8Format::E4M3 };
        let y = packed(comfy, &[w.clone(), f32s(&[0.5]), marker], 2, 2, &[2.0, 1.0]);
        assert_eq!(y, [0.5, 2.0 + 224.0]);
        // BFL: per-row scales 2 and 0.25 → W = [[2, −2], [0.5, 112]].
        let y = packed(Scheme::BflFp8, &[w, f32s(&[2.0, 0.25])], 2, 2, &[1.0, 1.0]);
        assert_eq!(y, [0.0, 112.5]);
    }

    #[test]
    fn dense_by_hand() {
        // W = [[1, −2, 0.5], [3, 0, −1]], x = [2, 1, −4]: [−2, 10].
        let half: [u16; 6] = [0x3c00, 0xc000, 0x3800, 0x4200, 0x0000, 0xbc00];
        let cases = [
            (Dtype::BF16, bf(&[1.0, -2.0, 0.5, 3.0, 0.0, -1.0])),
            (Dtype::F16, half.iter().flat_map(|h| h.to_le_bytes()).collect()),
            (Dtype::F32, f32s(&[1.0, -2.0, 0.5, 3.0, 0.0, -1.0])),
            (Dtype::F8E4M3, vec![0x38, 0xc0, 0x30, 0x44, 0x00, 0xb8]),
        ];
        for (dtype, bytes) in cases {
            let w = Weight::Dense { dtype, bytes: &bytes };
            let y = reference(&w, 2, 3, 0..2, &[2.0, 1.0, -4.0], Activation::Bf16, None).unwrap();
            assert_eq!(y, [-2.0, 10.0], "{dtype}");
        }
    }

    #[test]
    fn gguf_q8_0_by_hand() {
        // Two Q8_0 rows of one block each (f16 d, then 32 int8): row 0 d = 0.5, q_i = i − 16;
        // row 1 d = 2, q_i = −3.
        let mut bytes = vec![0x00, 0x38];
        bytes.extend((0..32).map(|i: i8| (i - 16).cast_unsigned()));
        bytes.extend([0x00, 0x40]);
        bytes.extend([(-3i8).cast_unsigned(); 32]);
        let w = Weight::Ggml { ty: GgmlType::Q8_0, bytes: &bytes };
        // Token 0: ones; token 1: x_k = k (Σk = 496, Σk² = 10416).
        let mut x = vec![1.0f32; 32];
        x.extend((0..32).map(|v| v as f32));
        let y = reference(&w, 2, 32, 0..2, &x, Activation::Bf16, None).unwrap();
        let t0 = [0.5 * (496.0 - 512.0), 2.0 * -3.0 * 32.0];
        let t1 = [0.5 * (10416.0 - 16.0 * 496.0), 2.0 * -3.0 * 496.0];
        assert_eq!(y, [t0[0], t0[1], t1[0], t1[1]]);
    }

    #[test]
    fn fp8_token_codes_and_scale() {
        // amax 2: s = 2/448; x/s = 448, −224, 112, 0 → 0x7e, 0xf6 (−1.75·2^7), 0x6e (1.75·2^6), 0.
        let mut codes = [0xaa; 4];
        let s = fp8_token(&[2.0, -1.0, 0.5, 0.0], &mut codes);
        assert_eq!((s, codes), (2.0f32 / 448.0, [0x7e, 0xf6, 0x6e, 0x00]));
        // amax 448: s = 1; 1.1 rounds to 1.125 (0x39); −1.0625 is halfway, to even 1.0 (0xb8).
        let s = fp8_token(&[448.0, 1.1, -1.0625], &mut codes[..3]);
        assert_eq!((s, &codes[..3]), (1.0, &[0x7e, 0x39, 0xb8][..]));
        // amax 0: s = 1, codes 0.
        assert_eq!((fp8_token(&[0.0, -0.0], &mut codes[..2]), &codes[..2]), (1.0, &[0, 0x80][..]));
    }

    #[test]
    fn w8a8_quantizes_each_token() {
        // W = [[1, 2]] (E4M3 0x38, 0x40). Token 0 [448, 1.1]: s = 1, codes 448 and 1.125;
        // token 1 [896, 2.2]: s = 2, the same codes.
        let x = [448.0, 1.1, 896.0, 2.2];
        let bytes = [0x38, 0x40];
        let w = Weight::Dense { dtype: Dtype::F8E4M3, bytes: &bytes };
        let y = reference(&w, 1, 2, 0..1, &x, Activation::Fp8PerToken, None).unwrap();
        assert_eq!(y, [450.25, 900.5]);
        let y = reference(&w, 1, 2, 0..1, &x, Activation::Bf16, None).unwrap();
        assert_eq!(y[0], (448.0 + 2.0 * f64::from(1.1f32)) as f32);
        // BFL weight: W = [[0.5, 1]] (row scale 0.5); bias 1.
        let stored: [&[u8]; 2] = [&bytes, &f32s(&[0.5])];
        let w = Weight::Packed { scheme: Scheme::BflFp8, stored: &stored };
        let y = reference(&w, 1, 2, 0..1, &x[..2], Activation::Fp8PerToken, Some(&[1.0])).unwrap();
        assert_eq!(y, [224.0 + 1.125 + 1.0]);
    }

    #[test]
    fn column_ranges_are_slices_of_the_whole() {
        // A dense [150, 32] weight of small integers (exact sums), 3 tokens, bias c/2: more than
        // two chunks of 64 rows. The whole product is checked against the test's own sums.
        let (n, k) = (150usize, 32usize);
        let wv: Vec<f32> = (0..n * k).map(|i| (i * 7 % 11) as f32 - 5.0).collect();
        let x: Vec<f32> = (0..3 * k).map(|i| ((i / k * 5 + i % k) % 7) as f32 - 3.0).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32 / 2.0).collect();
        let mut want = Vec::new();
        for xr in x.chunks_exact(k) {
            for (wr, b) in wv.chunks_exact(k).zip(&bias) {
                want.push(xr.iter().zip(wr).map(|(a, w)| a * w).sum::<f32>() + b);
            }
        }
        let bytes = bf(&wv);
        let w = Weight::Dense { dtype: Dtype::BF16, bytes: &bytes };
        let part = |cols| reference(&w, 150, 32, cols, &x, Activation::Bf16, Some(&bias)).unwrap();
        assert_eq!(part(0..150), want);
        slices_match(&want, 150, &[0..64, 63..65, 37..141, 128..150, 149..150], part);
        assert!(part(5..5).is_empty());
    }

    #[test]
    fn decodes_only_the_rows_asked_for() {
        // Ternary [2, 4]: row 1 holds code 3 (no ternary value), so only row 0 decodes.
        let stored = [vec![0x86, 0xff], bf(&[0.5, 2.0])];
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(run(TERNARY, &stored, 2, 4, 0..1, &x, None).unwrap(), [1.0]);
        let e = run(TERNARY, &stored, 2, 4, 0..2, &x, None).unwrap_err();
        assert!(e.to_string().contains("code 3"), "{e}");
    }

    // The svdq tests' [2, 64] layer of rank 1: codes 1 in row 0 and −2 in row 1, scale 0.5,
    // λ = 2, down = 1/64, up = [1, −1].
    use crate::svdq::tests::layer as svdq_layer;

    #[test]
    fn svdq_by_hand() {
        let svdq = |act4| Scheme::Svdq { act4, rank: 1, groups: 1 };
        let layer = svdq_layer();
        // W4A16, x = 1: x/λ = 0.5; residual 64·0.5·(±W); branch Σ x/64 = 1, times up.
        assert_eq!(packed(svdq(false), &layer, 2, 64, &[1.0; 64]), [16.0 + 1.0, -32.0 - 1.0]);
        // W4A4, x = [14, 5.2, …]: x/λ = [7, 2.6, …], amax 7, scale 1, codes [7, 3, …]:
        // residual 32·(7 + 3)·W = 320·W; W4A16 would give 32·(7 + 2.6)·W.
        let x: Vec<f32> = (0..64).map(|i| if i % 2 == 0 { 14.0 } else { 5.2 }).collect();
        let branch = (32.0 * 14.0 + 32.0 * f64::from(5.2f32)) / 64.0;
        let want = [160.0 + branch, -320.0 - branch];
        for (got, want) in packed(svdq(true), &layer, 2, 64, &x).iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-4, "{got} {want}");
        }
        let w4a16 = packed(svdq(false), &layer, 2, 64, &x)[0];
        assert!((f64::from(w4a16) - (0.5 * 32.0 * (7.0 + 2.6) + branch)).abs() < 1e-3);
    }

    #[test]
    fn svdq_through_reference_is_its_forward() {
        // [130, 64], rank 2, two timestep groups (group 0 is the one used), patterned bytes:
        // the reference is `svdq::forward` of group 0, and column ranges slice it.
        let (n, k, r, g) = (130u64, 64u64, 2u64, 2u64);
        let q: Vec<u8> = (0..g * n * k / 2).map(|i| (i * 37 % 251) as u8).collect();
        let pattern = |len: u64, lo: f32| -> Vec<u8> {
            bf(&(0..len).map(|i| lo + (i * 13 % 17) as f32 / 16.0).collect::<Vec<_>>())
        };
        let (up, down) = (pattern(g * n * r, -0.5), pattern(g * k * r, -0.5));
        let s = [q, pattern(g * n, 0.1), pattern(g * k, 0.5), down, up];
        let stored: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
        let x: Vec<f32> = (0..3 * k).map(|i| (i % 9) as f32 / 4.0 - 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32 / 8.0).collect();
        for act4 in [false, true] {
            let scheme = Scheme::Svdq { act4, rank: 2, groups: 2 };
            let part = |cols| run(scheme, &s, n, k, cols, &x, Some(&bias)).unwrap();
            let want = forward(&stored, 2, 2, 0, act4, n, k, 0..n, &x, Some(&bias)).unwrap();
            assert_eq!(part(0..n), want);
            slices_match(&want, n, &[0..1, 60..70, 64..130, 129..130], part);
        }
    }

    #[test]
    fn refuses_bad_requests() {
        let bytes = bf(&[1.0; 8]);
        let dense = Weight::Dense { dtype: Dtype::BF16, bytes: &bytes };
        let (x, bf16, fp8) = ([1.0f32; 4], Activation::Bf16, Activation::Fp8PerToken);
        let err = |w: &Weight<'_>, n, k, cols, x: &[f32], act, bias| {
            reference(w, n, k, cols, x, act, bias).unwrap_err().to_string()
        };
        assert!(err(&dense, 2, 0, 0..2, &x, bf16, None).contains("rows of 0"));
        assert!(err(&dense, 2, 4, 0..2, &x[..3], bf16, None).contains("3 input values"));
        assert!(err(&dense, 2, 4, 0..3, &x, bf16, None).contains("not inside"));
        #[expect(clippy::reversed_empty_ranges, reason = "the refusal under test")]
        let backwards = 2..1;
        assert!(err(&dense, 2, 4, backwards, &x, bf16, None).contains("not inside"));
        assert!(err(&dense, 2, 4, 0..2, &x, bf16, Some(&[0.0])).contains("1 values for 2"));
        // W8A8 takes FP8 weights only.
        assert!(err(&dense, 2, 4, 0..2, &x, fp8, None).contains("FP8 weight, not BF16"));
        let s = svdq_layer();
        let stored: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
        let svdq = Scheme::Svdq { act4: true, rank: 1, groups: 1 };
        let svdq = Weight::Packed { scheme: svdq, stored: &stored };
        assert!(err(&svdq, 2, 64, 0..2, &[0.0; 64], fp8, None).contains("not svdq-w4a4:r1"));
        let int4 = |asym| Scheme::Int4 { group: 64, asym };
        let int4 = |asym| Weight::Packed { scheme: int4(asym), stored: &stored[..2] };
        assert!(err(&int4(false), 2, 64, 0..2, &[0.0; 64], fp8, None).contains("not int4:g64"));
        // Stored bytes that do not fit [n, k].
        assert!(err(&dense, 3, 4, 0..2, &x, bf16, None).contains("needs 24"));
        assert!(err(&int4(true), 2, 64, 0..2, &[0.0; 64], bf16, None).contains("2 stored tensors"));
        let q8 = vec![0u8; 34];
        let ggml = Weight::Ggml { ty: GgmlType::Q8_0, bytes: &q8 };
        assert!(err(&ggml, 1, 16, 0..1, &[0.0; 16], bf16, None).contains("whole number of Q8_0"));
        assert!(err(&ggml, 2, 32, 0..1, &[0.0; 32], bf16, None).contains("needs 68"));
        assert!(err(&ggml, 1, 32, 0..1, &[0.0; 32], fp8, None).contains("not GGUF Q8_0"));
        let iq = Weight::Ggml { ty: GgmlType::IQ2_XXS, bytes: &q8 };
        assert!(err(&iq, 1, 256, 0..1, &[0.0; 256], bf16, None).contains("cannot be decoded"));
    }

    #[test]
    fn compare_is_zero_for_the_reference_rounded_to_bf16() {
        let r = [1.0 + 2f32.powi(-10), -3.3, 0.1, 1e-3, 0.0];
        let gpu: Vec<f32> = r.iter().map(|v| bf16_to_fp32(fp32_to_bf16(*v))).collect();
        let e: Vec<f64> = r.iter().zip(&gpu).map(|(a, b)| f64::from(*b) - f64::from(*a)).collect();
        let norm = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let floor = e.iter().map(|e| e * e).sum::<f64>().sqrt() / norm;
        let max_abs = e.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        let c = compare(&gpu, &r).unwrap();
        assert_eq!(c, Comparison { rel: 0.0, max_abs, nonfinite: 0, rel_bf16_floor: floor });
        assert!(c.rel_bf16_floor > 0.0 && c.max_abs > 0.0);
    }

    #[test]
    fn compare_measures_the_gap() {
        // bf16(ref) = ref here: ‖(0, 0.5, −1)‖ / ‖(1, 2, 3)‖.
        let c = compare(&[1.0, 2.5, 2.0], &[1.0, 2.0, 3.0]).unwrap();
        let rel = (1.25f64 / 14.0).sqrt();
        assert_eq!(c, Comparison { rel, max_abs: 1.0, nonfinite: 0, rel_bf16_floor: 0.0 });
    }

    #[test]
    fn compare_fails_on_nonfinite_values() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let c = compare(&[1.0, bad, 3.0], &[1.0, 2.0, 3.0]).unwrap();
            assert_eq!((c.rel, c.max_abs, c.nonfinite), (f64::INFINITY, f64::INFINITY, 1), "{bad}");
        }
        let c = compare(&[1.0, 2.0], &[1.0, f32::NAN]).unwrap();
        assert_eq!((c.rel, c.nonfinite), (f64::INFINITY, 0));
    }

    #[test]
    fn compare_with_a_zero_reference_and_mismatched_lengths() {
        assert_eq!(compare(&[0.0, -0.0], &[0.0, 0.0]).unwrap().rel, 0.0);
        let c = compare(&[0.0, 1e-30], &[0.0, 0.0]).unwrap();
        assert_eq!((c.rel, c.rel_bf16_floor), (f64::INFINITY, 0.0));
        let e = compare(&[0.0], &[0.0, 0.0]).unwrap_err();
        assert!(e.to_string().contains("1 GPU values for 2 reference values"), "{e}");
    }
}
