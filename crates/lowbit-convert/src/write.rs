//! Running a plan: read input rows, quantize in parallel, write a GGUF file in order.
//!
//! Offsets come from [`lowbit_gguf::Layout`] before any data is read, so the file is written once,
//! front to back, with no zero-fill pass. Work is cut into chunks of whole rows (at most
//! [`CHUNK_BYTES`] of output each); rayon quantizes a chunk's rows in parallel while a writer
//! thread writes the previous chunk, and a channel of depth one bounds memory to about three
//! chunks whatever the model size. The output goes through [`AtomicFile`]: a temporary file
//! beside the destination, renamed into place only when complete, so an error, a full disk,
//! Ctrl-C or `kill -9` never leaves a partial file at the output path.

use crate::Error;
use crate::atomic::AtomicFile;
use crate::output::check_output;
use crate::plan::{Plan, PlannedTensor};
use crate::recipe::Recipe;
use lowbit_arch::Architecture;
use lowbit_checkpoint::{Checkpoint, Tensor};
use lowbit_gguf::{Array, Layout, Value, type_id};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

/// Output bytes per chunk: large enough to keep writes efficient, small enough to bound memory.
pub const CHUNK_BYTES: u64 = 32 << 20;

/// Target f32 elements per parallel task.
const TASK_ELEMS: u64 = 1 << 16;

/// The most worker threads lowbit starts: far beyond any useful count (conversions are bound by
/// memory bandwidth long before), and low enough that a typo cannot exhaust the process table.
pub const MAX_THREADS: usize = 1024;

/// How to run.
pub struct Options<'a> {
    /// Worker threads (0: one per core; at most [`MAX_THREADS`]).
    pub threads: usize,
    /// Write NaN or infinite weights instead of refusing them.
    pub allow_non_finite: bool,
    /// Set to stop early (Ctrl-C); the output file is then not created.
    pub cancel: Option<&'a AtomicBool>,
    /// Called with (elements done, elements total) as chunks finish.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// Recorded in `lowbit.source`: the input's file name.
    pub source_name: String,
    /// Output bytes per chunk ([`CHUNK_BYTES`] by default; tests use small chunks so that small
    /// tensors span many of them). The bytes written do not depend on it.
    pub chunk_bytes: u64,
    /// Write even when the output's extension is not the target's.
    pub force_extension: bool,
    /// How SVDQuant layers are quantized (`None`: defaults, no statistics).
    pub svdq: Option<&'a crate::SvdqOptions>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Tensors written.
    pub tensors: usize,
    /// File size.
    pub bytes: u64,
}

/// The GGUF metadata lowbit writes.
#[must_use]
pub fn metadata(plan: &Plan, recipe: &Recipe, source_name: &str) -> Vec<(String, Value)> {
    let s = |v: &str| Value::String(v.to_owned());
    let mut kvs = Vec::new();
    if plan.detection.architecture == Architecture::Flux {
        kvs.push(("general.architecture".to_owned(), s("flux")));
    }
    kvs.push(("general.quantization_version".to_owned(), Value::U32(2)));
    kvs.push(("general.file_type".to_owned(), Value::U32(recipe.target.file_type())));
    kvs.push(("lowbit.version".to_owned(), s(env!("CARGO_PKG_VERSION"))));
    kvs.push(("lowbit.source".to_owned(), s(source_name)));
    kvs.push(("lowbit.recipe".to_owned(), s(&recipe.to_toml())));
    let naming = match plan.naming {
        crate::OutputNaming::Bfl => "bfl",
        crate::OutputNaming::Diffusers => "diffusers",
    };
    kvs.push(("lowbit.naming".to_owned(), s(naming)));
    kvs.push((
        "lowbit.tensor_types".to_owned(),
        Value::Array(Array::new(
            type_id::STRING,
            plan.tensors
                .iter()
                .map(|t| Value::String(format!("{}={} ({})", t.name, t.ty.name(), t.reason)))
                .collect(),
        )),
    ));
    kvs
}

