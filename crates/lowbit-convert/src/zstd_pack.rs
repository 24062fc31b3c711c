//! `--compress zstd`: a packed safetensors output written as a zstd pack (`formats/zstd.md`),
//! the zstd seekable format with frame 0 holding the header and one frame per tensor, so that
//! `lowbit` reads any tensor without decompressing the others and plain `zstd -d` restores the
//! safetensors file byte for byte.
//!
//! The safetensors file is written first exactly as without `--compress` (`write_packed`), to
//! a temporary file beside the output (`.<name>.lowbit-<random>.partial`, locked while in use,
//! removed at the end, and by the next run for the same output if a run is killed), then
//! streamed into the pack through [`AtomicFile`]: frames are compressed in parallel on a rayon
//! pool, a batch of tensors at a time, each from 1 MiB positioned reads, and written in file
//! order, so the bytes do not depend on the thread count and memory stays at one batch of
//! compressed frames.

use crate::atomic::{AtomicFile, parent_dir};
use crate::{Error, Options, Plan, Recipe, Target, Written};
use lowbit_checkpoint::Checkpoint;
use lowbit_safetensors::pack::{MAX_FRAME_BYTES, PackError, SeekTable};
use lowbit_safetensors::{Header, MAX_HEADER_LEN};
use rayon::prelude::*;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;
use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};

/// The extension a pack's name ends in.
pub(crate) const EXTENSION: &str = "safetensors.zst";
/// Bytes read from the plain file per compression step.
const CHUNK: usize = 1 << 20;
/// A batch of frames compressed in parallel holds at most this many input bytes (or one frame).
const BATCH_BYTES: u64 = 128 << 20;

/// `--compress zstd[:LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zstd {
    /// zstd's compression level, 1 to 22.
    pub level: i32,
}

impl Zstd {
    /// The level `--compress zstd` uses, zstd's own default. Quantized codes gain from entropy
    /// coding, not from matches: on FLUX.1-dev-shaped int4 and ternary files, levels 1 to 15
    /// all land within 1 % of each other, level 10 takes 4 times as long as 3 for 0.3–0.7 %,
    /// and level 19 is larger than 15 (`cargo xtask bench-zstd --level N`).
    pub const DEFAULT_LEVEL: i32 = 3;

    /// Parses a `--compress` value: `zstd` or `zstd:LEVEL`.
    ///
    /// # Errors
    /// [`Error::Compress`] (a usage error) for another method or a level outside 1 to 22.
    pub fn parse(given: &str) -> Result<Zstd, Error> {
        let bad = |reason: &str| Error::Compress { given: given.to_owned(), reason: reason.into() };
        let (method, level) = match given.split_once(':') {
            Some((m, l)) => (m, Some(l)),
            None => (given, None),
        };
        if !method.eq_ignore_ascii_case("zstd") {
            return Err(bad("the one method is zstd (zstd or zstd:LEVEL)"));
        }
        let level = match level {
            None => Zstd::DEFAULT_LEVEL,
            Some(l) => match l.parse::<i32>() {
                Ok(l) if (1..=22).contains(&l) => l,
                _ => return Err(bad("LEVEL is a zstd level from 1 to 22")),
            },
        };
        Ok(Zstd { level })
    }
}

/// What [`write_zstd_pack`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PackWritten {
    /// Tensors, and the pack's size.
    pub written: Written,
    /// Size of the safetensors file the pack holds.
    pub raw_bytes: u64,
    /// Seconds spent compressing (the plain file's writing excluded).
    pub compress_seconds: f64,
}

/// Refuses, before any weight is read (and in a dry run), a pack that cannot be written: a
/// GGUF target, NF4's diffusers model folder (`folder`), a tensor too large for one frame.
///
/// # Errors
/// [`Error::Compress`] (usage) for the first two, [`Error::Pack`] for the last.
pub fn check_zstd(
    plan: &Plan,
    target: &Target,
    folder: bool,
    given: &str,
    out: &Path,
) -> Result<(), Error> {
    let refuse = |reason: String| Err(Error::Compress { given: given.to_owned(), reason });
    if let Target::Gguf { .. } = target {
        return refuse(format!(
            "zstd packs hold safetensors files, and the target {} writes GGUF",
            target.name()
        ));
    }
    if folder {
        return refuse(
            "a zstd pack is one file, and NF4 in diffusers names writes a diffusers model \
             folder; --names bfl writes one file"
                .into(),
        );
    }
    if let Some(t) = plan.tensors.iter().find(|t| t.bytes() > MAX_FRAME_BYTES) {
        let source = PackError::TensorTooLarge { tensor: t.name.clone(), bytes: t.bytes() };
        return Err(Error::Pack { path: out.to_owned(), source });
    }
    Ok(())
}

