//! Running a plan into a safetensors file: the packed layouts of `lowbit-layout` and dense
//! tensors at source precision.
//!
//! Every stored tensor's offset is known before any data is read (`lowbit_safetensors::Layout`),
//! so chunks are placed with positioned writes: a weight's rows stream in order, while its
//! scales land wherever their layout puts them (int4's `[K/g, N]` scales are written as one
//! short run per group; ComfyUI NVFP4's swizzled block scales as whole 128-row tiles, so its
//! chunks are cut at multiples of 128 rows). Schemes with a per-tensor statistic (a per-tensor
//! ternary or BitNet γ, ComfyUI FP8's and both NVFP4s' amax, NF4's double-quantization offset)
//! read their weights once more, first, in `stats.rs`. Chunks are cut at the same rows
//! whatever the thread count, and every quantizer is a pure function of its rows and the
//! statistics, so the bytes never depend on threads or chunk sizes.

use crate::Error;
use crate::atomic::AtomicFile;
use crate::plan::{Plan, PlannedTensor, dense_dtype};
use crate::recipe::{Recipe, Target};
use crate::stats::{Stat, stats};
use crate::write::{Options, Written, gather, gather_raw16, pipeline, preallocate};
use lowbit_checkpoint::Checkpoint;
use lowbit_dtype::Dtype;
use lowbit_dtype::f16::{fp32_to_bf16, fp32_to_fp16};
use lowbit_layout::{NF4_BLOCK, NF4_NESTED_BLOCK, Scheme, nvfp4};
use lowbit_quant::packed;
use lowbit_safetensors::Layout;
use rayon::prelude::*;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

/// Target f32 elements per parallel task.
const TASK_ELEMS: u64 = 1 << 16;

/// One stored tensor.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<u64>,
}

/// The module path of a weight (`…img_mlp.0` for `…img_mlp.0.weight`).
fn module(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

/// The stored tensors of each planned tensor, in file order.
pub(crate) fn entries(plan: &Plan, stats: &[Stat]) -> Vec<Vec<Entry>> {
    plan.tensors
        .iter()
        .enumerate()
        .map(|(i, t)| match t.scheme {
            Some(s) => {
                let offset = stats.get(i).map(|s| s.nf4_offset);
                s.stored(t.shape[0], t.shape[1], dense_dtype(t.ty), offset)
                    .into_iter()
                    .map(|st| Entry {
                        name: format!("{}.{}", module(&t.name), st.suffix),
                        dtype: st.dtype,
                        shape: st.shape,
                    })
                    .collect()
            }
            None => {
                vec![Entry {
                    name: t.name.clone(),
                    dtype: dense_dtype(t.ty),
                    shape: t.shape.clone(),
                }]
            }
        })
        .collect()
}

/// The safetensors `__metadata__` lowbit writes.
#[must_use]
pub fn packed_metadata(
    plan: &Plan,
    recipe: &Recipe,
    source_name: &str,
    svdq: Option<&crate::SvdqOptions>,
) -> Vec<(String, String)> {
    let schemes: serde_json::Map<String, serde_json::Value> = plan
        .tensors
        .iter()
        .filter_map(|t| {
            t.scheme.map(|s| (t.name.clone(), serde_json::Value::String(s.to_string())))
        })
        .collect();
    let naming = match plan.naming {
        crate::OutputNaming::Bfl => "bfl",
        crate::OutputNaming::Diffusers => "diffusers",
    };
    let mut m = vec![
        ("format".to_owned(), "pt".to_owned()),
        ("lowbit.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("lowbit.source".to_owned(), source_name.to_owned()),
        ("lowbit.recipe".to_owned(), recipe.to_toml()),
        ("lowbit.naming".to_owned(), naming.to_owned()),
        ("lowbit.schemes".to_owned(), serde_json::Value::Object(schemes).to_string()),
    ];
    if let Some(v) = crate::svdq::metadata(plan, svdq) {
        m.push(("lowbit.svdq".to_owned(), v));
    }
    if recipe.target == Target::Packed(Scheme::Bitnet) {
        m.push(("quantization_config".to_owned(), lowbit_layout::bitnet::quantization_config()));
    }
    if let Target::Packed(Scheme::Sdnq { rank }) = recipe.target {
        let config = crate::sdnq::quantization_config(plan, rank).to_string();
        m.push(("quantization_config".to_owned(), config));
    }
    m
}

/// The planned file.
///
/// # Errors
/// Duplicate output names or sizes past what safetensors describes.
pub(crate) fn layout(
    plan: &Plan,
    meta: &[(String, String)],
    stats: &[Stat],
) -> Result<(Layout, Vec<Vec<Entry>>), Error> {
    let entries = entries(plan, stats);
    let flat = entries.iter().flatten().map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice()));
    let layout = Layout::new(meta, flat).map_err(|e| {
        let tensor = match &e {
            lowbit_safetensors::LayoutError::Duplicate(n)
            | lowbit_safetensors::LayoutError::TooLarge(n) => n.clone(),
            lowbit_safetensors::LayoutError::HeaderTooLarge(_) => String::new(),
        };
        Error::Layout { tensor, reason: e.to_string() }
    })?;
    Ok((layout, entries))
}