/// The planned file layout.
///
/// # Errors
/// A tensor whose type does not fit its rows, or sizes past what GGUF describes
/// ([`Plan::new`] runs this check, so a valid plan always has a layout).
pub fn layout(plan: &Plan, kvs: &[(String, Value)]) -> Result<Layout, Error> {
    Layout::new(
        kvs,
        plan.tensors.iter().map(|t| (t.name.clone(), t.ggml_dims(), t.ty)),
        lowbit_gguf::DEFAULT_ALIGNMENT,
    )
    .map_err(|e| {
        let tensor = match &e {
            lowbit_gguf::LayoutError::NotBlockMultiple { name, .. }
            | lowbit_gguf::LayoutError::BadDims { name, .. }
            | lowbit_gguf::LayoutError::TooLarge { name } => name.clone(),
            lowbit_gguf::LayoutError::StoredArray { key } => key.clone(),
            lowbit_gguf::LayoutError::BadAlignment(_) => String::new(),
        };
        Error::Layout { tensor, reason: e.to_string() }
    })
}

/// A piece of one output tensor: rows `rows` of `plan.tensors[tensor]`.
struct Chunk {
    tensor: usize,
    rows: std::ops::Range<u64>,
}

fn chunks(plan: &Plan, chunk_bytes: u64) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (i, t) in plan.tensors.iter().enumerate() {
        let row_bytes = t.ty.row_bytes(t.row_len()).unwrap_or(1).max(1);
        let per_chunk = (chunk_bytes / row_bytes).max(1);
        let mut r = 0;
        loop {
            let end = (r + per_chunk).min(t.n_rows());
            out.push(Chunk { tensor: i, rows: r..end });
            r = end;
            if r >= t.n_rows() {
                break;
            }
        }
    }
    out
}

