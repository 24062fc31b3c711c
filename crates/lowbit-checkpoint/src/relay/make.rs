//! The natural file of a Nunchaku file: its layout (planned from the header, plus the small
//! tensors that decide whether a single block's two parts share a factor) and each layer's
//! bytes, made by the inverse permutations of `lowbit_layout::nunchaku`.

use super::{Flavor, Group, Job, Relaid, Src, W4a4Src};
use crate::Error;
use crate::source::Source;
use lowbit_dtype::Dtype;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_layout::{Scheme, nunchaku as nk};
use lowbit_safetensors::Header;
use std::collections::BTreeMap;

/// Nunchaku's INT4 fc2 activation shift.
const FC2_SHIFT: f64 = 0.171_875;
/// TinyChat's zero point for symmetric codes.
const AWQ_ZERO: i8 = 7;

fn read(src: &Source, s: &Src) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; usize::try_from(s.len).map_err(|e| e.to_string())?];
    src.read_stored_at(s.at, &mut b).map_err(|e| format!("cannot read: {e}"))?;
    Ok(b)
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

fn le16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64s(v: &[u16]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(bf16_to_fp32(x))).collect()
}

#[expect(clippy::cast_possible_truncation, reason = "rounded to the stored BF16")]
fn to_bf16(x: f64) -> u16 {
    fp32_to_bf16(x as f32)
}

/// Whether the parts of an SVDQuant layer share the factor their join keeps (`proj_down` along
/// N, `proj_up` along K): then the layer keeps their rank, else it has the sum. Parts stacked
/// along N must share their smoothing. Decided once, when the file is opened.
///
/// # Errors
/// Read failures; parts along N with different smoothing.
pub(super) fn shared(src: &Source, parts: &[W4a4Src], rows: bool) -> Result<bool, String> {
    if parts.len() < 2 {
        return Ok(true);
    }
    if rows && read(src, &parts[0].smooth)? != read(src, &parts[1].smooth)? {
        return Err("its two Nunchaku parts smooth their shared input differently; one lowbit layer cannot hold them".into());
    }
    let pick = |p: &W4a4Src| if rows { p.down.clone() } else { p.up.clone() };
    Ok(read(src, &pick(&parts[0]))? == read(src, &pick(&parts[1]))?)
}

/// Plans the natural file; `dense` carries its natural names.
pub(super) fn layout(
    src: &Source,
    flavor: Flavor,
    jobs: Vec<(String, Job)>,
    dense: Vec<(String, Dtype, Job)>,
    meta: &BTreeMap<String, String>,
) -> Result<(Relaid, Header), Error> {
    let bad = |tensor: &str, reason: String| Error::Layout {
        path: src.path.clone(),
        tensor: tensor.to_owned(),
        reason,
    };
    let mut entries: Vec<(String, Dtype, Vec<u64>)> = Vec::new();
    let mut counts: Vec<(Job, String, usize)> = Vec::new();
    let mut schemes = serde_json::Map::new();
    for (m, job) in jobs {
        let before = entries.len();
        let mut push = |s: &str, d: Dtype, shape: Vec<usize>| {
            entries.push((format!("{m}.{s}"), d, shape.into_iter().map(|v| v as u64).collect()));
        };
        match &job {
            Job::W4a4 { parts, rows, shared: one } => {
                let rank = if *one { parts[0].rank } else { parts.iter().map(|p| p.rank).sum() };
                let n = if *rows { parts.iter().map(|p| p.n).sum() } else { parts[0].n };
                let k = if *rows { parts[0].k } else { parts.iter().map(|p| p.k).sum() };
                let rank16 = u16::try_from(rank).map_err(|_| bad(&m, format!("rank {rank}")))?;
                let scheme = Scheme::Svdq { act4: true, rank: rank16, groups: 1 };
                schemes.insert(format!("{m}.weight"), scheme.to_string().into());
                push("qweight", Dtype::I8, vec![n, k / 2]);
                push("wscales", Dtype::BF16, vec![k / 64, n]);
                push("smooth_factor", Dtype::BF16, vec![k]);
                push("proj_down", Dtype::BF16, vec![k, rank]);
                push("proj_up", Dtype::BF16, vec![n, rank]);
                push("bias", Dtype::BF16, vec![n]);
            }
            Job::Awq { n, k, bias, .. } => {
                schemes.insert(format!("{m}.weight"), "int4:g64".into());
                push("weight", Dtype::I8, vec![*n, k / 2]);
                push("weight_scale", Dtype::BF16, vec![k / 64, *n]);
                if bias.is_some() {
                    push("bias", Dtype::BF16, vec![*n]);
                }
            }
            Job::Dense { .. } => {}
        }
        let made = entries.len() - before;
        counts.push((job, m, made));
    }
    for (name, dtype, job) in dense {
        let Job::Dense { src: s, .. } = &job else { continue };
        entries.push((name.clone(), dtype, s.shape.clone()));
        counts.push((job, name, 1));
    }
    let mut m: Vec<(String, String)> = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    m.push((crate::layers::SCHEMES_KEY.into(), serde_json::Value::Object(schemes).to_string()));
    let (naming, relaid) = match flavor {
        Flavor::Nunchaku => ("bfl", "nunchaku"),
        Flavor::Lite => ("diffusers", "nunchaku-lite"),
    };
    m.push(("lowbit.naming".into(), naming.into()));
    m.push(("lowbit.relaid".into(), relaid.into()));
    let layout = super::natural_layout(&m, &entries).map_err(|e| bad("", e))?;
    let len = layout.header.len() as u64 + layout.data_len;
    let header = Header::parse(&layout.header, len)
        .map_err(|e| bad("", format!("the re-laid header: {e}")))?;
    let data = layout.header.len() as u64;
    let mut groups = Vec::with_capacity(counts.len());
    let mut i = 0;
    for (job, what, made) in counts {
        let Some(range) =
            layout.offsets.get(i..i + made).and_then(|o| Some(o.first()?.0..o.last()?.1))
        else {
            continue;
        };
        i += made;
        groups.push(Group {
            job,
            what: format!("`{what}`"),
            range: data + range.start..data + range.end,
        });
    }
    groups.sort_by_key(|g| g.range.start);
    Ok((Relaid::new(layout.header, len, groups), header))
}

