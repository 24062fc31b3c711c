//! `lowbit dequantize`: every layer decoded to BF16 or F32 safetensors under its logical name.
//!
//! The header is computed from the layers' shapes before any weight is read, then the data is
//! streamed layer by layer, a chunk of rows at a time, through [`AtomicFile`]: memory stays at
//! one chunk whatever the checkpoint size, and the output path never holds a partial file.
//! Layout of the output: `formats/dequantize-diff.md`.

use crate::cli::{DequantizeArgs, OutDtype};
use crate::output::{self, Usage};
use anyhow::Context;
use lowbit_checkpoint::{Checkpoint, Layer};
use lowbit_convert::AtomicFile;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Decoded values per chunk (16 MiB of `f32`).
pub(crate) const CHUNK_VALUES: u64 = 4 << 20;

impl OutDtype {
    fn name(self) -> &'static str {
        match self {
            OutDtype::Bf16 => "BF16",
            OutDtype::F32 => "F32",
        }
    }

    fn size(self) -> u64 {
        match self {
            OutDtype::Bf16 => 2,
            OutDtype::F32 => 4,
        }
    }
}

/// Runs `lowbit dequantize`.
pub(crate) fn run(args: &DequantizeArgs) -> anyhow::Result<()> {
    let ckpt = Checkpoint::open(&args.input)?;
    let layers = ckpt.layers()?;
    check_output(&ckpt, &args.output, args.force)?;
    let source = args
        .input
        .file_name()
        .map_or_else(|| args.input.display().to_string(), |n| n.to_string_lossy().into_owned());
    let header = header(&layers, args.dtype, &source)
        .with_context(|| format!("{}: cannot lay out the output", args.output.display()))?;
    let out = args.output.as_path();
    let io = |e: std::io::Error| anyhow::Error::new(e).context(out.display().to_string());
    let start = std::time::Instant::now();
    let mut file = AtomicFile::create(out).map_err(io)?;
    let total: u64 = layers.iter().map(|l| l.params() * args.dtype.size()).sum();
    lowbit_convert::preallocate(file.file(), header.len() as u64 + total).map_err(io)?;
    let mut data_bytes = 0u64;
    {
        let mut w = BufWriter::with_capacity(1 << 20, file.file_mut());
        w.write_all(&header).map_err(io)?;
        let mut values = Vec::new();
        let mut bytes = Vec::new();
        for layer in &layers {
            if layer.params() == 0 {
                continue;
            }
            // A zstd pack's damaged frame is reported here, naming its tensor.
            ckpt.prepare_layer(layer)?;
            let (rows, len) = (layer.n_rows(), layer.row_len());
            let chunk = (CHUNK_VALUES / len.max(1)).max(1);
            let mut row = 0;
            while row < rows {
                let end = row.saturating_add(chunk).min(rows);
                #[expect(clippy::cast_possible_truncation, reason = "a chunk fits in memory")]
                values.resize(((end - row) * len) as usize, 0.0f32);
                decode_parallel(&ckpt, layer, row, &mut values)?;
                encode(&values, args.dtype, &mut bytes);
                w.write_all(&bytes).map_err(io)?;
                data_bytes += bytes.len() as u64;
                row = end;
            }
        }
        w.flush().map_err(io)?;
    }
    file.commit().map_err(io)?;
    output::note(&format!(
        "wrote {} ({} tensors, {:.1} MB of {}) in {:.2} s",
        out.display(),
        layers.len(),
        (header.len() as u64 + data_bytes) as f64 / 1e6,
        args.dtype.name(),
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Rows of `layer` from `first` on, decoded into `values` (whole rows) by parallel tasks; when
/// several fail, the first in row order decides the error.
fn decode_parallel(
    ckpt: &Checkpoint,
    layer: &Layer,
    first: u64,
    values: &mut [f32],
) -> Result<(), lowbit_checkpoint::Error> {
    use rayon::prelude::*;
    let len = layer.row_len().max(1);
    let per_task = ((1u64 << 16) / len).max(1);
    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
    let task = (per_task * len) as usize;
    let results: Vec<Result<(), lowbit_checkpoint::Error>> = values
        .par_chunks_mut(task)
        .enumerate()
        .map(|(i, v)| {
            let r0 = first + i as u64 * per_task;
            ckpt.read_layer_f32(layer, r0..r0 + v.len() as u64 / len, v)
        })
        .collect();
    results.into_iter().collect()
}

/// Values as little-endian BF16 (ggml's rounding: nearest even, NaN kept quiet) or F32.
fn encode(values: &[f32], dtype: OutDtype, out: &mut Vec<u8>) {
    use rayon::prelude::*;
    const TASK: usize = 1 << 16;
    out.clear();
    match dtype {
        OutDtype::Bf16 => {
            out.resize(values.len() * 2, 0);
            out.par_chunks_mut(2 * TASK).zip(values.par_chunks(TASK)).for_each(|(o, v)| {
                for (b, &v) in o.chunks_exact_mut(2).zip(v) {
                    b.copy_from_slice(&lowbit_dtype::f16::fp32_to_bf16(v).to_le_bytes());
                }
            });
        }
        OutDtype::F32 => {
            out.resize(values.len() * 4, 0);
            out.par_chunks_mut(4 * TASK).zip(values.par_chunks(TASK)).for_each(|(o, v)| {
                for (b, v) in o.chunks_exact_mut(4).zip(v) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            });
        }
    }
}

/// The safetensors header (length prefix included, padded with spaces to 8 bytes): tensors in
/// layer order, data back to back.
fn header(layers: &[Layer], dtype: OutDtype, source: &str) -> anyhow::Result<Vec<u8>> {
    use serde_json::{Value, json};
    let meta = json!({
        "format": "pt",
        "lowbit.version": env!("CARGO_PKG_VERSION"),
        "lowbit.source": source,
        "lowbit.dequantized": dtype.name(),
    });
    let mut text = format!("{{\"__metadata__\":{meta}");
    let mut offset = 0u64;
    for l in layers {
        let bytes = l
            .shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .and_then(|b| Some((b, offset.checked_add(b)?)));
        let Some((_, end)) = bytes else {
            anyhow::bail!("tensor `{}` of shape {:?} overflows the file size", l.name, l.shape);
        };
        let entry = json!({"dtype": dtype.name(), "shape": l.shape, "data_offsets": [offset, end]});
        text.push(',');
        text.push_str(&Value::String(l.name.clone()).to_string());
        text.push(':');
        text.push_str(&entry.to_string());
        offset = end;
    }
    text.push('}');
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

/// Refuses an output that is not `.safetensors` (unless `force`, exit code 2), whose folder is
/// missing, that is a directory, or that is one of the input's files (by device and inode).
fn check_output(ckpt: &Checkpoint, out: &Path, force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    if !force && !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        return Err(Usage(format!(
            "{shown}: dequantize writes safetensors; name the output *.safetensors or pass --force"
        ))
        .into());
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!("{shown}: the folder {} does not exist", dir.display());
    }
    let Ok(meta) = std::fs::metadata(out) else { return Ok(()) };
    if meta.is_dir() {
        anyhow::bail!("{shown}: is a directory");
    }
    let id = (meta.dev(), meta.ino());
    if let Some((input, _)) = ckpt.input_files().find(|(_, i)| *i == id) {
        anyhow::bail!(
            "{shown}: is the input file {}; dequantize writes a new file and never replaces its input",
            input.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{OutDtype, encode, header};
    use lowbit_checkpoint::Layer;

    #[test]
    fn header_is_padded_and_tiles() {
        let l = |name: &str, shape: Vec<u64>| Layer {
            name: name.into(),
            shape,
            scheme: None,
            stored: vec![name.into()],
        };
        let h = header(&[l("a\"b", vec![2, 3]), l("c", vec![])], OutDtype::Bf16, "x").unwrap();
        let n = u64::from_le_bytes(h[..8].try_into().unwrap());
        assert_eq!(n as usize, h.len() - 8);
        assert_eq!(n % 8, 0);
        let j: serde_json::Value = serde_json::from_slice(&h[8..]).unwrap();
        assert_eq!(j["a\"b"]["data_offsets"], serde_json::json!([0, 12]));
        assert_eq!(j["c"]["data_offsets"], serde_json::json!([12, 14]));
        assert_eq!(j["__metadata__"]["lowbit.source"], "x");
        let huge = l("h", vec![u64::MAX, 2]);
        assert!(header(&[huge], OutDtype::F32, "x").is_err());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let mut out = Vec::new();
        // 1 + 2^-8 is halfway between two BF16 values: ties go to the even one (1.0).
        encode(&[1.0 + 1.0 / 256.0, -2.0], OutDtype::Bf16, &mut out);
        assert_eq!(out, [0x80, 0x3f, 0x00, 0xc0]);
    }
}