/// Compresses bytes `start..start + len` of `file` into one zstd frame that records its size
/// and a checksum of its content.
fn compress_frame(file: &File, start: u64, len: u64, level: i32) -> io::Result<Vec<u8>> {
    let mut enc = Encoder::new(level)?;
    enc.set_parameter(CParameter::ChecksumFlag(true))?;
    enc.set_parameter(CParameter::ContentSizeFlag(true))?;
    enc.set_pledged_src_size(Some(len))?;
    #[expect(clippy::cast_possible_truncation, reason = "at most CHUNK")]
    let mut input = vec![0u8; len.min(CHUNK as u64) as usize];
    let mut staging = vec![0u8; zstd::zstd_safe::CCtx::out_size()];
    let mut out = Vec::new();
    let mut done = 0u64;
    while done < len {
        #[expect(clippy::cast_possible_truncation, reason = "at most CHUNK")]
        let n = (len - done).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut input[..n], start + done)?;
        let mut inb = InBuffer::around(&input[..n]);
        while inb.pos() < n {
            let mut outb = OutBuffer::around(&mut staging[..]);
            enc.run(&mut inb, &mut outb)?;
            out.extend_from_slice(outb.as_slice());
        }
        done += n as u64;
    }
    loop {
        let mut outb = OutBuffer::around(&mut staging[..]);
        let left = enc.finish(&mut outb, true)?;
        out.extend_from_slice(outb.as_slice());
        if left == 0 {
            return Ok(out);
        }
    }
}

/// The header of the plain file [`stage_plain`] wrote, read with positioned reads; I/O errors
/// name `out`.
///
/// # Errors
/// Read failures, a header that does not parse.
pub(crate) fn staged_header(plain: &File, out: &Path) -> Result<Header, Error> {
    let io = |e: io::Error| Error::Io { path: out.to_owned(), source: e };
    let len = plain.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    plain.read_exact_at(&mut n, 0).map_err(io)?;
    let header_len = u64::from_le_bytes(n).min(MAX_HEADER_LEN).min(len.saturating_sub(8));
    // At most 100 MB; a length that did not fit would make the header check below fail.
    let mut prefix = vec![0u8; 8 + usize::try_from(header_len).unwrap_or(0)];
    plain.read_exact_at(&mut prefix, 0).map_err(io)?;
    // lowbit's own file, just written; checked all the same.
    Header::parse(&prefix, len).map_err(|e| io(io::Error::other(e)))
}

/// The frames of a safetensors file: the header, then each tensor in data order, as (start,
/// length, what it holds).
fn frames_of(plain: &File, out: &Path) -> Result<Vec<(u64, u64, String)>, Error> {
    let header = staged_header(plain, out)?;
    let mut frames = vec![(0, header.data_start, "the header".to_owned())];
    for t in header.tensors {
        let bytes = t.data.end - t.data.start;
        if bytes > MAX_FRAME_BYTES {
            let source = PackError::TensorTooLarge { tensor: t.name, bytes };
            return Err(Error::Pack { path: out.to_owned(), source });
        }
        frames.push((header.data_start + t.data.start, bytes, t.name));
    }
    Ok(frames)
}