/// One SVDQuant part, unpacked: codes, scales `[K/64, N]`, smooth, down `[K, r]`, up `[N, r]`,
/// bias (with Nunchaku's fc2 shift undone).
struct Part {
    codes: Vec<u8>,
    scales: Vec<u16>,
    smooth: Vec<u16>,
    down: Vec<u16>,
    up: Vec<u16>,
    bias: Vec<f64>,
}

fn unpack(src: &Source, p: &W4a4Src) -> Result<Part, String> {
    let (n, k, r) = (p.n, p.k, p.rank);
    let codes = nk::unpack_qweight(&read(src, &p.qweight)?, n, k);
    let scales = nk::unpack_wscales(&u16s(&read(src, &p.wscales)?), k / 64, n);
    let smooth = nk::unpack_vector(&u16s(&read(src, &p.smooth)?));
    let down = nk::unpack_lowrank(&u16s(&read(src, &p.down)?), k, r, true);
    let up = nk::unpack_lowrank(&u16s(&read(src, &p.up)?), n, r, false);
    let mut bias = match &p.bias {
        Some(b) => f64s(&nk::unpack_vector(&u16s(&read(src, b)?))),
        None => vec![0.0; n],
    };
    if p.shifted {
        // Nunchaku computes R·(x + s)/λ + (x·down)·upᵀ + bias (the low-rank branch sees the
        // unshifted input): a signed layer computing the same needs bias + s·Σ_k R[n, k]/λ_k.
        let lam = f64s(&smooth);
        let sc = f64s(&scales);
        for (row, b) in bias.iter_mut().enumerate() {
            let mut rsum = 0.0;
            for kk in 0..k {
                let byte = codes[(row * k + kk) / 2];
                let nib = if kk % 2 == 0 { byte & 15 } else { byte >> 4 };
                rsum += f64::from(((nib << 4) as i8) >> 4) * sc[(kk / 64) * n + row] / lam[kk];
            }
            *b += FC2_SHIFT * rsum;
        }
    }
    Ok(Part { codes, scales, smooth, down, up, bias })
}

/// `[A, r]` factors side by side (`[A, r0 + r1]`, `a` rows each) or block-diagonal.
fn widen(parts: &[(&[u16], usize, usize)], diagonal: bool) -> Vec<u16> {
    let width: usize = parts.iter().map(|p| p.2).sum();
    let mut out = Vec::new();
    if diagonal {
        let mut col = 0;
        for (v, rows, r) in parts {
            for row in 0..*rows {
                let mut line = vec![0u16; width];
                line[col..col + r].copy_from_slice(&v[row * r..(row + 1) * r]);
                out.extend(line);
            }
            col += r;
        }
    } else {
        let rows = parts[0].1;
        for row in 0..rows {
            for (v, _, r) in parts {
                out.extend_from_slice(&v[row * r..(row + 1) * r]);
            }
        }
    }
    out
}

