//! bitsandbytes NF4 (`formats/nf4.md`), as `quantize_4bit(quant_type="nf4", blocksize=64)` and
//! `QuantState.as_dict(packed=True)` store it.

use crate::error::{check_request, mul};
use crate::{Error, NF4_BLOCK, NF4_NESTED_BLOCK, check_len};
use lowbit_dtype::Dtype;
use std::fmt::Write as _;
use std::ops::Range;

/// The NF4 code table (`quant_map`), bitsandbytes' values.
#[expect(clippy::excessive_precision, reason = "bitsandbytes' decimal values, as it writes them")]
pub const CODE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// `steps` values from `start` to `end` in F32, as torch's `linspace` computes them on the CPU:
/// an F32 step, then `start + step·i` for the first half and `end − step·(steps−1−i)` for the
/// second, each rounded once (a fused multiply-add; here exact in F64, then rounded).
fn linspace(start: f32, end: f32, steps: usize, out: &mut [f32]) {
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let step = f64::from((end - start) / (steps - 1) as f32);
    let half = steps / 2;
    for (i, o) in out.iter_mut().enumerate().take(steps) {
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let v = if i < half {
            f64::from(start) + step * i as f64
        } else {
            f64::from(end) - step * (steps - i - 1) as f64
        };
        #[expect(clippy::cast_possible_truncation, reason = "rounded to F32 once, as torch does")]
        let v = v as f32;
        *o = v;
    }
}

/// bitsandbytes' signed 8-bit dynamic map (`nested_quant_map`, `create_dynamic_map(signed=True)`):
/// for exponents `i` in 0..7, the midpoints of `2^i + 1` points evenly spaced over [0.1, 1],
/// times `10^(i-6)` (the product in F32), with both signs; plus 0 and 1, sorted. The smallest
/// entry is −0.99297, so values in [−1, −0.99297) take code 0.
#[must_use]
pub fn nested_code() -> [f32; 256] {
    let mut data = [0.0f32; 256];
    let mut len = 0;
    let mut points = [0.0f32; 65];
    for i in 0..7i32 {
        let items = (1usize << i) + 1;
        linspace(0.1, 1.0, items, &mut points);
        #[expect(clippy::cast_possible_truncation, reason = "torch casts the scalar to F32")]
        let scale = 10f64.powi(i - 6) as f32;
        for w in points[..items].windows(2) {
            let v = scale * ((w[0] + w[1]) / 2.0);
            data[len] = v;
            data[len + 1] = -v;
            len += 2;
        }
    }
    data[len] = 0.0;
    data[len + 1] = 1.0;
    data.sort_by(f32::total_cmp);
    data
}

/// Python's `repr` of a float (shortest round-trip digits; exponent form below 1e-4 and from
/// 1e16 on), as `json.dumps` writes it.
fn python_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits: `-2.5997505e0`, `1e-5`.
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut s = String::from(sign);
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        if point <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            s.push_str(&digits);
        } else {
            let point = point.unsigned_abs() as usize;
            if digits.len() <= point {
                s.push_str(&digits);
                s.extend(std::iter::repeat_n('0', point - digits.len()));
                s.push_str(".0");
            } else {
                s.push_str(&digits[..point]);
                s.push('.');
                s.push_str(&digits[point..]);
            }
        }
    } else {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
    }
    s
}

/// torch's name of a dtype without `torch.` (`bfloat16`).
fn torch_dtype(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "float16",
        Dtype::F32 => "float32",
        _ => "bfloat16",
    }
}

/// The `quant_state.bitsandbytes__nf4` JSON, byte for byte as bitsandbytes writes it
/// (Python's `json.dumps` separators; the nested offset as Python's shortest `repr`).
#[must_use]
pub fn quant_state_json(shape: [u64; 2], dtype: Dtype, nested_offset: Option<f32>) -> String {
    let mut s = format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {NF4_BLOCK}, \"dtype\": \"{}\", \"shape\": [{}, {}]",
        torch_dtype(dtype),
        shape[0],
        shape[1]
    );
    if let Some(offset) = nested_offset {
        let _ = write!(
            s,
            ", \"nested_blocksize\": {NF4_NESTED_BLOCK}, \"nested_dtype\": \"float32\", \
             \"nested_offset\": {}",
            python_repr(f64::from(offset))
        );
    }
    s.push('}');
    s
}

/// A decoding error about `tensor`.
fn bad(tensor: &str, reason: String) -> Error {
    Error::Value { tensor: tensor.to_owned(), reason }
}