/// Writes the conversion of `ckpt` by `plan` to `out` as a zstd pack (see the module doc).
///
/// # Errors
/// Everything [`crate::write_packed`] refuses, [`check_zstd`]'s refusals, I/O errors naming
/// `out`, [`Error::Cancelled`].
pub fn write_zstd_pack(
    ckpt: &Checkpoint,
    plan: &Plan,
    recipe: &Recipe,
    out: &Path,
    opts: &Options<'_>,
    zstd: Zstd,
) -> Result<PackWritten, Error> {
    crate::check_pack_output(ckpt, out, &recipe.target, opts.force_extension)?;
    let io = |e: io::Error| Error::Io { path: out.to_owned(), source: e };
    let (stage, written) = stage_plain(ckpt, plan, recipe, out, opts)?;
    let plain = File::open(stage.path()).map_err(io)?;
    lock(&plain);
    let start = Instant::now();
    let frames = frames_of(&plain, out)?;
    let raw_bytes = written.bytes;
    let pool = crate::write::pool(opts.threads)?;
    let mut tmp = AtomicFile::create(out).map_err(io)?;
    let mut sizes = Vec::with_capacity(frames.len());
    let mut pack_bytes = 0u64;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.file_mut());
        let mut first = 0;
        let mut done = 0u64;
        while first < frames.len() {
            if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
            let mut end = first + 1;
            let mut batch = frames[first].1;
            while end < frames.len() && batch + frames[end].1 <= BATCH_BYTES {
                batch += frames[end].1;
                end += 1;
            }
            let compressed: Vec<io::Result<Vec<u8>>> = pool.install(|| {
                frames[first..end]
                    .par_iter()
                    .map(|&(at, len, _)| compress_frame(&plain, at, len, zstd.level))
                    .collect()
            });
            for (frame, (_, len, what)) in compressed.into_iter().zip(&frames[first..end]) {
                let frame = frame.map_err(io)?;
                let c = u32::try_from(frame.len()).map_err(|_| Error::Pack {
                    path: out.to_owned(),
                    source: PackError::TensorTooLarge { tensor: what.clone(), bytes: *len },
                })?;
                // Checked against MAX_FRAME_BYTES in `frames_of`.
                #[expect(clippy::cast_possible_truncation, reason = "at most u32::MAX")]
                sizes.push((c, *len as u32));
                w.write_all(&frame).map_err(io)?;
                pack_bytes += frame.len() as u64;
                done += len;
            }
            if let Some(p) = opts.progress {
                p(done, raw_bytes);
            }
            first = end;
        }
        let table = SeekTable::encode(&sizes)
            .map_err(|source| Error::Pack { path: out.to_owned(), source })?;
        w.write_all(&table).map_err(io)?;
        pack_bytes += table.len() as u64;
        w.flush().map_err(io)?;
    }
    tmp.commit().map_err(io)?;
    drop(stage);
    Ok(PackWritten {
        written: Written { tensors: written.tensors, bytes: pack_bytes },
        raw_bytes,
        compress_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes the plain safetensors file of a conversion whose output `out` is made from it (a
/// zstd pack, a runtime's export) to a temporary file beside `out`: a leftover of this
/// output's, which the next run removes, locked while this run uses it. Dropping the returned
/// file removes it.
///
/// # Errors
/// As [`crate::write_packed`], with I/O errors naming `out`, never the temporary file.
pub(crate) fn stage_plain(
    ckpt: &Checkpoint,
    plan: &Plan,
    recipe: &Recipe,
    out: &Path,
    opts: &Options<'_>,
) -> Result<(tempfile::NamedTempFile, Written), Error> {
    let io = |e: io::Error| Error::Io { path: out.to_owned(), source: e };
    let name = out.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    // A killed run's plain file may be as large as this run's: gone before this one is written.
    crate::atomic::remove_stale(parent_dir(out), &name).map_err(io)?;
    // `write_packed` renames its own file over `stage`'s name; dropping `stage` removes
    // whatever file then has the name.
    let stage = tempfile::Builder::new()
        .prefix(&format!(".{name}.lowbit-"))
        .suffix(".partial")
        .tempfile_in(parent_dir(out))
        .map_err(|e| io(io::Error::from(e.kind())))?;
    lock(stage.as_file());
    let plain_opts = Options {
        threads: opts.threads,
        allow_non_finite: opts.allow_non_finite,
        cancel: opts.cancel,
        progress: opts.progress,
        source_name: opts.source_name.clone(),
        chunk_bytes: opts.chunk_bytes,
        force_extension: true,
        svdq: opts.svdq,
    };
    let written = crate::write_packed(ckpt, plan, recipe, stage.path(), &plain_opts).map_err(
        |e| match e {
            Error::Io { source, .. } => Error::Io { path: out.to_owned(), source },
            e => e,
        },
    )?;
    Ok((stage, written))
}

/// Takes an exclusive `flock` on a temporary file, so that a concurrent run's cleanup of dead
/// runs' leftovers keeps it; where locks are not supported, goes on without.
pub(crate) fn lock(f: &File) {
    let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive);
}