fn w4a4(src: &Source, parts: &[W4a4Src], rows: bool, one: bool) -> Result<Vec<u8>, String> {
    let ps: Vec<Part> = parts.iter().map(|p| unpack(src, p)).collect::<Result<_, _>>()?;
    let (mut codes, mut scales, mut smooth) = (Vec::new(), Vec::new(), Vec::new());
    let (down, up, bias): (Vec<u16>, Vec<u16>, Vec<f64>);
    if rows {
        let n: usize = parts.iter().map(|p| p.n).sum();
        let k = parts[0].k;
        for p in &ps {
            codes.extend_from_slice(&p.codes);
        }
        for g in 0..k / 64 {
            for (p, w) in ps.iter().zip(parts) {
                scales.extend_from_slice(&p.scales[g * w.n..(g + 1) * w.n]);
            }
        }
        smooth.extend_from_slice(&ps[0].smooth);
        let ups: Vec<(&[u16], usize, usize)> =
            ps.iter().zip(parts).map(|(p, w)| (&p.up[..], w.n, w.rank)).collect();
        if one {
            down = ps[0].down.clone();
            up = ups.iter().flat_map(|u| u.0.iter().copied()).collect();
        } else {
            let downs: Vec<(&[u16], usize, usize)> =
                ps.iter().zip(parts).map(|(p, w)| (&p.down[..], k, w.rank)).collect();
            down = widen(&downs, false);
            up = widen(&ups, true);
        }
        bias = ps.iter().flat_map(|p| p.bias.iter().copied()).collect();
        debug_assert_eq!(bias.len(), n);
    } else {
        let n = parts[0].n;
        for row in 0..n {
            for (p, w) in ps.iter().zip(parts) {
                codes.extend_from_slice(&p.codes[row * w.k / 2..(row + 1) * w.k / 2]);
            }
        }
        for p in &ps {
            scales.extend_from_slice(&p.scales);
            smooth.extend_from_slice(&p.smooth);
        }
        let downs: Vec<(&[u16], usize, usize)> =
            ps.iter().zip(parts).map(|(p, w)| (&p.down[..], w.k, w.rank)).collect();
        if one {
            up = ps[0].up.clone();
            down = downs.iter().flat_map(|d| d.0.iter().copied()).collect();
        } else {
            let ups: Vec<(&[u16], usize, usize)> =
                ps.iter().zip(parts).map(|(p, w)| (&p.up[..], n, w.rank)).collect();
            up = widen(&ups, false);
            down = widen(&downs, true);
        }
        // Both parts' outputs are summed: so are their biases.
        bias = (0..n).map(|i| ps.iter().map(|p| p.bias[i]).sum()).collect();
    }
    let bias: Vec<u16> = bias.into_iter().map(to_bf16).collect();
    Ok([codes, le16(&scales), le16(&smooth), le16(&down), le16(&up), le16(&bias)].concat())
}

#[expect(clippy::too_many_arguments, reason = "one TinyChat layer's tensors")]
fn awq(
    src: &Source,
    q: &Src,
    ws: &Src,
    wz: &Src,
    bias: Option<&Src>,
    n: usize,
    k: usize,
    splits: Option<usize>,
) -> Result<Vec<u8>, String> {
    let packed = read(src, q)?;
    if packed.iter().any(|b| b & 15 == 15 || b >> 4 == 15) {
        return Err("TinyChat code 15 (a symmetric code of 8) has no int4:g64 value".into());
    }
    let codes = nk::awq_unpack(&packed, n, k, AWQ_ZERO);
    let g = k / 64;
    let scales = u16s(&read(src, ws)?);
    let zeros = u16s(&read(src, wz)?);
    for (i, (&s, &z)) in scales[..g * n].iter().zip(&zeros[..g * n]).enumerate() {
        // lowbit's symmetric codes: the zero point is −bf16(7·s).
        if z != fp32_to_bf16(7.0 * bf16_to_fp32(s)) ^ 0x8000 {
            return Err(format!(
                "zero point {} of scale {} at [{}, {}] is not −7·scale: not a symmetric layout lowbit reads",
                bf16_to_fp32(z),
                bf16_to_fp32(s),
                i / n,
                i % n
            ));
        }
    }
    let s = splits.unwrap_or(1);
    // Natural row j·(N/S) + i is stored at row i·S + j.
    let file_row = |nat: usize| (nat % (n / s)) * s + nat / (n / s);
    let mut out = Vec::with_capacity(n * k / 2 + g * n * 2 + n * 2);
    for row in 0..n {
        out.extend_from_slice(&codes[file_row(row) * k / 2..][..k / 2]);
    }
    let mut sc = Vec::with_capacity(g * n);
    for gi in 0..g {
        sc.extend((0..n).map(|row| scales[gi * n + file_row(row)]));
    }
    out.extend(le16(&sc));
    if let Some(b) = bias {
        let b = u16s(&read(src, b)?);
        let nat: Vec<u16> = (0..n)
            .map(|row| {
                let (v, j) = (b[file_row(row)], row / (n / s));
                let minus = splits.is_some() && (j == 1 || j == s - 2);
                if minus { fp32_to_bf16(bf16_to_fp32(v) - 1.0) } else { v }
            })
            .collect();
        out.extend(le16(&nat));
    }
    Ok(out)
}

/// The bytes of one natural layer, its tensors one after the other.
pub(super) fn produce(job: &Job, src: &Source) -> Result<Vec<u8>, String> {
    match job {
        Job::W4a4 { parts, rows, shared } => w4a4(src, parts, *rows, *shared),
        Job::Awq { qweight, wscales, wzeros, bias, n, k, splits } => {
            awq(src, qweight, wscales, wzeros, bias.as_ref(), *n, *k, *splits)
        }
        Job::Dense { src: s, swap } => {
            let b = read(src, s)?;
            if !swap {
                return Ok(b);
            }
            let half = b.len() / 2;
            Ok([&b[half..], &b[..half]].concat())
        }
    }
}