/// Calls `f(source tensor, its first element, count, elements before)` for each run of input
/// elements that logical elements `elems` of `t` (its parts concatenated) are made of, in order.
fn for_each_run(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    elems: std::ops::Range<u64>,
    mut f: impl FnMut(&Tensor, u64, usize, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut at = 0u64; // logical element where the current part starts
    let mut filled = 0usize;
    for p in &t.parts {
        let Some(src) = ckpt.tensor(&p.tensor) else {
            return Err(Error::PlanMismatch {
                file: ckpt.path().to_owned(),
                tensor: p.tensor.clone(),
            });
        };
        let inner = src.params / src.shape.first().copied().unwrap_or(1).max(1);
        let len = (p.dim0.end - p.dim0.start) * inner;
        let (a, b) = (elems.start.max(at), elems.end.min(at + len));
        if a < b {
            #[expect(clippy::cast_possible_truncation, reason = "bounded by the task size")]
            let n = (b - a) as usize;
            f(src, p.dim0.start * inner + (a - at), n, filled)?;
            filled += n;
        }
        at += len;
        if at >= elems.end {
            break;
        }
    }
    Ok(())
}

/// The error for the non-finite `value` at flat element `flat` of `src`.
fn non_finite(ckpt: &Checkpoint, src: &Tensor, flat: u64, value: f32) -> Error {
    Error::NonFinite {
        file: ckpt.file_of(src).to_owned(),
        tensor: src.name.clone(),
        index: unravel(flat, &src.shape),
        value,
    }
}

/// Like [`gather`], for a BF16 or F16 tensor kept in its own dtype: the stored bytes of
/// logical elements `elems` (two per element) copied into `out` without decoding, NaN and
/// infinities refused all the same (exponent bits all ones). `false` when a part is stored in
/// another dtype, so the caller decodes instead.
pub(crate) fn gather_raw16(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    elems: std::ops::Range<u64>,
    out: &mut [u8],
    allow_non_finite: bool,
) -> Result<bool, Error> {
    let dtype = crate::plan::dense_dtype(t.ty);
    let exp_mask: u16 = match dtype {
        lowbit_dtype::Dtype::BF16 => 0x7f80,
        lowbit_dtype::Dtype::F16 => 0x7c00,
        _ => return Ok(false),
    };
    let stored = lowbit_checkpoint::StorageType::Dense(dtype);
    if t.parts.iter().any(|p| ckpt.tensor(&p.tensor).is_some_and(|s| s.ty != stored)) {
        return Ok(false);
    }
    let special = |h: &[u8]| u16::from_le_bytes([h[0], h[1]]) & exp_mask == exp_mask;
    for_each_run(ckpt, t, elems, |src, first, n, filled| {
        let dst = &mut out[filled * 2..(filled + n) * 2];
        ckpt.read_raw_at(src, first * 2, dst)?;
        let bad = dst.chunks_exact(2).fold(false, |bad, h| bad | special(h));
        if !allow_non_finite && bad {
            let i = dst.chunks_exact(2).position(special).unwrap_or(0) as u64;
            let mut v = [0f32; 1];
            ckpt.read_f32(src, first + i..first + i + 1, &mut v)?;
            return Err(non_finite(ckpt, src, first + i, v[0]));
        }
        Ok(())
    })?;
    Ok(true)
}

/// Reads logical elements `elems` of planned tensor `t` (its parts concatenated) into `out`,
/// refusing NaN and infinities unless `allow_non_finite`.
pub(crate) fn gather(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    elems: std::ops::Range<u64>,
    out: &mut [f32],
    scratch: &mut Vec<u8>,
    allow_non_finite: bool,
) -> Result<(), Error> {
    for_each_run(ckpt, t, elems, |src, first, n, filled| {
        let dst = &mut out[filled..filled + n];
        ckpt.read_f32_with(src, first..first + n as u64, dst, scratch)?;
        // A branch-free scan the compiler vectorises; the position is looked up on failure.
        let any_bad = dst.iter().fold(false, |bad, v| bad | !v.is_finite());
        if !allow_non_finite
            && any_bad
            && let Some(i) = dst.iter().position(|v| !v.is_finite())
        {
            return Err(non_finite(ckpt, src, first + i as u64, dst[i]));
        }
        Ok(())
    })
}

/// Quantizes rows `rows` of `t` into `out` (exactly their bytes), in parallel. When several
/// tasks fail, the error of the first in file order is returned, whatever the thread count.
fn quantize_chunk(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    rows: std::ops::Range<u64>,
    out: &mut [u8],
    allow_non_finite: bool,
) -> Result<(), Error> {
    let row_len = t.row_len();
    let row_bytes = t.ty.row_bytes(row_len).unwrap_or(0);
    let rows_per_task = (TASK_ELEMS / row_len.max(1)).max(1);
    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
    let task_bytes = (rows_per_task * row_bytes) as usize;
    let failures: Vec<(usize, Error)> = out
        .par_chunks_mut(task_bytes.max(1))
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf, scratch), (k, dst)| {
                let first = rows.start + k as u64 * rows_per_task;
                let n_rows = dst.len() as u64 / row_bytes.max(1);
                #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                buf.resize((n_rows * row_len) as usize, 0.0);
                let e0 = first * row_len;
                gather(ckpt, t, e0..e0 + n_rows * row_len, buf, scratch, allow_non_finite)?;
                // The plan sized `dst` for exactly these rows of this type.
                lowbit_quant::quantize(t.ty, buf, dst)
                    .map_err(|e| Error::Layout { tensor: t.name.clone(), reason: e.to_string() })
            },
        )
        .enumerate()
        .filter_map(|(k, r)| r.err().map(|e| (k, e)))
        .collect();
    match failures.into_iter().min_by_key(|(k, _)| *k) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn unravel(mut flat: u64, shape: &[u64]) -> Vec<u64> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    idx
}