/// The size of the file a plan writes (NF4 double quantization's JSON may differ by a few
/// bytes once its offset is known).
///
/// # Errors
/// As the layout's.
pub fn packed_file_bytes(
    plan: &Plan,
    recipe: &Recipe,
    source_name: &str,
    svdq: Option<&crate::SvdqOptions>,
) -> Result<u64, Error> {
    let (l, _) = layout(plan, &packed_metadata(plan, recipe, source_name, svdq), &[])?;
    Ok(l.header.len() as u64 + l.data_len)
}

/// Rows (of the unit the scheme streams in) a chunk or task boundary must be a multiple of.
fn granule(scheme: Option<Scheme>, k: u64) -> u64 {
    let align = match scheme {
        Some(Scheme::Nf4 { double_quant: false }) => 2 * NF4_BLOCK,
        Some(Scheme::Nf4 { double_quant: true }) => NF4_BLOCK * NF4_NESTED_BLOCK,
        // Whole tiles of swizzled block scales.
        Some(Scheme::ComfyNvfp4) => return nvfp4::TILE_ROWS,
        // Codes run on across rows: an odd row length needs pairs of rows.
        Some(Scheme::Sdnq { .. }) => return if k % 2 == 1 { 2 } else { 1 },
        _ => return 1,
    };
    align / gcd(align, k.max(1))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Units a tensor streams in: rows, or packed rows for BitNet.
fn units(t: &PlannedTensor) -> u64 {
    match t.scheme {
        Some(Scheme::Bitnet) => t.shape[0] / 4,
        _ => t.n_rows(),
    }
}

/// Where stored tensor `j` of a scheme goes for a run starting at unit `u0`: `Some(byte offset
/// within the tensor)` for tensors stored in unit order, `None` for the others (transposed
/// scales and per-tensor values).
fn unit_offset(scheme: Scheme, j: usize, k: u64, u0: u64) -> Option<u64> {
    Some(match (scheme, j) {
        (_, 0) => match scheme {
            Scheme::Ternary { .. } => u0 * k / 4,
            Scheme::Int4 { .. } | Scheme::Nf4 { .. } | Scheme::Sdnq { .. } => u0 * k / 2,
            Scheme::BflNvfp4 | Scheme::ComfyNvfp4 => u0 * k / 2,
            _ => u0 * k,
        },
        (Scheme::BflNvfp4, 1) => u0 * k / nvfp4::BLOCK,
        (Scheme::Sdnq { rank: 0 }, 1 | 2) => u0 * lowbit_layout::sdnq::groups(k, 64).1 * 4,
        // `u0` is a multiple of 128: the tiles before it, each 128 rows of the padded width.
        (Scheme::ComfyNvfp4, 1) => u0 * nvfp4::swizzled_shape(0, k)[1],
        (Scheme::Ternary { scale: lowbit_layout::ScaleGranularity::Channel }, 1) => u0 * 2,
        (Scheme::BflFp8, 1) => u0 * 4,
        (Scheme::Nf4 { double_quant: false }, 1) => u0 * k / NF4_BLOCK * 4,
        (Scheme::Nf4 { double_quant: true }, 1) => u0 * k / NF4_BLOCK,
        (Scheme::Nf4 { double_quant: true }, 3) => u0 * k / (NF4_BLOCK * NF4_NESTED_BLOCK) * 4,
        _ => return None,
    })
}

/// Per-tensor stored values (scales from statistics, constant tables, markers).
fn whole(scheme: Scheme, j: usize, stat: &Stat, shape: [u64; 2], source: Dtype) -> Vec<u8> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    match (scheme, j) {
        (Scheme::Ternary { .. }, 1) => fp32_to_bf16(stat.gamma).to_le_bytes().to_vec(),
        (Scheme::Bitnet, 1) => {
            lowbit_layout::bitnet::stored_scale(stat.gamma).to_le_bytes().to_vec()
        }
        (Scheme::ComfyFp8 { format }, 1) => {
            packed::fp8::comfy_scale(stat.amax, format).to_le_bytes().to_vec()
        }
        (Scheme::ComfyFp8 { format }, 2) => lowbit_layout::fp8::comfy_marker(format).into_bytes(),
        (Scheme::BflNvfp4, 2) => packed::nvfp4::bfl_global(stat.amax).to_le_bytes().to_vec(),
        (Scheme::BflNvfp4, 3) => nvfp4::INPUT_SCALE.to_le_bytes().to_vec(),
        (Scheme::ComfyNvfp4, 2) => packed::nvfp4::comfy_global(stat.amax).to_le_bytes().to_vec(),
        (Scheme::ComfyNvfp4, 3) => nvfp4::comfy_marker().as_bytes().to_vec(),
        (Scheme::Nf4 { .. }, 2) => f32s(&lowbit_layout::nf4::CODE),
        (Scheme::Nf4 { double_quant: true }, 4) => f32s(&lowbit_layout::nf4::nested_code()),
        (Scheme::Nf4 { double_quant }, _) => lowbit_layout::nf4::quant_state_json(
            shape,
            source,
            double_quant.then_some(stat.nf4_offset),
        )
        .into_bytes(),
        _ => Vec::new(),
    }
}