/// Little-endian F32 values.
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The quant-state JSON's nested offset (0 without double quantization), its description checked
/// against NF4, blocksize 64 and `[n, k]`: the GPU kernels take the offset as a scalar.
///
/// # Errors
/// JSON that does not describe this weight.
pub fn parse_state(json: &[u8], n: u64, k: u64, double_quant: bool) -> Result<f32, Error> {
    const T: &str = "weight.quant_state.bitsandbytes__nf4";
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(T, format!("not JSON: {e}")))?;
    let shape: Option<Vec<u64>> =
        v["shape"].as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect());
    if v["quant_type"] != "nf4" || v["blocksize"] != NF4_BLOCK || shape != Some(vec![n, k]) {
        return Err(bad(
            T,
            format!(
                "{} does not describe nf4, blocksize 64, shape [{n}, {k}]",
                String::from_utf8_lossy(json)
            ),
        ));
    }
    if !double_quant {
        return Ok(0.0);
    }
    if v["nested_blocksize"] != NF4_NESTED_BLOCK {
        return Err(bad(T, "nested_blocksize is not 256".to_owned()));
    }
    #[expect(clippy::cast_possible_truncation, reason = "bitsandbytes' offset is an F32")]
    v["nested_offset"]
        .as_f64()
        .map(|o| o as f32)
        .ok_or_else(|| bad(T, "nested_offset missing".to_owned()))
}

/// Decodes rows `rows` of an NF4 weight `[n, k]` from its stored tensors, in
/// [`crate::Scheme::stored`] order: `code[q] · absmax` in F32, where under double quantization
/// `absmax = nested_code[c] · nested_absmax + offset`, as bitsandbytes dequantizes.
///
/// # Errors
/// Stored tensors of the wrong length or quant-state JSON that disagrees with the shape.
pub fn decode(
    stored: &[&[u8]],
    double_quant: bool,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let want = if double_quant { 6 } else { 4 };
    let rows = check_request(stored, want, n, k, &rows, out)?;
    let numel = mul(n, k)?;
    let blocks = numel.div_ceil(NF4_BLOCK);
    check_len("weight", stored[0], numel.div_ceil(2))?;
    check_len("weight.quant_map", stored[2], 64)?;
    let json = stored[want - 1];
    let offset = parse_state(json, n, k, double_quant)?;
    let mut code = [0.0f32; 16];
    for (c, v) in code.iter_mut().zip(f32s(stored[2])) {
        *c = v;
    }
    let absmax_of: Box<dyn Fn(usize) -> f32 + '_> = if double_quant {
        check_len("weight.absmax", stored[1], blocks)?;
        check_len("weight.nested_absmax", stored[3], blocks.div_ceil(NF4_NESTED_BLOCK) * 4)?;
        check_len("weight.nested_quant_map", stored[4], 256 * 4)?;
        let mut nested = [0.0f32; 256];
        for (c, v) in nested.iter_mut().zip(f32s(stored[4])) {
            *c = v;
        }
        let codes = stored[1];
        let scales = stored[3];
        Box::new(move |b| {
            let s = f32s(&scales[4 * (b / 256)..]).next().unwrap_or(0.0);
            nested[usize::from(codes[b])] * s + offset
        })
    } else {
        check_len("weight.absmax", stored[1], blocks * 4)?;
        let absmax = stored[1];
        Box::new(move |b| f32s(&absmax[4 * b..]).next().unwrap_or(0.0))
    };
    let packed = stored[0];
    let block = NF4_BLOCK as usize;
    let first = usize::try_from(k)
        .ok()
        .and_then(|k| rows.start.checked_mul(k))
        .ok_or_else(|| bad("weight", "too large".to_owned()))?;
    let mut e = first;
    let mut i = 0;
    // One block (or the part of it inside `rows`) at a time.
    while i < out.len() {
        let b = e / block;
        let end = ((b + 1) * block - e).min(out.len() - i);
        let scale = absmax_of(b);
        for (j, o) in out[i..i + end].iter_mut().enumerate() {
            let x = e + j;
            let byte = packed[x / 2];
            let q = if x % 2 == 0 { byte >> 4 } else { byte & 15 };
            *o = code[usize::from(q)] * scale;
        }
        i += end;
        e += end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{CODE, nested_code, python_repr, quant_state_json};
    use lowbit_dtype::Dtype;

    #[test]
    fn python_float_repr() {
        for (v, s) in [
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (2.599_750_518_798_828, "2.599750518798828"),
            (123.0, "123.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (-0.5, "-0.5"),
            (0.0, "0.0"),
            (1.25e-7, "1.25e-07"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(python_repr(v), s);
        }
    }

    #[test]
    fn json_and_tables() {
        assert_eq!(
            quant_state_json([256, 512], Dtype::BF16, None),
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [256, 512]}"#
        );
        assert_eq!(quant_state_json([256, 512], Dtype::BF16, Some(2.599_750_5)).len(), 168);
        assert!(CODE.windows(2).all(|w| w[0] < w[1]));
        let nested = nested_code();
        assert_eq!((nested[0], nested[127], nested[255]), (-0.992_968_75, 0.0, 1.0));
        assert!(nested.windows(2).all(|w| w[0] < w[1]));
    }
}