/// Writes `plan` from `ckpt` as a GGUF file at `out`.
///
/// # Errors
/// Non-finite weights (unless allowed), read or write failures (the message names the file),
/// cancellation. On any error no file exists at `out`.
pub fn write_gguf(
    ckpt: &Checkpoint,
    plan: &Plan,
    recipe: &Recipe,
    out: &Path,
    opts: &Options<'_>,
) -> Result<Written, Error> {
    check_output(ckpt, out, &recipe.target, opts.force_extension)?;
    if opts.threads > MAX_THREADS {
        return Err(Error::TooManyThreads { threads: opts.threads, max: MAX_THREADS });
    }
    let kvs = metadata(plan, recipe, &opts.source_name);
    let layout = layout(plan, &kvs)?;
    let io = |e: std::io::Error| Error::Io { path: out.to_owned(), source: e };
    let mut tmp = AtomicFile::create(out).map_err(io)?;
    preallocate(tmp.file(), layout.header.len() as u64 + layout.data_len).map_err(io)?;

    let pool = crate::write::pool(opts.threads)?;
    let chunks = chunks(plan, opts.chunk_bytes);
    let total: u64 = plan.tensors.iter().map(PlannedTensor::numel).sum();
    let done = AtomicU64::new(0);
    let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));

    let file = tmp.file_mut();
    let write = move |rx: mpsc::Receiver<(Vec<u8>, u64)>| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        w.write_all(&layout.header)?;
        let mut written = 0u64;
        for (bytes, pad_to) in rx {
            w.write_all(&bytes)?;
            written += bytes.len() as u64;
            if pad_to > written {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "padding is below the alignment"
                )]
                w.write_all(&vec![0u8; (pad_to - written) as usize])?;
                written = pad_to;
            }
        }
        w.flush()?;
        Ok(())
    };
    let produce = |tx: &mpsc::SyncSender<(Vec<u8>, u64)>| -> Result<(), Error> {
        for c in &chunks {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let t = &plan.tensors[c.tensor];
            let info = &layout.tensors[c.tensor];
            let row_bytes = t.ty.row_bytes(t.row_len()).unwrap_or(0);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a chunk is at most `chunk_bytes`, or one row"
            )]
            let mut bytes = vec![0u8; ((c.rows.end - c.rows.start) * row_bytes) as usize];
            pool.install(|| {
                quantize_chunk(ckpt, t, c.rows.clone(), &mut bytes, opts.allow_non_finite)
            })?;
            // After a tensor's last chunk, pad to where the next tensor (or the end) starts.
            let last = c.rows.end >= t.n_rows();
            let pad_to = if last {
                layout.tensors.get(c.tensor + 1).map_or(layout.data_len, |next| next.offset)
            } else {
                info.offset + c.rows.end * row_bytes
            };
            if tx.send((bytes, pad_to)).is_err() {
                // The writer stopped: its error is reported below.
                return Ok(());
            }
            let n = done.fetch_add((c.rows.end - c.rows.start) * t.row_len(), Ordering::Relaxed);
            if let Some(p) = opts.progress {
                p(n + (c.rows.end - c.rows.start) * t.row_len(), total);
            }
        }
        Ok(())
    };
    pipeline(write, produce, io)?;
    // No fsync: like `cp` and `llama-quantize`, lowbit leaves flushing to the OS. The rename
    // below still guarantees that the output path never holds a partial file after an error,
    // a full disk or Ctrl-C; only a power cut right after the rename could leave data unwritten.
    let bytes = tmp.file().metadata().map_err(io)?.len();
    tmp.commit().map_err(io)?;
    Ok(Written { tensors: plan.tensors.len(), bytes })
}

/// Runs `produce` on this thread while `write` consumes what it sends on a second one, through
/// a channel of depth one, so memory holds about three messages whatever the output size. A
/// send fails only when the writer has stopped, and the producer then returns `Ok`: the
/// writer's I/O error is the one reported (through `io`), unless the producer failed first.
pub(crate) fn pipeline<M: Send>(
    write: impl FnOnce(mpsc::Receiver<M>) -> std::io::Result<()> + Send,
    produce: impl FnOnce(&mpsc::SyncSender<M>) -> Result<(), Error>,
    io: impl Fn(std::io::Error) -> Error,
) -> Result<(), Error> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<M>(1);
        let writer = scope.spawn(move || write(rx));
        let produced = produce(&tx);
        drop(tx);
        let wrote =
            writer.join().unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")));
        produced?;
        wrote.map_err(io)
    })
}

/// Reserves the whole output up front (every writer of large files uses it). On ext4 this makes
/// the writes that follow several times cheaper than growing a file page by page, and a full
/// disk shows up here, before any work, as `ENOSPC`. File systems without `fallocate` simply
/// skip it.
///
/// # Errors
/// `ENOSPC` and other failures of `fallocate`, except its absence.
pub fn preallocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The rayon pool a conversion runs its work on, `threads` workers.
///
/// # Errors
/// [`Error::Threads`] when the pool cannot be built.
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool, Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Threads { threads, message: e.to_string() })
}