/// Encodes a run of units (`x`: the input elements they need) into one buffer per stored
/// tensor (empty for tensors written whole); int4 scales come row-major `[rows, K/g]`.
fn encode(t: &PlannedTensor, x: &[f32], stat: &Stat, out: &mut Vec<Vec<u8>>) {
    let k = t.row_len() as usize;
    let Some(scheme) = t.scheme else {
        let dtype = dense_dtype(t.ty);
        let mut bytes = vec![0u8; x.len() * dtype.size()];
        match dtype {
            Dtype::BF16 => {
                for (b, v) in bytes.chunks_exact_mut(2).zip(x) {
                    b.copy_from_slice(&fp32_to_bf16(*v).to_le_bytes());
                }
            }
            Dtype::F16 => {
                for (b, v) in bytes.chunks_exact_mut(2).zip(x) {
                    b.copy_from_slice(&fp32_to_fp16(*v).to_le_bytes());
                }
            }
            _ => {
                for (b, v) in bytes.chunks_exact_mut(4).zip(x) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.push(bytes);
        return;
    };
    let rows = x.len() / k.max(1);
    match scheme {
        Scheme::Ternary { scale } => {
            let mut codes = vec![0u8; x.len()];
            let mut scales = Vec::new();
            let mut gammas = vec![stat.gamma; rows];
            if scale == lowbit_layout::ScaleGranularity::Channel {
                packed::ternary::row_gammas(x, k, &mut gammas);
                scales = gammas.iter().flat_map(|g| fp32_to_bf16(*g).to_le_bytes()).collect();
            }
            for ((row, c), &g) in x.chunks(k).zip(codes.chunks_mut(k)).zip(&gammas) {
                packed::ternary::codes(row, g, c);
            }
            let mut w = vec![0u8; x.len() / 4];
            lowbit_layout::ternary::pack(&codes, &mut w);
            out.push(w);
            out.push(scales);
        }
        Scheme::Bitnet => {
            // `x` holds the four quarters one after the other.
            let mut codes = vec![0u8; x.len()];
            packed::ternary::codes(x, stat.gamma, &mut codes);
            let q = x.len() / 4;
            let mut w = vec![0u8; q];
            lowbit_layout::bitnet::pack(
                [&codes[..q], &codes[q..2 * q], &codes[2 * q..3 * q], &codes[3 * q..]],
                &mut w,
            );
            out.push(w);
            out.push(Vec::new());
        }
        Scheme::Int4 { group, asym } => {
            let g = k / group as usize;
            let mut w = vec![0u8; x.len() / 2];
            let mut scales = vec![0u16; rows * g];
            let mut zeros = vec![0u16; if asym { rows * g } else { 0 }];
            packed::int4::quantize_rows(
                x,
                k,
                group as usize,
                asym,
                &mut w,
                &mut scales,
                &mut zeros,
            );
            out.push(w);
            out.push(scales.iter().flat_map(|v| v.to_le_bytes()).collect());
            if asym {
                out.push(zeros.iter().flat_map(|v| v.to_le_bytes()).collect());
            }
        }
        Scheme::Nf4 { double_quant } => {
            let blocks = x.len().div_ceil(NF4_BLOCK as usize);
            let mut w = vec![0u8; x.len().div_ceil(2)];
            let mut absmax = vec![0f32; blocks];
            packed::nf4::quantize(x, &mut w, &mut absmax);
            out.push(w);
            if double_quant {
                let mut codes = vec![0u8; blocks];
                let mut nested = vec![0f32; blocks.div_ceil(NF4_NESTED_BLOCK as usize)];
                packed::nf4::double_quant(&absmax, stat.nf4_offset, &mut codes, &mut nested);
                out.push(codes);
                out.push(Vec::new());
                out.push(nested.iter().flat_map(|v| v.to_le_bytes()).collect());
                out.push(Vec::new());
            } else {
                out.push(absmax.iter().flat_map(|v| v.to_le_bytes()).collect());
                out.push(Vec::new());
            }
            out.push(Vec::new());
        }
        Scheme::Fp8 { format } => {
            let mut w = vec![0u8; x.len()];
            packed::fp8::plain(x, format, &mut w);
            out.push(w);
        }
        Scheme::ComfyFp8 { format } => {
            let scale = packed::fp8::comfy_scale(stat.amax, format);
            let mut w = vec![0u8; x.len()];
            packed::fp8::comfy(x, scale, format, &mut w);
            out.extend([w, Vec::new(), Vec::new()]);
        }
        Scheme::Svdq { .. } => unreachable!("SVDQuant layers are quantized whole (svdq.rs)"),
        Scheme::Sdnq { rank } => out.extend(crate::sdnq::encode_rows(x, k, rank)),
        Scheme::BflFp8 => {
            let mut w = vec![0u8; x.len()];
            let mut scales = vec![0f32; rows];
            packed::fp8::bfl_rows(x, k, &mut w, &mut scales);
            out.push(w);
            out.push(scales.iter().flat_map(|v| v.to_le_bytes()).collect());
        }
        Scheme::BflNvfp4 => {
            let mut w = vec![0u8; x.len() / 2];
            let mut scales = vec![0u8; x.len() / nvfp4::BLOCK as usize];
            let global = packed::nvfp4::bfl_global(stat.amax);
            packed::nvfp4::bfl_rows(x, k, global, &mut w, &mut scales);
            out.extend([w, scales, Vec::new(), Vec::new()]);
        }
        Scheme::ComfyNvfp4 => {
            let mut w = vec![0u8; x.len() / 2];
            let mut scales = vec![0u8; x.len() / nvfp4::BLOCK as usize];
            let global = packed::nvfp4::comfy_global(stat.amax);
            packed::nvfp4::comfy_rows(x, k, global, &mut w, &mut scales);
            // The run starts at a multiple of 128 rows (`granule`): whole tiles, padding zero.
            let tile = (nvfp4::TILE_ROWS * nvfp4::swizzled_shape(0, k as u64)[1]) as usize;
            let mut swizzled = vec![0u8; rows.div_ceil(nvfp4::TILE_ROWS as usize) * tile];
            nvfp4::swizzle(&scales, k as u64, &mut swizzled);
            out.extend([w, swizzled, Vec::new(), Vec::new()]);
        }
    }
}

/// The input elements a run of units needs, in the order [`encode`] expects.
fn input_ranges(t: &PlannedTensor, u: Range<u64>) -> Vec<Range<u64>> {
    let k = t.row_len();
    match t.scheme {
        Some(Scheme::Bitnet) => {
            let q = t.shape[0] / 4;
            (0..4).map(|i| (i * q + u.start) * k..(i * q + u.end) * k).collect()
        }
        _ => std::iter::once(u.start * k..u.end * k).collect(),
    }
}

/// A positioned write: absolute file offset and bytes.
type Piece = (u64, Vec<u8>);

/// Encodes units `u` of tensor `i` in parallel tasks and returns where each byte goes.
#[expect(clippy::too_many_arguments, reason = "one call site; the pieces of a chunk")]
fn chunk_pieces(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    entries: &[Entry],
    offsets: &[(u64, u64)],
    data_start: u64,
    stat: &Stat,
    u: Range<u64>,
    allow_non_finite: bool,
) -> Result<Vec<Piece>, Error> {
    let k = t.row_len();
    let per_unit = if t.scheme == Some(Scheme::Bitnet) { 4 * k } else { k };
    let gran = granule(t.scheme, k);
    let per_task = ((TASK_ELEMS / per_unit.max(1)).max(1) / gran).max(1) * gran;
    let starts: Vec<u64> = (u.start..u.end).step_by(per_task as usize).collect();
    let results: Vec<Result<Vec<Vec<u8>>, Error>> = starts
        .par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf, scratch): &mut (Vec<f32>, Vec<u8>), &s| {
                let run = s..(s + per_task).min(u.end);
                if t.scheme.is_none() {
                    // A BF16 or F16 tensor kept as it is stored: copy its bytes.
                    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                    let mut bytes = vec![0u8; ((run.end - run.start) * per_unit * 2) as usize];
                    let elems = run.start * per_unit..run.end * per_unit;
                    if gather_raw16(ckpt, t, elems, &mut bytes, allow_non_finite)? {
                        return Ok(vec![bytes]);
                    }
                }
                let ranges = input_ranges(t, run);
                let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                buf.resize(n as usize, 0.0);
                let mut at = 0usize;
                for r in ranges {
                    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                    let len = (r.end - r.start) as usize;
                    gather(ckpt, t, r, &mut buf[at..at + len], scratch, allow_non_finite)?;
                    at += len;
                }
                let mut out = Vec::new();
                encode(t, buf, stat, &mut out);
                Ok(out)
            },
        )
        .collect();
    // The first failing task in file order decides the error, whatever the thread count.
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); entries.len()];
    for r in results {
        for (j, bytes) in r?.into_iter().enumerate() {
            if let Some(p) = parts.get_mut(j) {
                p.extend_from_slice(&bytes);
            }
        }
    }
    let mut pieces = Vec::new();
    for (j, bytes) in parts.into_iter().enumerate() {
        let base = data_start + offsets[j].0;
        match t.scheme {
            None => pieces.push((base + u.start * k * entries[j].dtype.size() as u64, bytes)),
            Some(scheme) => {
                if let Some(off) = unit_offset(scheme, j, k, u.start) {
                    pieces.push((base + off, bytes));
                } else if let Scheme::Int4 { group, .. } = scheme
                    && j >= 1
                {
                    // Row-major [rows, G] → stored [G, N]: one run of rows per group.
                    let g = (k / u64::from(group)) as usize;
                    let n = t.shape[0];
                    let rows = bytes.len() / 2 / g.max(1);
                    for gi in 0..g {
                        let run: Vec<u8> = (0..rows)
                            .flat_map(|r| [bytes[(r * g + gi) * 2], bytes[(r * g + gi) * 2 + 1]])
                            .collect();
                        pieces.push((base + (gi as u64 * n + u.start) * 2, run));
                    }
                }
            }
        }
    }
    Ok(pieces)
}

/// Writes `plan` from `ckpt` as a safetensors file at `out`.
///
/// # Errors
/// Non-finite weights (unless allowed), read or write failures, cancellation. On any error no
/// file exists at `out`.
pub fn write_packed(
    ckpt: &Checkpoint,
    plan: &Plan,
    recipe: &Recipe,
    out: &Path,
    opts: &Options<'_>,
) -> Result<Written, Error> {
    crate::output::check_output(ckpt, out, &recipe.target, opts.force_extension)?;
    if opts.threads > crate::MAX_THREADS {
        return Err(Error::TooManyThreads { threads: opts.threads, max: crate::MAX_THREADS });
    }
    let pool = crate::write::pool(opts.threads)?;
    let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let stats = pool.install(|| stats(ckpt, plan, opts.allow_non_finite, &cancelled))?;
    let default_svdq = crate::SvdqOptions::default();
    let svdq = opts.svdq.unwrap_or(&default_svdq);
    crate::check_svdq(plan, svdq)?;
    let meta = packed_metadata(plan, recipe, &opts.source_name, opts.svdq);
    let (layout, entries) = layout(plan, &meta, &stats)?;
    let io = |e: std::io::Error| Error::Io { path: out.to_owned(), source: e };
    let tmp = AtomicFile::create(out).map_err(io)?;
    let data_start = layout.header.len() as u64;
    preallocate(tmp.file(), data_start + layout.data_len).map_err(io)?;
    let total: u64 = plan.tensors.iter().map(PlannedTensor::numel).sum();
    let done = AtomicU64::new(0);
    let elems_per_chunk = (opts.chunk_bytes / 4).max(1);

    let file = tmp.file();
    let header = &layout.header;
    let write = move |rx: mpsc::Receiver<Vec<Piece>>| -> std::io::Result<()> {
        file.write_all_at(header, 0)?;
        for pieces in rx {
            for (at, bytes) in pieces {
                file.write_all_at(&bytes, at)?;
            }
        }
        Ok(())
    };
    let produce = |tx: &mpsc::SyncSender<Vec<Piece>>| -> Result<(), Error> {
        let mut first = 0usize; // index of the tensor's first entry
        for (i, t) in plan.tensors.iter().enumerate() {
            let ents = &entries[i];
            let offs = &layout.offsets[first..first + ents.len()];
            first += ents.len();
            let stat = stats[i];
            if let Some(Scheme::Svdq { .. } | Scheme::Sdnq { rank: 1.. }) = t.scheme {
                if cancelled() {
                    return Err(Error::Cancelled);
                }
                let stored = pool.install(|| match t.scheme {
                    Some(Scheme::Sdnq { .. }) => crate::sdnq::quantize_layer(ckpt, t, svdq.seed),
                    _ => crate::svdq::quantize_layer(ckpt, t, svdq),
                })?;
                let pieces = stored
                    .into_iter()
                    .zip(offs)
                    .map(|(bytes, off)| (data_start + off.0, bytes))
                    .collect();
                if tx.send(pieces).is_err() {
                    return Ok(());
                }
                let d = done.fetch_add(t.numel(), Ordering::Relaxed) + t.numel();
                if let Some(p) = opts.progress {
                    p(d, total);
                }
                continue;
            }
            if let Some(scheme) = t.scheme {
                let src = dense_dtype(t.ty);
                let shape = [t.shape[0], t.shape[1]];
                let wholes: Vec<Piece> = (0..ents.len())
                    .filter(|&j| {
                        unit_offset(scheme, j, t.row_len(), 0).is_none()
                            && !matches!(scheme, Scheme::Int4 { .. })
                    })
                    .map(|j| (data_start + offs[j].0, whole(scheme, j, &stat, shape, src)))
                    .collect();
                if tx.send(wholes).is_err() {
                    return Ok(());
                }
            }
            let per_unit = t.row_len() * if t.scheme == Some(Scheme::Bitnet) { 4 } else { 1 };
            let gran = granule(t.scheme, t.row_len());
            let per_chunk = ((elems_per_chunk / per_unit.max(1)).max(1) / gran).max(1) * gran;
            let n = units(t);
            let mut u = 0;
            while u < n {
                if cancelled() {
                    return Err(Error::Cancelled);
                }
                let end = (u + per_chunk).min(n);
                let pieces = pool.install(|| {
                    chunk_pieces(
                        ckpt,
                        t,
                        ents,
                        offs,
                        data_start,
                        &stat,
                        u..end,
                        opts.allow_non_finite,
                    )
                })?;
                if tx.send(pieces).is_err() {
                    return Ok(());
                }
                let elems = (end - u) * per_unit;
                let d = done.fetch_add(elems, Ordering::Relaxed) + elems;
                if let Some(p) = opts.progress {
                    p(d, total);
                }
                u = end;
            }
        }
        Ok(())
    };
    pipeline(write, produce, io)?;
    let bytes = tmp.file().metadata().map_err(io)?.len();
    tmp.commit().map_err(io)?;
    Ok(Written { tensors: entries.iter().map(Vec::len).sum(), bytes })
}
